package deadletter

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/ids"
	"github.com/hookline/hookline/pkg/telemetry"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

const (
	// pollInterval is how often the runner looks for running replays that
	// no replica is working on.
	pollInterval = time.Second
	// maxActive bounds the replays one replica works on at once.
	maxActive = 8
	// itemBatch is how many items are read at a time; the replay's state is
	// checked before each item is sent.
	itemBatch = 100
	// publishTimeout bounds waiting for JetStream's publish ack.
	publishTimeout = 10 * time.Second
)

// errNotRunning stops work on a replay that was cancelled or finished.
var errNotRunning = errors.New("replay is not running")

// replayRef names a replay to work on.
type replayRef struct {
	id     string
	tenant string
	rate   int
}

// runner sends the items of running replays. Every replica runs one; a
// session advisory lock per replay keeps two replicas from working on the
// same replay, and the per-item transaction keeps an item from being sent
// twice even if they did.
type runner struct {
	s    *service
	wake chan struct{}
	poll time.Duration

	mu     sync.Mutex
	active map[string]bool
}

func newRunner(s *service) *runner {
	return &runner{s: s, wake: make(chan struct{}, 1), poll: pollInterval, active: map[string]bool{}}
}

// wakeUp makes the runner look for work now.
func (r *runner) wakeUp() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run works on running replays until ctx ends, then waits for the replays in
// progress to stop (each stops after its current item).
func (r *runner) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(r.poll)
	defer t.Stop()
	for {
		if err := r.claim(ctx, &wg); err != nil && ctx.Err() == nil {
			r.s.log.Warn("look for running replays", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
	}
}

// claim starts work on running replays this replica is not yet working on.
func (r *runner) claim(ctx context.Context, wg *sync.WaitGroup) error {
	rows, err := r.s.pool.Query(ctx, `
SELECT id, tenant_id, rate_per_second FROM replays
 WHERE state = 'running' ORDER BY created_at, id LIMIT 100`)
	if err != nil {
		return fmt.Errorf("list running replays: %w", err)
	}
	reps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (replayRef, error) {
		var rep replayRef
		err := row.Scan(&rep.id, &rep.tenant, &rep.rate)
		return rep, err
	})
	if err != nil {
		return fmt.Errorf("list running replays: %w", err)
	}
	for _, rep := range reps {
		r.mu.Lock()
		if r.active[rep.id] || len(r.active) >= maxActive {
			r.mu.Unlock()
			continue
		}
		r.active[rep.id] = true
		r.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				r.mu.Lock()
				delete(r.active, rep.id)
				r.mu.Unlock()
			}()
			if err := r.own(ctx, rep); err != nil && ctx.Err() == nil {
				r.s.log.Warn("replay", "replay_id", rep.id, "tenant_id", rep.tenant, "err", err)
			}
		}()
	}
	return nil
}

// own works on rep while holding its advisory lock; it returns at once when
// another replica holds the lock.
func (r *runner) own(ctx context.Context, rep replayRef) error {
	conn, err := r.s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()
	key := lockKey(rep.id)
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&locked); err != nil {
		return fmt.Errorf("lock replay: %w", err)
	}
	if !locked {
		return nil
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
			// The lock goes with the session; do not reuse it.
			_ = conn.Conn().Close(uctx)
		}
	}()
	return r.process(ctx, rep)
}

func lockKey(replayID string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("hookline.replay:" + replayID))
	return int64(h.Sum64()) //nolint:gosec // any 64 bits will do as a lock key
}

// process sends rep's unsent items at its rate, then marks it done. It
// returns nil when the replay is finished or cancelled.
func (r *runner) process(ctx context.Context, rep replayRef) error {
	interval := time.Second / time.Duration(max(rep.rate, 1))
	next := time.Now()
	after := "" // the last item this call handled
	for {
		rows, err := r.s.pool.Query(ctx, nextItemsSQL, rep.id, itemBatch, after)
		if err != nil {
			return fmt.Errorf("list items of replay: %w", err)
		}
		items, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("list items of replay: %w", err)
		}
		if len(items) == 0 && after != "" {
			// Every item up to after was handled by this call; look once
			// more from the first, so that nothing is left behind.
			after = ""
			continue
		}
		if len(items) == 0 {
			if _, err := r.s.pool.Exec(ctx, `
UPDATE replays SET state = 'done', finished_at = now()
 WHERE id = $1 AND state = 'running'
   AND NOT EXISTS (SELECT 1 FROM replay_items WHERE replay_id = $1 AND done_at IS NULL)`, rep.id); err != nil {
				return fmt.Errorf("finish replay: %w", err)
			}
			return nil
		}
		for _, dl := range items {
			if wait := time.Until(next); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
				}
			}
			next = next.Add(interval)
			if now := time.Now(); next.Before(now) {
				next = now // no burst after a stall
			}
			err := r.send(ctx, rep, dl)
			if errors.Is(err, errNotRunning) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("send dead letter %s: %w", dl, err)
			}
			after = dl
		}
	}
}

// nextItemsSQL lists up to $2 items of replay $1 not yet handled, after
// dead letter $3 ("" for from the first), while the replay runs. The
// cursor keeps each batch a range of replay_items' primary key (replay_id,
// dead_letter_id): without it every batch read again every item handled
// before it (done_at is not in the key), so a replay of n dead letters
// read n²/200 rows (a million: 5 billion; TestReplayItemsReadOnlyTheirBatch).
const nextItemsSQL = `
SELECT ri.dead_letter_id FROM replay_items ri JOIN replays rp ON rp.id = ri.replay_id
 WHERE ri.replay_id = $1 AND ri.dead_letter_id > $3 AND ri.done_at IS NULL AND rp.state = 'running'
 ORDER BY ri.dead_letter_id LIMIT $2`

// send replays one item of rep in one transaction. It holds the replay's row
// (shared, so a cancel waits for it), the item's row and the dead letter's
// row, so that concurrent senders of the same item or of the same dead
// letter in another replay cannot both send it.
//
// A dead letter sent again gets a "replay dead letter" span, the root of a
// new trace linked to the trace that stored the dead letter; the delivery
// carries its context, so the dispatcher's attempt joins that trace.
func (r *runner) send(ctx context.Context, rep replayRef, dlID string) error {
	s := r.s
	var (
		result string // "sent" or "skipped" once handled
		span   trace.Span
	)
	defer func() {
		if span != nil {
			span.End()
		}
	}()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		ctx := ctx // becomes the replay span's context once the item is sent
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM replays WHERE id = $1 FOR SHARE`, rep.id).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && state != "running") {
			return errNotRunning
		}
		if err != nil {
			return fmt.Errorf("lock replay: %w", err)
		}
		var done *time.Time
		if err := tx.QueryRow(ctx, `
SELECT done_at FROM replay_items WHERE replay_id = $1 AND dead_letter_id = $2 FOR UPDATE`, rep.id, dlID).Scan(&done); err != nil {
			return fmt.Errorf("lock replay item: %w", err)
		}
		if done != nil {
			return nil // another sender got here first
		}

		var (
			eventID, endpointID, eventType string
			orderingKey, data, traceparent *string
			acceptedAt                     *time.Time
			discarded                      bool
		)
		err = tx.QueryRow(ctx, `
SELECT d.event_id, d.endpoint_id, d.event_type, d.ordering_key, d.discarded_at IS NOT NULL, e.data::text, e.accepted_at,
       d.traceparent
  FROM dead_letters d LEFT JOIN events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id
 WHERE d.tenant_id = $1 AND d.id = $2
   FOR UPDATE OF d`, rep.tenant, dlID).Scan(&eventID, &endpointID, &eventType, &orderingKey, &discarded, &data, &acceptedAt, &traceparent)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("lock dead letter: %w", err)
		}
		if errors.Is(err, pgx.ErrNoRows) || discarded || data == nil {
			s.log.InfoContext(ctx, "skipping dead letter in replay", "replay_id", rep.id, "dead_letter_id", dlID,
				"discarded", discarded, "event_missing", err == nil && data == nil)
			result = "skipped"
			return markDone(ctx, tx, rep.id, dlID, nil)
		}

		// A replay delivery of this dead letter still on its way counts:
		// sending another would deliver the event twice.
		var pending string
		err = tx.QueryRow(ctx, `
SELECT ri.delivery_id FROM replay_items ri JOIN deliveries dv ON dv.id = ri.delivery_id
 WHERE ri.dead_letter_id = $1 AND ri.replay_id <> $2 AND dv.status = 'pending'
 LIMIT 1`, dlID, rep.id).Scan(&pending)
		if err == nil {
			result = "skipped"
			return markDone(ctx, tx, rep.id, dlID, &pending)
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("look for pending replay deliveries: %w", err)
		}

		// The delivery id is derived from the replay and the dead letter, so
		// a send repeated after a crash between the publish and the commit
		// has the same id and Nats-Msg-Id: JetStream drops the repeat within
		// its duplicate window, and after it the attempt log's row for this
		// id shows the delivery is already on its way.
		deliveryID := replayDeliveryID(rep, dlID)
		var known bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM deliveries WHERE id = $1)`, deliveryID).Scan(&known); err != nil {
			return fmt.Errorf("look up replay delivery: %w", err)
		}
		if known {
			result = "skipped" // sent before a crash; counted then
			return markDone(ctx, tx, rep.id, dlID, &deliveryID)
		}

		opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				attribute.String("hookline.tenant_id", rep.tenant),
				attribute.String("hookline.replay_id", rep.id),
				attribute.String("hookline.dead_letter_id", dlID),
				attribute.String("hookline.event_id", eventID),
				attribute.String("hookline.endpoint_id", endpointID),
				attribute.String("hookline.delivery_id", deliveryID),
			)}
		if traceparent != nil {
			opts = append(opts, telemetry.LinkTo(*traceparent)...)
		}
		ctx, span = s.tracer.Start(ctx, "replay dead letter", opts...)

		now := apitime.Now()
		d := &hooklinev1.Delivery{
			Id:           deliveryID,
			TenantId:     rep.tenant,
			EventId:      eventID,
			EndpointId:   endpointID,
			EventType:    eventType,
			Data:         []byte(*data),
			Attempts:     0,
			CreatedAt:    timestamppb.New(now),
			ReplayId:     rep.id,
			DeadLetterId: dlID,
		}
		if orderingKey != nil {
			d.OrderingKey = *orderingKey
		}
		if acceptedAt != nil {
			d.AcceptedAt = timestamppb.New(*acceptedAt)
		}
		if _, err := tx.Exec(ctx, `
INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, replay_id, created_at, updated_at)
VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, $6)
ON CONFLICT (id) DO NOTHING`, d.Id, d.TenantId, d.EventId, d.EndpointId, d.ReplayId, now); err != nil {
			return fmt.Errorf("insert delivery: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE dead_letters SET replays = replays + 1 WHERE id = $1`, dlID); err != nil {
			return fmt.Errorf("count replay: %w", err)
		}
		if err := markDone(ctx, tx, rep.id, dlID, &d.Id); err != nil {
			return err
		}
		// Publish last, just before the commit: a failed publish rolls the
		// item back, to be sent again.
		if err := s.publishDelivery(ctx, d); err != nil {
			return err
		}
		s.log.DebugContext(ctx, "replayed dead letter", "replay_id", rep.id, "dead_letter_id", dlID, "delivery_id", d.Id,
			"event_id", eventID, "endpoint_id", endpointID, "tenant_id", rep.tenant)
		result = "sent"
		return nil
	})
	if err != nil {
		if span != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "replay dead letter")
		}
		return err
	}
	if result != "" {
		s.metrics.ReplayItems.WithLabelValues(result).Inc()
	}
	return nil
}

// replayDeliveryID is the id of the delivery that replay rep queues for dead
// letter dlID: a function of both (the dl_ prefix keeps it apart from any
// first delivery's id, whose last input is an ep_ id).
func replayDeliveryID(rep replayRef, dlID string) string {
	return ids.DeliveryFor(rep.tenant, rep.id, dlID)
}

// markDone records that an item was handled (sent when deliveryID is set).
func markDone(ctx context.Context, tx pgx.Tx, replayID, dlID string, deliveryID *string) error {
	if _, err := tx.Exec(ctx, `
UPDATE replay_items SET delivery_id = $3, done_at = now() WHERE replay_id = $1 AND dead_letter_id = $2`,
		replayID, dlID, deliveryID); err != nil {
		return fmt.Errorf("mark replay item: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE replays SET replayed = replayed + 1 WHERE id = $1`, replayID); err != nil {
		return fmt.Errorf("count replayed: %w", err)
	}
	return nil
}

// publishDelivery queues d for the dispatcher and waits for the ack.
func (s *service) publishDelivery(ctx context.Context, d *hooklinev1.Delivery) error {
	b, err := proto.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delivery: %w", err)
	}
	msg := &nats.Msg{
		Subject: bus.DeliverySubject(d.TenantId, d.EndpointId, d.OrderingKey),
		Data:    b,
		Header:  nats.Header{},
	}
	msg.Header.Set(bus.HeaderMsgID, bus.DeliveryMsgID(d.Id, 0))
	if d.OrderingKey != "" {
		msg.Header.Set(bus.HeaderOrderingKey, d.OrderingKey)
	}
	telemetry.Inject(ctx, msg.Header)
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if _, err := s.js.PublishMsg(pctx, msg); err != nil {
		return fmt.Errorf("publish delivery %s: %w", d.Id, err)
	}
	return nil
}
