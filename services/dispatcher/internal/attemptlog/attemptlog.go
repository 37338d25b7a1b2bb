// Package attemptlog writes attempt outcomes from HOOKLINE_ATTEMPTS to the
// attempts table and the deliveries' status, in batches: one transaction per
// fetch of up to 500 messages (or what arrived within 100 ms), acknowledged
// only after it commits. When PostgreSQL is unreachable the batch is NAKed
// with a delay and comes back: an outage delays the log and loses nothing.
//
// The attempts table is partitioned by UTC day on started_at. The writer
// creates each day's partition a few days ahead and drops the partitions
// older than the retention (a DROP, not a DELETE); see [EnsurePartitions] and
// [DropExpired].
//
// Because the partition key must be part of the primary key, the key
// (tenant_id, event_id, endpoint_id, delivery_id, attempt, started_at) does
// not stop the same attempt from being recorded twice with two start times
// (a dispatcher that died after publishing an outcome repeats the attempt).
// [Store] therefore upserts the deliveries first, which locks each
// delivery's row until commit, and then inserts only the attempts not
// already recorded for that delivery: two writers holding the same outcome
// are serialised by that row lock.
//
// The writer also knows every outcome, so it tracks per endpoint since when
// it has failed without a success (table endpoint_health) and disables an
// endpoint that has failed continuously for longer than
// [Writer.AutoDisableAfter].
package attemptlog

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/metrics"
	"github.com/hookline/hookline/pkg/telemetry"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// Beginner starts transactions; *pgxpool.Pool implements it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// DB is what the writer needs of the database; *pgxpool.Pool implements it.
type DB interface {
	Beginner
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Fetcher fetches batches; a jetstream.Consumer implements it.
type Fetcher interface {
	Fetch(batch int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error)
}

// Writer moves outcomes from the consumer to the database. Set its exported
// fields before [Writer.Run].
type Writer struct {
	db      DB
	cons    Fetcher
	log     *slog.Logger
	Batch   int
	MaxWait time.Duration
	// Retention is how long attempts are kept (whole days' partitions are
	// dropped once all their rows are older).
	Retention time.Duration
	// PartitionsAhead is how many days after today get their partition
	// before any attempt needs it.
	PartitionsAhead int
	// MaintainEvery is how often partitions are created and dropped.
	MaintainEvery time.Duration
	// AutoDisableAfter disables an endpoint that has failed continuously for
	// longer; 0, or a nil SyncEndpoint, turns this off.
	AutoDisableAfter time.Duration
	// SyncEndpoint publishes an endpoint's changed configuration to every
	// replica (endpoints.Sync with the service's pool and KV bucket).
	SyncEndpoint func(ctx context.Context, endpointID string) error
	// Metrics, when set, counts endpoints disabled for failing.
	Metrics *metrics.Metrics
	// KeepAlive is how often outcomes being written are reported in
	// progress (0: never). It must be well under the consumer's ack wait,
	// which is kept short so that the outcomes a killed replica had taken
	// are written again soon.
	KeepAlive time.Duration

	filling filling
}

// New returns a Writer taking up to 500 outcomes, or what arrived within
// 100 ms, per transaction, keeping attempts for the default retention and
// auto-disabling endpoints after the default period once SyncEndpoint is set.
func New(db DB, cons Fetcher, log *slog.Logger) *Writer {
	return &Writer{
		db: db, cons: cons, log: log, Batch: 500, MaxWait: 100 * time.Millisecond,
		Retention: config.DefaultAttemptRetention, PartitionsAhead: 2, MaintainEvery: time.Hour,
		AutoDisableAfter: config.DefaultAutoDisableAfter, KeepAlive: 3 * time.Second,
	}
}

// startSpan starts the span of writing one batch: a trace of its own (a
// batch serves many deliveries' traces), linked to each outcome's trace.
// The links are read only for a span that records them.
func (w *Writer) startSpan(ctx context.Context, msgs []jetstream.Msg) (context.Context, trace.Span) {
	ctx, span := otel.Tracer("github.com/hookline/hookline/services/dispatcher").Start(ctx, "write attempt log",
		trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("hookline.outcomes", len(msgs)))
		for _, m := range msgs {
			if m.Subject() == bus.AttemptBatchSubject {
				var batch hooklinev1.AttemptOutcomes
				if proto.Unmarshal(m.Data(), &batch) == nil {
					for _, tp := range batch.GetTraceparents() {
						if sc := telemetry.SpanContext(tp); sc.IsValid() {
							span.AddLink(trace.Link{SpanContext: sc})
						}
					}
				}
				continue
			}
			if sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), m.Headers())); sc.IsValid() {
				span.AddLink(trace.Link{SpanContext: sc})
			}
		}
	}
	return ctx, span
}

// nakDelay is how long outcomes wait after the database failed.
const nakDelay = 2 * time.Second

// Run writes batches until ctx ends; the batch in progress is finished. It
// also maintains the attempts partitions: at once, then every MaintainEvery.
func (w *Writer) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { w.maintain(ctx) })
	for ctx.Err() == nil {
		batch, err := w.cons.Fetch(w.Batch, jetstream.FetchMaxWait(w.MaxWait))
		if err != nil {
			w.log.Warn("fetch attempt outcomes", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil {
			w.log.Debug("fetch attempt outcomes ended", "err", err)
		}
		if len(msgs) == 0 {
			continue
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		wctx, span := w.startSpan(wctx, msgs)
		stopAlive := keepAlive(msgs, w.KeepAlive)
		err = w.Write(wctx, msgs)
		stopAlive()
		cancel()
		if err != nil {
			span.SetStatus(codes.Error, "write attempt log")
			span.End()
			w.log.WarnContext(wctx, "write attempt log, will retry", "err", err, "outcomes", len(msgs))
			for _, m := range msgs {
				_ = m.NakWithDelay(nakDelay)
			}
			sleep(ctx, nakDelay)
			continue
		}
		span.End()
		for _, m := range msgs {
			_ = m.Ack()
		}
	}
}

// keepAlive tells JetStream every interval that msgs are still being
// written, until stop is called: the consumer's ack wait is short (see
// KeepAlive), a slow write is not.
func keepAlive(msgs []jetstream.Msg, every time.Duration) (stop func()) {
	if every <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// maintain creates the coming days' partitions and drops expired ones, at
// start and then every MaintainEvery; a failure (PostgreSQL down) is retried
// a minute later.
func (w *Writer) maintain(ctx context.Context) {
	for ctx.Err() == nil {
		next := w.MaintainEvery
		if err := w.Maintain(ctx, time.Now()); err != nil {
			w.log.Warn("maintain attempt log partitions, will retry", "err", err)
			next = min(next, time.Minute)
		}
		sleep(ctx, next)
	}
}

// Maintain creates the partitions of today and the PartitionsAhead days
// after it, and drops those older than Retention. It is idempotent and safe
// to run from every replica at once.
func (w *Writer) Maintain(ctx context.Context, now time.Time) error {
	mctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := EnsurePartitions(mctx, w.db, now, w.PartitionsAhead); err != nil {
		return err
	}
	dropped, err := DropExpired(mctx, w.db, now, w.Retention)
	for _, name := range dropped {
		w.log.Info("dropped expired attempt log partition", "partition", name, "retention", w.Retention.String())
	}
	return err
}

// Write records msgs' outcomes in one transaction. Undecodable messages are
// terminated (they can never be written) and skipped. Endpoints failing for
// longer than AutoDisableAfter are then disabled.
func (w *Writer) Write(ctx context.Context, msgs []jetstream.Msg) error {
	outs := make([]*hooklinev1.AttemptOutcome, 0, len(msgs))
	for _, m := range msgs {
		if m.Subject() == bus.AttemptBatchSubject {
			var batch hooklinev1.AttemptOutcomes
			if err := proto.Unmarshal(m.Data(), &batch); err != nil {
				w.log.Error("undecodable attempt outcomes, dropped", "subject", m.Subject(), "err", err)
				_ = m.Term()
				continue
			}
			for _, o := range batch.GetOutcomes() {
				if o.GetDeliveryId() == "" || o.GetAttempt() == 0 {
					w.log.Error("attempt outcome without delivery or attempt, dropped", "subject", m.Subject())
					continue
				}
				outs = append(outs, o)
			}
			continue
		}
		o := &hooklinev1.AttemptOutcome{}
		if err := proto.Unmarshal(m.Data(), o); err != nil || o.GetDeliveryId() == "" || o.GetAttempt() == 0 {
			w.log.Error("undecodable attempt outcome, dropped", "subject", m.Subject(), "err", err)
			_ = m.Term()
			continue
		}
		outs = append(outs, o)
	}
	if err := w.record(ctx, outs); err != nil {
		return err
	}
	if w.AutoDisableAfter <= 0 || w.SyncEndpoint == nil {
		return nil
	}
	return w.autoDisable(ctx, failingEndpoints(outs))
}

// record stores outs, and analyzes the partitions they filled enough (see
// [filling]).
func (w *Writer) record(ctx context.Context, outs []*hooklinev1.AttemptOutcome) error {
	// A fetch of grouped outcomes can hold many thousands: they are stored
	// a chunk per transaction (storing one again changes nothing, so a
	// failure part-way is retried whole).
	for chunk := range slices.Chunk(outs, storeChunk) {
		resolved, err := store(ctx, w.db, chunk)
		if err != nil {
			return err
		}
		if w.Metrics != nil && resolved > 0 {
			w.Metrics.DeadLettersResolved.Add(float64(resolved))
		}
	}
	for _, p := range w.filling.stored(outs) {
		if err := analyze(ctx, w.db, p); err != nil {
			// The outcomes are stored; autovacuum analyzes it later.
			w.log.InfoContext(ctx, "analyze a filling attempts partition", "err", err)
		}
	}
	return nil
}

// storeChunk is the most outcomes written in one transaction.
const storeChunk = 2000

// Store writes outcomes in one transaction: each attempt once, each delivery
// moved forward (a later attempt wins; a succeeded or dead delivery never
// goes back to pending), and a dead letter resolved when its replay succeeded.
func Store(ctx context.Context, db Beginner, outs []*hooklinev1.AttemptOutcome) error {
	_, err := store(ctx, db, outs)
	return err
}

// store is [Store], also returning how many dead letters it resolved.
func store(ctx context.Context, db Beginner, outs []*hooklinev1.AttemptOutcome) (resolvedCount int64, err error) {
	if len(outs) == 0 {
		return 0, nil
	}
	a := struct {
		delivery, tenant, event, endpoint []string
		attempt, duration                 []int32
		started                           []time.Time
		status                            []*int32
		errs, body                        []*string
		ok                                []bool
	}{}
	latest := map[string]*hooklinev1.AttemptOutcome{}
	var resolved []string
	type key struct {
		delivery string
		attempt  uint32
	}
	seen := map[key]bool{}
	for _, o := range outs {
		if o.GetSucceeded() && o.GetDeadLetterId() != "" {
			resolved = append(resolved, o.GetDeadLetterId())
		}
		if prev, ok := latest[o.GetDeliveryId()]; !ok || o.GetAttempt() > prev.GetAttempt() ||
			(o.GetAttempt() == prev.GetAttempt() && rank(o.GetStatus()) > rank(prev.GetStatus())) {
			latest[o.GetDeliveryId()] = o
		}
		k := key{o.GetDeliveryId(), o.GetAttempt()}
		if seen[k] {
			continue // the same attempt twice in one batch: keep the first
		}
		seen[k] = true
		a.delivery = append(a.delivery, o.GetDeliveryId())
		a.tenant = append(a.tenant, o.GetTenantId())
		a.event = append(a.event, o.GetEventId())
		a.endpoint = append(a.endpoint, o.GetEndpointId())
		a.attempt = append(a.attempt, int32(o.GetAttempt()))      //nolint:gosec // attempts are small
		a.duration = append(a.duration, int32(o.GetDurationMs())) //nolint:gosec // bounded by the timeout
		a.started = append(a.started, o.GetStartedAt().AsTime())
		a.status = append(a.status, statusPtr(o.GetStatusCode()))
		a.errs = append(a.errs, strPtr(o.GetError()))
		a.body = append(a.body, bodyText(o.GetResponseBody()))
		a.ok = append(a.ok, o.GetSucceeded())
	}

	d := struct {
		id, tenant, event, endpoint, status []string
		attempts                            []int32
		code                                []*int32
		errs, replay                        []*string
		delivered                           []*time.Time
	}{}
	// Sorted, so that concurrent writers lock delivery rows in one order.
	ordered := make([]*hooklinev1.AttemptOutcome, 0, len(latest))
	for _, o := range latest {
		ordered = append(ordered, o)
	}
	slices.SortFunc(ordered, func(x, y *hooklinev1.AttemptOutcome) int { return cmp.Compare(x.GetDeliveryId(), y.GetDeliveryId()) })
	for _, o := range ordered {
		d.id = append(d.id, o.GetDeliveryId())
		d.tenant = append(d.tenant, o.GetTenantId())
		d.event = append(d.event, o.GetEventId())
		d.endpoint = append(d.endpoint, o.GetEndpointId())
		d.status = append(d.status, statusName(o.GetStatus()))
		d.attempts = append(d.attempts, int32(o.GetAttempt())) //nolint:gosec // attempts are small
		d.code = append(d.code, statusPtr(o.GetStatusCode()))
		d.errs = append(d.errs, strPtr(o.GetError()))
		d.replay = append(d.replay, strPtr(o.GetReplayId()))
		var delivered *time.Time
		if o.GetSucceeded() {
			t := o.GetStartedAt().AsTime().Add(time.Duration(o.GetDurationMs()) * time.Millisecond)
			delivered = &t
		}
		d.delivered = append(d.delivered, delivered)
	}

	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// Deliveries first: the upsert locks each delivery's row until commit,
	// so the attempts check below cannot race another writer.
	if _, err := tx.Exec(ctx, upsertDeliveries, d.id, d.tenant, d.event, d.endpoint, d.status,
		d.attempts, d.code, d.errs, d.delivered, d.replay); err != nil {
		return 0, fmt.Errorf("update deliveries: %w", err)
	}
	if err := storeHealth(ctx, tx, outs); err != nil {
		return 0, err
	}
	if len(resolved) > 0 {
		tag, err := tx.Exec(ctx, `UPDATE dead_letters SET resolved_at = now() WHERE id = ANY($1) AND resolved_at IS NULL`, resolved)
		if err != nil {
			return 0, fmt.Errorf("resolve dead letters: %w", err)
		}
		resolvedCount = tag.RowsAffected()
	}
	// Last, as the planner settings it needs hold until commit.
	if _, err := tx.Exec(ctx, attemptsPlanSettings); err != nil {
		return 0, fmt.Errorf("set planner settings: %w", err)
	}
	if _, err := tx.Exec(ctx, insertAttempts, a.delivery, a.attempt, a.tenant, a.event, a.endpoint,
		a.started, a.duration, a.status, a.errs, a.body, a.ok); err != nil {
		return 0, fmt.Errorf("insert attempts: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit attempt log: %w", err)
	}
	return resolvedCount, nil
}

// insertAttempts records each attempt once. The primary key includes
// started_at (the partition key), so it alone would let a repeated attempt
// with a new start time in; NOT EXISTS looks for the same attempt started
// within a day either side (so only a few partitions are probed), through
// the primary key (tenant_id, event_id, endpoint_id, delivery_id, attempt,
// started_at): a delivery's outcomes all carry its tenant, event and
// endpoint. A repeat more than a day apart would be recorded twice: both
// requests did happen.
//
// There is no ON CONFLICT: Store dedupes a batch's attempts, and the
// deliveries' row locks taken before this statement serialise writers
// holding the same outcome, so the second one's NOT EXISTS (a new snapshot,
// after the first committed) sees the row. Should a duplicate ever get
// through, the batch fails, is retried, and then finds it. A speculative
// insertion would cost every attempt a second heap WAL record.
//
// It runs after attemptsPlanSettings, so that each attempt is looked up on
// its own (a nested loop): otherwise, for a batch of a few hundred, the
// planner prefers to read and hash the whole partition while it holds tens
// of thousands of rows (at 20,000: 11 ms, where 300 lookups take 4). And it
// takes the primary key for the lookups only once it knows how few
// endpoints share the partition: see [filling].
const insertAttempts = `
INSERT INTO attempts (delivery_id, attempt, tenant_id, event_id, endpoint_id, started_at,
                      duration_ms, status_code, error, response_body, succeeded)
SELECT u.* FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                       $7::int[], $8::int[], $9::text[], $10::text[], $11::bool[])
     AS u(delivery_id, attempt, tenant_id, event_id, endpoint_id, started_at,
          duration_ms, status_code, error, response_body, succeeded)
WHERE NOT EXISTS (
    SELECT 1 FROM attempts a
    WHERE a.tenant_id = u.tenant_id AND a.event_id = u.event_id AND a.endpoint_id = u.endpoint_id
      AND a.delivery_id = u.delivery_id AND a.attempt = u.attempt
      AND a.started_at > u.started_at - interval '1 day' AND a.started_at < u.started_at + interval '1 day')`

// attemptsPlanSettings leaves the planner of insertAttempts no join but a
// nested loop, until commit.
const attemptsPlanSettings = `SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)`

// upsertDeliveries applies each delivery's latest outcome. An outcome older
// than what the row records changes nothing but attempts (GREATEST), and a
// terminal row never goes back to pending.
const upsertDeliveries = `
INSERT INTO deliveries AS d (id, tenant_id, event_id, endpoint_id, status, attempts,
                             last_status_code, last_error, delivered_at, replay_id, updated_at)
SELECT u.id, u.tenant_id, u.event_id, u.endpoint_id, u.status, u.attempts,
       u.code, u.err, u.delivered_at, u.replay_id, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
            $7::int[], $8::text[], $9::timestamptz[], $10::text[])
     AS u(id, tenant_id, event_id, endpoint_id, status, attempts, code, err, delivered_at, replay_id)
ON CONFLICT (id) DO UPDATE SET
    status = CASE
        WHEN d.status IN ('succeeded', 'dead') AND EXCLUDED.status = 'pending' THEN d.status
        WHEN EXCLUDED.attempts >= d.attempts THEN EXCLUDED.status
        ELSE d.status END,
    last_status_code = CASE WHEN EXCLUDED.attempts >= d.attempts THEN EXCLUDED.last_status_code ELSE d.last_status_code END,
    last_error = CASE WHEN EXCLUDED.attempts >= d.attempts THEN EXCLUDED.last_error ELSE d.last_error END,
    delivered_at = COALESCE(d.delivered_at, EXCLUDED.delivered_at),
    attempts = GREATEST(d.attempts, EXCLUDED.attempts),
    updated_at = now()`

func rank(s hooklinev1.DeliveryStatus) int {
	switch s {
	case hooklinev1.DeliveryStatus_DELIVERY_STATUS_SUCCEEDED, hooklinev1.DeliveryStatus_DELIVERY_STATUS_DEAD:
		return 2
	case hooklinev1.DeliveryStatus_DELIVERY_STATUS_PENDING:
		return 1
	default:
		return 0
	}
}

func statusName(s hooklinev1.DeliveryStatus) string {
	switch s {
	case hooklinev1.DeliveryStatus_DELIVERY_STATUS_SUCCEEDED:
		return "succeeded"
	case hooklinev1.DeliveryStatus_DELIVERY_STATUS_DEAD:
		return "dead"
	default:
		return "pending"
	}
}

func statusPtr(code uint32) *int32 {
	if code == 0 {
		return nil
	}
	c := int32(code) //nolint:gosec // HTTP status codes are small
	return &c
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// bodyText makes a response body storable as text: invalid UTF-8 and NUL
// bytes (which PostgreSQL text cannot hold) are replaced with U+FFFD.
func bodyText(b []byte) *string {
	if len(b) == 0 {
		return nil
	}
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	return &s
}
