package deadletter

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/ids"
	"github.com/hookline/hookline/pkg/metrics"
	"github.com/hookline/hookline/pkg/ops"
	"github.com/hookline/hookline/pkg/telemetry"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

const (
	// maxBatch is the most dead letters stored in one transaction.
	maxBatch = 200
	// retryDelay is how long a message waits after its batch could not be
	// stored (PostgreSQL unreachable, say).
	retryDelay = 5 * time.Second
	// storeTimeout bounds one batch's transaction.
	storeTimeout = 20 * time.Second
)

// tracerName names the service's spans' instrumentation scope.
const tracerName = "github.com/hookline/hookline/services/deadletter"

// service holds what the consumer, the API and the replay runner share.
type service struct {
	pool    *pgxpool.Pool
	js      jetstream.JetStream
	log     *slog.Logger
	runner  *runner
	metrics *metrics.Metrics
	tracer  trace.Tracer
}

// newService returns the service with its own metrics registry; Run
// replaces it with the one it serves on /metrics.
func newService(pool *pgxpool.Pool, js jetstream.JetStream, log *slog.Logger) *service {
	s := &service{pool: pool, js: js, log: log, metrics: metrics.New(Name), tracer: otel.Tracer(tracerName)}
	s.runner = newRunner(s)
	return s
}

// consume stores the dead letters of HOOKLINE_DEAD until ctx ends, then stops
// fetching and finishes the messages already received within
// shutdownTimeout, handing back (NAK) any left after that.
func (s *service) consume(ctx context.Context, cons jetstream.Consumer, health *ops.Health, shutdownTimeout time.Duration) error {
	msgs := make(chan jetstream.Msg, 2*maxBatch)
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopHandler := func() { stopOnce.Do(func() { close(stop) }) }

	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-stop:
			_ = m.Nak()
		}
	},
		jetstream.PullMaxMessages(maxBatch),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.log.Warn("consume dead letters", "err", err)
		}),
	)
	if err != nil {
		return fmt.Errorf("consume %s: %w", bus.StreamDead, err)
	}
	health.Set("consuming", true)

	for {
		select {
		case m := <-msgs:
			s.handleBatch(ctx, collect(m, msgs))
			continue
		case <-ctx.Done():
		}
		break
	}

	health.Set("consuming", false)
	cc.Drain()
	deadline := time.NewTimer(shutdownTimeout)
	defer deadline.Stop()
	for {
		select {
		case m := <-msgs:
			s.handleBatch(context.WithoutCancel(ctx), collect(m, msgs))
		case <-cc.Closed():
			stopHandler()
			for {
				select {
				case m := <-msgs:
					s.handleBatch(context.WithoutCancel(ctx), collect(m, msgs))
				default:
					return nil
				}
			}
		case <-deadline.C:
			stopHandler()
			cc.Stop()
			for {
				select {
				case m := <-msgs:
					_ = m.Nak()
				default:
					return nil
				}
			}
		}
	}
}

// collect returns first and whatever else is already waiting, up to maxBatch.
func collect(first jetstream.Msg, msgs <-chan jetstream.Msg) []jetstream.Msg {
	batch := []jetstream.Msg{first}
	for len(batch) < maxBatch {
		select {
		case m := <-msgs:
			batch = append(batch, m)
		default:
			return batch
		}
	}
	return batch
}

type incoming struct {
	msg jetstream.Msg
	dl  *hooklinev1.DeadLetter
	// ctx carries span, the item's "store dead letter" span, a child of the
	// trace context in the message's headers.
	ctx  context.Context
	span trace.Span
}

// startSpan starts the "store dead letter" span of dl, continuing the trace
// of the delivery that died (the publisher injects it into the headers).
func (s *service) startSpan(ctx context.Context, m jetstream.Msg, dl *hooklinev1.DeadLetter) (context.Context, trace.Span) {
	d := dl.GetDelivery()
	attrs := []attribute.KeyValue{
		attribute.String("hookline.tenant_id", d.GetTenantId()),
		attribute.String("hookline.event_id", d.GetEventId()),
		attribute.String("hookline.endpoint_id", d.GetEndpointId()),
		attribute.String("hookline.delivery_id", d.GetId()),
		attribute.String("hookline.reason", dl.GetReason()),
	}
	if d.GetReplayId() != "" {
		attrs = append(attrs, attribute.String("hookline.replay_id", d.GetReplayId()),
			attribute.String("hookline.dead_letter_id", d.GetDeadLetterId()))
	}
	return s.tracer.Start(telemetry.Extract(ctx, m.Headers()), "store dead letter",
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// handleBatch stores msgs in one transaction and acks them after the commit.
// When the batch fails, each message is tried alone, so one bad message
// cannot hold back the others; a message that still fails waits and comes
// back. Each message gets its own span; the statements of a batch of one
// run inside it (those of a larger batch belong to no single trace and are
// not traced).
func (s *service) handleBatch(ctx context.Context, msgs []jetstream.Msg) {
	items := make([]incoming, 0, len(msgs))
	for _, m := range msgs {
		dl := &hooklinev1.DeadLetter{}
		if err := proto.Unmarshal(m.Data(), dl); err != nil || dl.GetDelivery().GetId() == "" || dl.GetDelivery().GetTenantId() == "" {
			s.log.ErrorContext(telemetry.Extract(ctx, m.Headers()), "dropping undecodable dead letter", "subject", m.Subject(), "err", err)
			_ = m.Term()
			continue
		}
		ictx, span := s.startSpan(ctx, m, dl)
		items = append(items, incoming{msg: m, dl: dl, ctx: ictx, span: span})
	}
	defer func() {
		for _, it := range items {
			it.span.End()
		}
	}()
	if len(items) == 0 {
		return
	}
	bctx := ctx
	if len(items) == 1 {
		bctx = items[0].ctx
	}
	if err := s.storeDeadLetters(bctx, items); err == nil {
		for _, it := range items {
			_ = it.msg.Ack()
		}
		return
	} else if len(items) == 1 {
		s.retryLater(items[0], err)
		return
	}
	for _, it := range items {
		if err := s.storeDeadLetters(it.ctx, []incoming{it}); err != nil {
			s.retryLater(it, err)
			continue
		}
		_ = it.msg.Ack()
	}
}

// retryLater hands it back to come again after retryDelay.
func (s *service) retryLater(it incoming, err error) {
	it.span.RecordError(err)
	it.span.SetStatus(codes.Error, "store dead letter")
	s.log.WarnContext(it.ctx, "store dead letter; retrying later", "delivery_id", it.dl.GetDelivery().GetId(), "err", err)
	_ = it.msg.NakWithDelay(retryDelay)
}

// A dead letter of a replayed delivery (dead_letter_id set) updates the dead
// letter it replayed, which is dead again (not resolved); any other is a new
// dead letter, once per delivery. The answer is 1 when a dead letter was
// stored or is dead again, 0 for a repeat of a message already stored (a
// repeated message carries the same dead_at). traceparent, when known,
// names the span that stored it, so that a replay can link back to it; a
// dead letter dead again keeps the latest (whose trace links to the one
// before through its replay span).
const upsertDeadLetterSQL = `
WITH old AS (
    SELECT dead_at FROM dead_letters WHERE id = $13 AND tenant_id = $2
), upd AS (
    UPDATE dead_letters
       SET reason = $8, attempts = $9, last_status_code = $10, last_error = $11, dead_at = $12,
           resolved_at = NULL, traceparent = COALESCE($14, traceparent)
     WHERE id = $13 AND tenant_id = $2
    RETURNING id
), ins AS (
    INSERT INTO dead_letters (id, tenant_id, delivery_id, event_id, endpoint_id, event_type, ordering_key,
                              reason, attempts, last_status_code, last_error, dead_at, traceparent)
    SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text,
           $8::text, $9::integer, $10::integer, $11::text, $12::timestamptz, $14::text
     WHERE NOT EXISTS (SELECT 1 FROM upd)
    ON CONFLICT (delivery_id) DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM ins)
     + (SELECT count(*) FROM upd, old WHERE old.dead_at IS DISTINCT FROM $12::timestamptz)`

const deadDeliverySQL = `
INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, last_status_code, last_error,
                        replay_id, created_at, updated_at)
VALUES ($1, $2, $3, $4, 'dead', $5, $6, $7, $8, $9, now())
ON CONFLICT (id) DO UPDATE SET
    status = CASE WHEN deliveries.status = 'succeeded' THEN deliveries.status ELSE 'dead' END,
    attempts = GREATEST(deliveries.attempts, EXCLUDED.attempts),
    last_status_code = COALESCE(EXCLUDED.last_status_code, deliveries.last_status_code),
    last_error = COALESCE(EXCLUDED.last_error, deliveries.last_error),
    updated_at = now()`

// storeDeadLetters writes items in one transaction and counts the dead
// letters it created (or that are dead again) once it is committed.
func (s *service) storeDeadLetters(ctx context.Context, items []incoming) error {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	b := &pgx.Batch{}
	for _, it := range items {
		d := it.dl.GetDelivery()
		attempts := it.dl.GetAttempts()
		if attempts == 0 {
			attempts = d.GetAttempts()
		}
		status, lastErr := it.dl.GetLastStatusCode(), it.dl.GetLastError()
		if status == 0 && lastErr == "" {
			status, lastErr = d.GetLastStatusCode(), d.GetLastError()
		}
		deadAt := time.Now().UTC()
		if it.dl.GetDeadAt() != nil {
			deadAt = it.dl.GetDeadAt().AsTime()
		}
		createdAt := deadAt
		if d.GetCreatedAt() != nil {
			createdAt = d.GetCreatedAt().AsTime()
		}
		b.Queue(upsertDeadLetterSQL,
			ids.New(ids.DeadLetter), d.GetTenantId(), d.GetId(), d.GetEventId(), d.GetEndpointId(), d.GetEventType(),
			nullString(d.GetOrderingKey()), it.dl.GetReason(), int64(attempts), nullInt(status), nullString(lastErr),
			deadAt, d.GetDeadLetterId(), nullString(telemetry.Traceparent(it.ctx)))
		b.Queue(deadDeliverySQL,
			d.GetId(), d.GetTenantId(), d.GetEventId(), d.GetEndpointId(), int64(attempts), nullInt(status),
			nullString(lastErr), nullString(d.GetReplayId()), createdAt)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	br := tx.SendBatch(ctx, b)
	stored := make([]bool, len(items))
	for i := range items {
		var n int64
		if err := br.QueryRow().Scan(&n); err != nil {
			_ = br.Close()
			return fmt.Errorf("write %d dead letters: %w", len(items), err)
		}
		stored[i] = n > 0
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return fmt.Errorf("write %d dead letters: %w", len(items), err)
		}
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("write %d dead letters: %w", len(items), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit %d dead letters: %w", len(items), err)
	}
	for i, it := range items {
		it.span.SetAttributes(attribute.Bool("hookline.stored", stored[i]))
		if stored[i] {
			s.metrics.DeadLettersCreated.WithLabelValues(reasonLabel(it.dl.GetReason())).Inc()
		}
	}
	return nil
}

// reasonLabel keeps the reason label bounded: a reason this version does not
// know is counted as "other".
func reasonLabel(reason string) string {
	if slices.Contains(Reasons, reason) {
		return reason
	}
	return "other"
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullInt(n uint32) *int64 {
	if n == 0 {
		return nil
	}
	v := int64(n)
	return &v
}
