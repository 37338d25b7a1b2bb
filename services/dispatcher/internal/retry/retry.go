// Package retry parks deliveries that wait for a later attempt in the
// delivery_retries table and republishes them when they are due. A wait of
// hours thus holds no JetStream ack slot and survives restarts. Every
// dispatcher replica runs a [Scheduler]; FOR UPDATE SKIP LOCKED lets them
// share the table without handing a row out twice.
//
// A row waits either for a time (a retry: published at due_at) or for its
// endpoint's circuit breaker (circuit_hold: the circuit is open). A held row's
// due_at is the latest it may wait, its retry horizon; before that the
// schedulers release one held row of an endpoint as the probe when its
// circuit may be probed, and all of them once the circuit closed or the
// endpoint was disabled or deleted ([Scheduler.Sweep]). An endpoint that
// stays down thus costs one row per delivery, however many probes fail.
package retry

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/store"
	"github.com/hookline/hookline/pkg/telemetry"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// Execer runs a statement; *pgxpool.Pool implements it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Park stores d, whose Attempts already counts the attempt just made, to be
// published again at due. Parking the same delivery again replaces the row.
// The trace context of ctx is kept: the republished delivery starts a new
// trace linked to it.
func Park(ctx context.Context, db Execer, d *hooklinev1.Delivery, due time.Time) error {
	b, err := proto.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delivery %s: %w", d.GetId(), err)
	}
	_, err = db.Exec(ctx, parkSQL, d.GetId(), d.GetTenantId(), d.GetEndpointId(), due, b, telemetry.Traceparent(ctx), false)
	if err != nil {
		return fmt.Errorf("park delivery %s: %w", d.GetId(), err)
	}
	return nil
}

const parkSQL = `
INSERT INTO delivery_retries (delivery_id, tenant_id, endpoint_id, due_at, payload, traceparent, circuit_hold)
VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), $7)
ON CONFLICT (delivery_id) DO UPDATE
SET tenant_id = EXCLUDED.tenant_id, endpoint_id = EXCLUDED.endpoint_id,
    due_at = EXCLUDED.due_at, payload = EXCLUDED.payload, traceparent = EXCLUDED.traceparent,
    circuit_hold = EXCLUDED.circuit_hold`

// Parker parks deliveries like [Park], group-committing the parks of
// concurrent attempts (one round trip and one commit for all of them): an
// endpoint failing everything costs one commit per batch, not per delivery.
type Parker struct {
	group *store.Group
}

// NewParker returns a Parker writing through db.
func NewParker(db store.BatchSender) *Parker {
	return &Parker{group: store.NewGroup(db, 2, 500)}
}

// Park is [Park] through the group.
func (p *Parker) Park(ctx context.Context, d *hooklinev1.Delivery, due time.Time) error {
	return p.park(ctx, d, due, false)
}

// Hold stores d to wait for its endpoint's circuit breaker: released when
// the circuit closes or may be probed (see [Scheduler.Sweep]), and
// published at latest whatever the circuit, to be dead-lettered as expired
// if it still holds it.
func (p *Parker) Hold(ctx context.Context, d *hooklinev1.Delivery, latest time.Time) error {
	return p.park(ctx, d, latest, true)
}

func (p *Parker) park(ctx context.Context, d *hooklinev1.Delivery, due time.Time, circuit bool) error {
	b, err := proto.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delivery %s: %w", d.GetId(), err)
	}
	batch := &pgx.Batch{}
	batch.Queue(parkSQL, d.GetId(), d.GetTenantId(), d.GetEndpointId(), due, b, telemetry.Traceparent(ctx), circuit)
	if err := p.group.Do(ctx, batch, func(br pgx.BatchResults) error {
		_, err := br.Exec()
		return err
	}); err != nil {
		return fmt.Errorf("park delivery %s: %w", d.GetId(), err)
	}
	return nil
}

// MsgID is the Nats-Msg-Id of parked delivery d republished for due. A
// delivery held by an open circuit is parked again with the same attempts,
// so the due time is part of the id: the same row republished twice (a crash
// before commit) is a duplicate, two different holds are not.
func MsgID(d *hooklinev1.Delivery, due time.Time) string {
	return bus.DeliveryMsgID(d.GetId(), d.GetAttempts()) + "@" + strconv.FormatInt(due.UnixMicro(), 10)
}

// Beginner starts transactions; *pgxpool.Pool implements it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Scheduler republishes parked deliveries when they are due.
type Scheduler struct {
	db       Beginner
	js       jetstream.JetStream
	log      *slog.Logger
	tracer   trace.Tracer
	Interval time.Duration
	Batch    int
	// Hold, when set, tells a due delivery that would only be held again
	// without an attempt (its endpoint's circuit is open) and the latest
	// time it may be held: its row then becomes a circuit hold in place,
	// instead of being republished, consumed and parked again. It must
	// answer false whenever the dispatcher could do anything else with the
	// delivery (attempt it, claim the probe, dead-letter it as expired).
	Hold func(d *hooklinev1.Delivery, now time.Time) (latest time.Time, held bool)
	// Gate, when set, says what [Scheduler.Sweep] does with the deliveries
	// held for an endpoint's circuit, and the creation time before which a
	// held delivery is past its retry horizon (zero: unknown). Without it,
	// Sweep does nothing.
	Gate func(ctx context.Context, endpointID string, now time.Time) (Gate, time.Time)
	// ProbeGap is how long after releasing an endpoint's probe this
	// scheduler waits before it releases another, while the circuit is
	// still due a probe (the first may not have been claimed yet).
	ProbeGap time.Duration
	// ReleaseBatch is the most held rows of one endpoint Sweep releases at
	// once; the next sweep releases more.
	ReleaseBatch int

	probed map[string]time.Time // endpoint → when this scheduler released its probe
}

// NewScheduler returns a Scheduler polling every 500 ms, 200 rows at a time.
func NewScheduler(db Beginner, js jetstream.JetStream, log *slog.Logger) *Scheduler {
	return &Scheduler{db: db, js: js, log: log, Interval: 500 * time.Millisecond, Batch: 200,
		ProbeGap: 5 * time.Second, ReleaseBatch: 5000, probed: map[string]time.Time{},
		tracer: otel.Tracer("github.com/hookline/hookline/services/dispatcher")}
}

// Run polls until ctx ends. A tick in progress finishes first.
func (s *Scheduler) Run(ctx context.Context) {
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.Gate != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			if err := s.Sweep(sctx); err != nil {
				s.log.Warn("release deliveries held for circuits", "err", err)
			}
			cancel()
		}
		for {
			// The tick's own context: stopping must not abandon a
			// transaction between publish and commit.
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			n, err := s.Tick(tctx)
			cancel()
			if err != nil {
				s.log.Warn("republish due retries", "err", err)
				break
			}
			if n < s.Batch || ctx.Err() != nil {
				break
			}
		}
	}
}

// Tick republishes up to Batch due deliveries and removes their rows, or
// moves the rows of deliveries [Scheduler.Hold] holds to when they are due
// again. It returns how many rows it handled. A crash between publish and commit
// republishes them again, and the stream's duplicate window drops the copies.
func (s *Scheduler) Tick(ctx context.Context) (int, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rows, err := tx.Query(ctx, `
SELECT delivery_id, payload, due_at, coalesce(traceparent, '') FROM delivery_retries
WHERE due_at <= now()
ORDER BY due_at
LIMIT $1
FOR UPDATE SKIP LOCKED`, s.Batch)
	if err != nil {
		return 0, fmt.Errorf("select due retries: %w", err)
	}
	var (
		idsDone    []string
		msgs       []*nats.Msg
		spans      []trace.Span
		heldIDs    []string
		heldUntils []time.Time
	)
	now := time.Now()
	defer func() {
		for _, sp := range spans {
			sp.End()
		}
	}()
	for rows.Next() {
		var (
			id          string
			payload     []byte
			due         time.Time
			traceparent string
		)
		if err := rows.Scan(&id, &payload, &due, &traceparent); err != nil {
			rows.Close()
			return 0, fmt.Errorf("scan due retry: %w", err)
		}
		d := &hooklinev1.Delivery{}
		if err := proto.Unmarshal(payload, d); err != nil {
			s.log.Error("undecodable parked delivery, dropped", "delivery_id", id, "err", err)
			idsDone = append(idsDone, id)
			continue
		}
		if s.Hold != nil {
			if until, held := s.Hold(d, now); held && until.After(now) {
				heldIDs = append(heldIDs, id)
				heldUntils = append(heldUntils, until)
				continue
			}
		}
		idsDone = append(idsDone, id)
		m := bus.NewMsg(bus.DeliverySubject(d.GetTenantId(), d.GetEndpointId(), d.GetOrderingKey()), MsgID(d, due), payload)
		spans = append(spans, s.traceRelease(ctx, m, d, traceparent))
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read due retries: %w", err)
	}
	if len(idsDone) == 0 && len(heldIDs) == 0 {
		return 0, nil
	}
	if len(heldIDs) > 0 {
		if _, err := tx.Exec(ctx, `
UPDATE delivery_retries r SET due_at = h.due_at, circuit_hold = true
FROM unnest($1::text[], $2::timestamptz[]) AS h(delivery_id, due_at)
WHERE r.delivery_id = h.delivery_id`, heldIDs, heldUntils); err != nil {
			return 0, fmt.Errorf("hold retries of open circuits: %w", err)
		}
	}
	if len(msgs) > 0 {
		if err := bus.PublishAll(ctx, s.js, msgs...); err != nil {
			return 0, err
		}
	}
	if len(idsDone) > 0 {
		if _, err := tx.Exec(ctx, `DELETE FROM delivery_retries WHERE delivery_id = ANY($1)`, idsDone); err != nil {
			return 0, fmt.Errorf("delete republished retries: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit republished retries: %w", err)
	}
	return len(msgs) + len(heldIDs), nil
}

// traceRelease starts the span of publishing m, parked delivery d, and puts
// its context in m's headers. A delivery released perhaps hours after its
// trace ended starts a trace of its own, linked to the one it was parked in.
func (s *Scheduler) traceRelease(ctx context.Context, m *nats.Msg, d *hooklinev1.Delivery, traceparent string) trace.Span {
	opts := append(telemetry.LinkTo(traceparent), trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("hookline.delivery_id", d.GetId()), attribute.String("hookline.endpoint_id", d.GetEndpointId()),
			attribute.String("hookline.event_id", d.GetEventId()), attribute.Int("hookline.attempt", int(d.GetAttempts())+1)))
	sctx, span := s.tracer.Start(ctx, "republish retry", opts...)
	telemetry.Inject(sctx, m.Header)
	return span
}
