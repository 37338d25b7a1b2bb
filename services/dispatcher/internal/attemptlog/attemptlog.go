// Package attemptlog writes attempt outcomes from HOOKLINE_ATTEMPTS to the
// attempts table and the deliveries' status, in batches: one transaction per
// fetch of up to 500 messages, acknowledged only after it commits.
package attemptlog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// Beginner starts transactions; *pgxpool.Pool implements it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Fetcher fetches batches; a jetstream.Consumer implements it.
type Fetcher interface {
	Fetch(batch int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error)
}

// Writer moves outcomes from the consumer to the database.
type Writer struct {
	db      Beginner
	cons    Fetcher
	log     *slog.Logger
	Batch   int
	MaxWait time.Duration
}

// New returns a Writer taking up to 500 outcomes, or what arrived within
// 100 ms, per transaction.
func New(db Beginner, cons Fetcher, log *slog.Logger) *Writer {
	return &Writer{db: db, cons: cons, log: log, Batch: 500, MaxWait: 100 * time.Millisecond}
}

// nakDelay is how long outcomes wait after the database failed.
const nakDelay = 2 * time.Second

// Run writes batches until ctx ends; the batch in progress is finished.
func (w *Writer) Run(ctx context.Context) {
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
		err = w.Write(wctx, msgs)
		cancel()
		if err != nil {
			w.log.Warn("write attempt log, will retry", "err", err, "outcomes", len(msgs))
			for _, m := range msgs {
				_ = m.NakWithDelay(nakDelay)
			}
			sleep(ctx, nakDelay)
			continue
		}
		for _, m := range msgs {
			_ = m.Ack()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Write records msgs' outcomes in one transaction. Undecodable messages are
// terminated (they can never be written) and skipped.
func (w *Writer) Write(ctx context.Context, msgs []jetstream.Msg) error {
	outs := make([]*hooklinev1.AttemptOutcome, 0, len(msgs))
	for _, m := range msgs {
		o := &hooklinev1.AttemptOutcome{}
		if err := proto.Unmarshal(m.Data(), o); err != nil || o.GetDeliveryId() == "" || o.GetAttempt() == 0 {
			w.log.Error("undecodable attempt outcome, dropped", "subject", m.Subject(), "err", err)
			_ = m.Term()
			continue
		}
		outs = append(outs, o)
	}
	return Store(ctx, w.db, outs)
}

// Store writes outcomes in one transaction: each attempt once, each delivery
// moved forward (a later attempt wins; a succeeded or dead delivery never
// goes back to pending), and a dead letter resolved when its replay succeeded.
func Store(ctx context.Context, db Beginner, outs []*hooklinev1.AttemptOutcome) error {
	if len(outs) == 0 {
		return nil
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
	for _, o := range outs {
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
		if prev, ok := latest[o.GetDeliveryId()]; !ok || o.GetAttempt() > prev.GetAttempt() ||
			(o.GetAttempt() == prev.GetAttempt() && rank(o.GetStatus()) > rank(prev.GetStatus())) {
			latest[o.GetDeliveryId()] = o
		}
		if o.GetSucceeded() && o.GetDeadLetterId() != "" {
			resolved = append(resolved, o.GetDeadLetterId())
		}
	}

	d := struct {
		id, tenant, event, endpoint, status []string
		attempts                            []int32
		code                                []*int32
		errs, replay                        []*string
		delivered                           []*time.Time
	}{}
	for _, o := range latest {
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
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, insertAttempts, a.delivery, a.attempt, a.tenant, a.event, a.endpoint,
		a.started, a.duration, a.status, a.errs, a.body, a.ok); err != nil {
		return fmt.Errorf("insert attempts: %w", err)
	}
	if _, err := tx.Exec(ctx, upsertDeliveries, d.id, d.tenant, d.event, d.endpoint, d.status,
		d.attempts, d.code, d.errs, d.delivered, d.replay); err != nil {
		return fmt.Errorf("update deliveries: %w", err)
	}
	if len(resolved) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE dead_letters SET resolved_at = now() WHERE id = ANY($1) AND resolved_at IS NULL`, resolved); err != nil {
			return fmt.Errorf("resolve dead letters: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit attempt log: %w", err)
	}
	return nil
}

const insertAttempts = `
INSERT INTO attempts (delivery_id, attempt, tenant_id, event_id, endpoint_id, started_at,
                      duration_ms, status_code, error, response_body, succeeded)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                     $7::int[], $8::int[], $9::text[], $10::text[], $11::bool[])
ON CONFLICT (delivery_id, attempt) DO NOTHING`

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
