package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/eventtype"
	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/ids"
	"github.com/hookline/hookline/pkg/metrics"
	"github.com/hookline/hookline/pkg/store"
	"github.com/hookline/hookline/pkg/telemetry"
	"github.com/hookline/hookline/proto/hooklinev1"
)

// Limits on event fields (CONTRACT 2.3).
const (
	MaxOrderingKeyLen    = 256
	MaxIdempotencyKeyLen = 255
	MaxBatch             = 500
)

// Group commit of event inserts: flushes in flight at once, and the most
// statements one flush sends. One flush at a time: what arrives while it
// runs goes in the next one, so groups grow with load. With two in flight,
// a request arriving at 2,000 single events a second often found the second
// worker idle and went alone: 39% more insert statements, and PostgreSQL
// spent 20% more CPU per event (bench fixed-2000, A/B); a lone request waits
// for nothing either way.
const (
	groupWorkers    = 1
	groupStatements = 1000
)

// singleLinger is how long a single event (POST /events, one NATS intake
// message) may wait for others to share its insert statement, and again
// its Events message, while they arrive more often than one per
// singleLinger, and only until they stop coming (see
// [store.Coalescer.Linger]). Without it, at 2,000 single events a second a
// flush was often over before the next request came: 2.2 events per
// insert statement on average. With it, events travel grouped from ingest
// on, so fan-out and the dispatcher get fewer, fuller messages too (bench
// fixed-2000, A/B: PostgreSQL CPU per event 16-20% lower, all processes
// 6-14%, p50 and p99 no higher). At 200 a second nothing waits.
const singleLinger = time.Millisecond

// retryAfter is the Retry-After, in seconds, of a 503 answered when an event
// cannot be made durable.
const retryAfter = 2

// Service accepts events over HTTP and NATS and relays unpublished ones.
type Service struct {
	pool *pgxpool.Pool
	// group commits the inserts and outbox deletions of concurrent
	// requests together.
	group *store.Group
	// singles inserts single events, those of concurrent requests in one
	// statement.
	singles *store.Coalescer[*item]
	// publishes publishes the single events of concurrent requests
	// together (one Events message per subject).
	publishes *store.Coalescer[published]
	// outbox deletes the outbox rows of acknowledged events.
	outbox *outbox
	js     jetstream.JetStream
	cfg    config.Config
	log    *slog.Logger

	metrics *metrics.Metrics
	tracer  trace.Tracer

	// Tunables; tests shorten them.
	publishTimeout time.Duration // wait for JetStream acks
	relayEvery     time.Duration
	relayAge       time.Duration // unpublished rows younger than this are left to Accept
	relayBatch     int
	intakeLanes    int
	nakDelay       time.Duration
}

// New returns a Service. cfg.MaxEventBytes bounds event data (default
// [config.DefaultMaxEventBytes]).
func New(pool *pgxpool.Pool, js jetstream.JetStream, cfg config.Config, log *slog.Logger) *Service {
	if cfg.MaxEventBytes <= 0 {
		cfg.MaxEventBytes = config.DefaultMaxEventBytes
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = config.DefaultShutdownTimeout
	}
	group := store.NewGroup(pool, groupWorkers, groupStatements)
	s := &Service{
		pool:           pool,
		group:          group,
		outbox:         newOutbox(group, log),
		js:             js,
		cfg:            cfg,
		log:            log,
		metrics:        metrics.New("hookline-ingest"),
		tracer:         otel.Tracer("github.com/hookline/hookline/services/ingest"),
		publishTimeout: 10 * time.Second,
		relayEvery:     2 * time.Second,
		relayAge:       5 * time.Second,
		relayBatch:     500,
		intakeLanes:    128,
		nakDelay:       2 * time.Second,
	}
	s.singles = store.NewCoalescer(groupWorkers, MaxBatch, func(*item) int { return 1 }, s.insertBatch).Linger(singleLinger)
	s.publishes = store.NewCoalescer(groupWorkers, groupMaxEvents, func(published) int { return 1 }, s.publishTogether).Linger(singleLinger)
	return s
}

// published is a single event to publish, with the trace context of its
// acceptance.
type published struct {
	ev    *hooklinev1.Event
	trace context.Context
}

// publishTogether publishes items in as few messages as [Service.publish]
// makes; a failure is every item's.
func (s *Service) publishTogether(ctx context.Context, items []published) error {
	evs := make([]*hooklinev1.Event, len(items))
	traces := make([]context.Context, len(items))
	for i, it := range items {
		evs[i], traces[i] = it.ev, it.trace
	}
	grouped := make([]bool, len(items))
	for i := range grouped {
		grouped[i] = true
	}
	return errors.Join(s.publish(ctx, evs, traces, grouped)...)
}

// SetMetrics makes the service count accepted, duplicate and rejected
// events in m (by default, in a registry nobody serves).
func (s *Service) SetMetrics(m *metrics.Metrics) {
	if m != nil {
		s.metrics = m
	}
}

// Input is an event to accept.
type Input struct {
	TenantID       string
	ID             string // producer-chosen; empty: generated
	Type           string
	Data           []byte // JSON, kept byte for byte
	OrderingKey    string
	IdempotencyKey string
	// OnlyEndpointID restricts fan-out to one endpoint (test events).
	OnlyEndpointID string
	// Source records where the event came from: "http" (default) or "nats".
	Source string

	// jsonChecked: Data was decoded as one JSON value already (a request
	// body), so validation need not scan it again.
	jsonChecked bool
}

// Result is the answer to an accepted event. For a duplicate it describes
// the event first accepted with that id or Idempotency-Key.
type Result struct {
	ID         string
	Type       string
	AcceptedAt time.Time
	Duplicate  bool
}

// Accept makes one event durable: stored, then published on HOOKLINE_EVENTS
// and acknowledged by JetStream. Errors are *httpapi.Problem values (possibly
// wrapping a cause): 413 or 422 for a bad event, 404 for an unknown tenant,
// 503 when the event store or the bus is unreachable (retrying with the same
// id or Idempotency-Key is safe).
func (s *Service) Accept(ctx context.Context, in Input) (Result, error) {
	out := s.acceptAll(ctx, []Input{in})
	return out[0].res, out[0].err
}

type outcome struct {
	res Result
	err error
}

// item is an event on its way through acceptAll.
type item struct {
	idx        int
	in         Input
	id         string
	acceptedAt time.Time

	inserted bool
	existing *storedEvent
}

type storedEvent struct {
	id, typ, orderingKey, onlyEndpoint string
	data                               []byte
	acceptedAt                         time.Time
	published                          bool
}

// acceptAll accepts events independently: one bad or failing event fails
// alone. Publishes go out together and are sent in input order, so events
// sharing an ordering key reach the stream in that order.
//
// Each input gets an "accept event" span, whose context travels with the
// published event; the database work of a single event runs inside it.
func (s *Service) acceptAll(ctx context.Context, ins []Input) []outcome {
	out := make([]outcome, len(ins))
	spanCtx := make([]context.Context, len(ins))
	spans := make([]trace.Span, len(ins))
	for i := range ins {
		if ins[i].Source == "" {
			ins[i].Source = "http"
		}
		spanCtx[i], spans[i] = s.tracer.Start(ctx, "accept event", trace.WithAttributes(
			attribute.String("hookline.tenant_id", ins[i].TenantID),
			attribute.String("hookline.event_type", ins[i].Type),
			attribute.String("hookline.source", ins[i].Source)))
	}
	defer s.record(ins, out, spans)
	if len(ins) == 1 {
		ctx = spanCtx[0]
	}
	var items []*item
	for i, in := range ins {
		if err := s.validate(in); err != nil {
			out[i].err = err
			continue
		}
		id := in.ID
		if id == "" {
			id = ids.New(ids.Event)
		}
		items = append(items, &item{idx: i, in: in, id: id, acceptedAt: apitime.Now()})
	}
	if len(items) == 0 {
		return out
	}
	// The client going away must not leave an event half accepted when it
	// can be helped: finish the work under our own deadline.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.publishTimeout+10*time.Second)
	defer cancel()

	s.insertAll(ctx, items, out)

	var toPublish []*item
	var events []*hooklinev1.Event
	var pubCtx []context.Context
	// fresh: the event was inserted now. Only those are grouped: the
	// copy of an event published before must keep its own Nats-Msg-Id, so
	// that JetStream drops it.
	var fresh []bool
	// sameAs maps an item that duplicates an event inserted by this very
	// call (a batch naming one id twice) to that event: its publish is the
	// item's, and no copy goes.
	sameAs := map[*item]int{}
	inserted := map[[2]string]int{}
	for _, it := range items {
		if out[it.idx].err != nil {
			continue
		}
		if it.inserted {
			inserted[[2]string{it.in.TenantID, it.id}] = len(events)
			toPublish = append(toPublish, it)
			pubCtx = append(pubCtx, spanCtx[it.idx])
			fresh = append(fresh, true)
			events = append(events, &hooklinev1.Event{
				TenantId:       it.in.TenantID,
				Id:             it.id,
				Type:           it.in.Type,
				Data:           it.in.Data,
				OrderingKey:    it.in.OrderingKey,
				AcceptedAt:     timestamppb.New(it.acceptedAt),
				OnlyEndpointId: it.in.OnlyEndpointID,
			})
			out[it.idx].res = Result{ID: it.id, Type: it.in.Type, AcceptedAt: it.acceptedAt}
			continue
		}
		e := it.existing
		out[it.idx].res = Result{ID: e.id, Type: e.typ, AcceptedAt: e.acceptedAt, Duplicate: true}
		if i, ok := inserted[[2]string{it.in.TenantID, e.id}]; ok {
			sameAs[it] = i
			continue
		}
		if !e.published {
			// The first request may still be publishing, or may have failed:
			// a 202 must mean durable, so publish it too; JetStream drops the
			// copy by its Nats-Msg-Id.
			toPublish = append(toPublish, it)
			pubCtx = append(pubCtx, spanCtx[it.idx])
			fresh = append(fresh, false)
			events = append(events, eventOf(it.in.TenantID, e))
		}
	}
	if len(events) == 0 {
		return out
	}
	var errs []error
	if len(events) == 1 && fresh[0] {
		// A single event goes with those of concurrent requests.
		errs = []error{s.publishes.Do(ctx, published{ev: events[0], trace: pubCtx[0]})}
	} else {
		errs = s.publish(ctx, events, pubCtx, fresh)
	}
	var done []*hooklinev1.Event
	for i, it := range toPublish {
		if errs[i] != nil {
			out[it.idx] = outcome{err: unavailable("the event bus is unreachable", errs[i])}
			continue
		}
		done = append(done, events[i])
	}
	for it, i := range sameAs {
		if errs[i] != nil {
			out[it.idx] = outcome{err: unavailable("the event bus is unreachable", errs[i])}
		}
	}
	// The answer need not wait for the outbox rows to go: the events are
	// durable in JetStream, and a row that outlives a crash only makes the
	// relay publish its event again (JetStream or fan-out drops the copy).
	s.outbox.forget(done)
	return out
}

// Flush waits until the outbox rows of the events answered so far are
// deleted, or ctx ends. Call it on shutdown once no more requests come: a
// row left behind makes the relay publish its event again (harmlessly, but
// for nothing).
func (s *Service) Flush(ctx context.Context) error {
	return s.outbox.wait(ctx)
}

// record ends each input's span and counts its outcome: accepted,
// duplicate, or rejected (a 4xx problem) by source and reason. An event that
// could not be made durable (503) is retried by its producer, not counted.
func (s *Service) record(ins []Input, out []outcome, spans []trace.Span) {
	for i, o := range out {
		span, source := spans[i], sourceLabel(ins[i].Source)
		switch p := problem(o.err); {
		case o.err == nil && o.res.Duplicate:
			s.metrics.EventsDuplicate.WithLabelValues(source).Inc()
			span.SetAttributes(attribute.String("hookline.event_id", o.res.ID), attribute.Bool("hookline.duplicate", true))
		case o.err == nil:
			s.metrics.EventsAccepted.WithLabelValues(source).Inc()
			span.SetAttributes(attribute.String("hookline.event_id", o.res.ID))
		case p != nil && p.Status >= 400 && p.Status < 500:
			reason := rejectReason(p)
			s.metrics.EventsRejected.WithLabelValues(source, reason).Inc()
			span.SetAttributes(attribute.String("hookline.reject_reason", reason))
			span.SetStatus(codes.Error, reason)
		default:
			span.RecordError(o.err)
			span.SetStatus(codes.Error, "event not made durable")
		}
		span.End()
	}
}

// sourceLabel bounds the source metric label: inbound webhook sources
// ("source:<id>") share one value.
func sourceLabel(source string) string {
	switch {
	case source == "http" || source == "nats":
		return source
	case strings.HasPrefix(source, "source:"):
		return "inbound"
	}
	return "other"
}

func eventOf(tenant string, e *storedEvent) *hooklinev1.Event {
	return &hooklinev1.Event{
		TenantId:       tenant,
		Id:             e.id,
		Type:           e.typ,
		Data:           e.data,
		OrderingKey:    e.orderingKey,
		AcceptedAt:     timestamppb.New(e.acceptedAt),
		OnlyEndpointId: e.onlyEndpoint,
	}
}

// validate checks an input; the problem names the field at fault.
func (s *Service) validate(in Input) error {
	if in.TenantID == "" {
		return httpapi.NotFound("tenant")
	}
	if int64(len(in.Data)) > s.cfg.MaxEventBytes {
		return dataTooLarge(s.cfg.MaxEventBytes)
	}
	var errs []httpapi.FieldError
	if !eventtype.Valid(in.Type) {
		msg := "must match [A-Za-z0-9_-]+(.[A-Za-z0-9_-]+)*"
		if in.Type == "" {
			msg = "is required"
		} else if len(in.Type) > eventtype.MaxLen {
			msg = fmt.Sprintf("must be at most %d characters", eventtype.MaxLen)
		}
		errs = append(errs, httpapi.FieldError{Field: "type", Message: msg})
	}
	switch {
	case len(in.Data) == 0:
		errs = append(errs, httpapi.FieldError{Field: "data", Message: "is required (any JSON value)"})
	case !utf8.Valid(in.Data):
		errs = append(errs, httpapi.FieldError{Field: "data", Message: "must be UTF-8 encoded JSON"})
	case !in.jsonChecked && !json.Valid(in.Data):
		errs = append(errs, httpapi.FieldError{Field: "data", Message: "must be a JSON value"})
	}
	if in.ID != "" && !ids.ValidEventID(in.ID) {
		errs = append(errs, httpapi.FieldError{Field: "id", Message: "must match [A-Za-z0-9_-]{1,64}"})
	}
	if msg := checkText(in.OrderingKey, MaxOrderingKeyLen); msg != "" {
		errs = append(errs, httpapi.FieldError{Field: "ordering_key", Message: msg})
	}
	if msg := checkText(in.IdempotencyKey, MaxIdempotencyKeyLen); msg != "" {
		errs = append(errs, httpapi.FieldError{Field: "Idempotency-Key", Message: msg})
	}
	if len(errs) > 0 {
		return httpapi.Invalid(errs...)
	}
	return nil
}

// checkText returns what is wrong with an optional free-text value, or "".
func checkText(v string, maxLen int) string {
	switch {
	case len(v) > maxLen:
		return fmt.Sprintf("must be at most %d bytes", maxLen)
	case !utf8.ValidString(v) || strings.ContainsRune(v, 0):
		return "must be UTF-8 text without NUL characters"
	}
	return ""
}

func dataTooLarge(limit int64) *httpapi.Problem {
	return httpapi.NewProblem(413, "too-large", fmt.Sprintf("event data exceeds %d bytes", limit))
}

// unavailable is the 503 answered when an event cannot be made durable now;
// it wraps the cause.
func unavailable(what string, cause error) error {
	p := httpapi.Unavailable(what+"; retry with the same id or Idempotency-Key", retryAfter)
	return fmt.Errorf("%w: %w", p, cause)
}

// dbError classifies a database error met while storing tenant's events.
func dbError(tenant string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23503": // foreign_key_violation: no such tenant
			return httpapi.NotFound("tenant " + tenant)
		case strings.HasPrefix(pgErr.Code, "22"), strings.HasPrefix(pgErr.Code, "54"):
			// data_exception, program_limit_exceeded: the event store
			// refused a value (say, JSON nested too deep for it).
			return fmt.Errorf("%w: %w", httpapi.Invalid(httpapi.FieldError{Field: "data", Message: "is not accepted by the event store: " + pgErr.Message}), err)
		}
	}
	return unavailable("the event store is unreachable", err)
}

// insertSQL inserts an event and its outbox row in one statement: the row
// says the event still waits for JetStream's acknowledgement. published is
// no longer read (event_outbox is the outbox) but is set true for the down
// migration.
//
// The outbox insert has no ON CONFLICT: it only gets the events this
// statement inserted, and only the relay (which adopts old unpublished
// events, never new ones) writes outbox rows otherwise. A conflict would
// need an outbox row left over from a deleted event with the same tenant,
// id and acceptance microsecond. A speculative insertion would cost every
// event a second WAL record and index check.
const insertSQL = `
WITH e AS (
    INSERT INTO events (tenant_id, id, type, data, ordering_key, idempotency_key, source, accepted_at, only_endpoint_id, published)
    VALUES ($1, $2, $3, $4::text::json, NULLIF($5, ''), NULLIF($6, ''), $7, $8, NULLIF($9, ''), true)
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, id, accepted_at
), o AS (
    INSERT INTO event_outbox (accepted_at, tenant_id, id)
    SELECT accepted_at, tenant_id, id FROM e
)
SELECT id FROM e`

// insertManySQL is insertSQL for several events, each parameter an array
// with an element per event. It returns the id and Idempotency-Key (” for
// none) of each event inserted.
const insertManySQL = `
WITH e AS (
    INSERT INTO events (tenant_id, id, type, data, ordering_key, idempotency_key, source, accepted_at, only_endpoint_id, published)
    SELECT t, i, ty, d::json, NULLIF(ok, ''), NULLIF(ik, ''), src, at, NULLIF(oe, ''), true
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::text[])
        WITH ORDINALITY AS u(t, i, ty, d, ok, ik, src, at, oe, n)
    ORDER BY n
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, id, idempotency_key, accepted_at
), o AS (
    INSERT INTO event_outbox (accepted_at, tenant_id, id)
    SELECT accepted_at, tenant_id, id FROM e
)
SELECT id, coalesce(idempotency_key, '') FROM e`

const existingSQL = `
SELECT id, type, data::text, coalesce(ordering_key, ''), coalesce(only_endpoint_id, ''), accepted_at,
    NOT EXISTS (SELECT 1 FROM event_outbox o
        WHERE o.accepted_at = events.accepted_at AND o.tenant_id = events.tenant_id AND o.id = events.id)
FROM events
WHERE tenant_id = $1 AND (id = $2 OR idempotency_key = NULLIF($3, ''))
ORDER BY (idempotency_key IS NOT DISTINCT FROM NULLIF($3, '')) DESC
LIMIT 1`

// IdempotencyWindow is how long an Idempotency-Key is remembered (CONTRACT
// 2.3). An event id, which is also the webhook-id endpoints deduplicate on,
// stays unique within its tenant forever.
const IdempotencyWindow = 24 * time.Hour

// insertAll inserts items and reads the existing row of every item that
// conflicted. An item that conflicted only with an Idempotency-Key older
// than [IdempotencyWindow] releases that key and is inserted again, so it
// becomes a new event.
func (s *Service) insertAll(ctx context.Context, items []*item, out []outcome) {
	s.insertOnce(ctx, items, out)
	var expired []*item
	for _, it := range items {
		e := it.existing
		if out[it.idx].err == nil && e != nil && it.in.IdempotencyKey != "" && e.id != it.id &&
			it.acceptedAt.Sub(e.acceptedAt) > IdempotencyWindow {
			expired = append(expired, it)
		}
	}
	if len(expired) == 0 {
		return
	}
	for _, it := range expired {
		// Only a row still older than the window: a concurrent request may
		// have released the key and taken it already.
		_, err := s.pool.Exec(ctx, `
UPDATE events SET idempotency_key = NULL
WHERE tenant_id = $1 AND idempotency_key = $2 AND accepted_at < $3`,
			it.in.TenantID, it.in.IdempotencyKey, it.acceptedAt.Add(-IdempotencyWindow))
		if err != nil {
			out[it.idx].err = dbError(it.in.TenantID, err)
			continue
		}
		it.existing = nil
	}
	var again []*item
	for _, it := range expired {
		if out[it.idx].err == nil {
			again = append(again, it)
		}
	}
	if len(again) > 0 {
		s.insertOnce(ctx, again, out)
	}
}

// insertOnce inserts items in one round trip, and reads the existing row of
// every item that conflicted. A statement error aborts the whole batch (it
// is one implicit transaction), so on a refused value it retries item by
// item, letting the bad one fail alone.
func (s *Service) insertOnce(ctx context.Context, items []*item, out []outcome) {
	var err error
	if len(items) == 1 {
		err = s.insertOne(ctx, items[0])
	} else {
		err = s.insertBatch(ctx, items)
	}
	var pgErr *pgconn.PgError
	if err != nil && len(items) > 1 && errors.As(err, &pgErr) {
		for _, it := range items {
			if err := s.insertOne(ctx, it); err != nil {
				out[it.idx].err = dbError(it.in.TenantID, err)
			}
		}
	} else if err != nil {
		for _, it := range items {
			out[it.idx].err = dbError(it.in.TenantID, err)
		}
		return
	}

	var dups []*item
	for _, it := range items {
		if out[it.idx].err == nil && !it.inserted {
			dups = append(dups, it)
		}
	}
	if len(dups) == 0 {
		return
	}
	b := &pgx.Batch{}
	for _, it := range dups {
		b.Queue(existingSQL, it.in.TenantID, it.id, it.in.IdempotencyKey)
	}
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()
	for _, it := range dups {
		var e storedEvent
		var data string
		err := br.QueryRow().Scan(&e.id, &e.typ, &data, &e.orderingKey, &e.onlyEndpoint, &e.acceptedAt, &e.published)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			// The conflicting row vanished (its tenant was deleted).
			out[it.idx].err = unavailable("the event conflicted with one that no longer exists", err)
		case err != nil:
			out[it.idx].err = dbError(it.in.TenantID, err)
		default:
			e.data = []byte(data)
			e.acceptedAt = e.acceptedAt.UTC()
			it.existing = &e
		}
	}
}

// insertOne inserts it together with the items of concurrent requests in
// one statement ([Service.insertBatch] through s.singles), which costs
// PostgreSQL far less than a statement per event. When that statement fails
// on a value, each item is inserted again alone, so that only the bad one
// fails.
func (s *Service) insertOne(ctx context.Context, it *item) error {
	return s.singles.Do(ctx, it)
}

// insertBatch inserts items, group-committed with the inserts of concurrent
// requests (one round trip and one commit for all of them). Several items
// go in one statement: they are inserted in order, so when two of them
// conflict the first is the one stored, as if inserted one by one.
func (s *Service) insertBatch(ctx context.Context, items []*item) error {
	b := &pgx.Batch{}
	if len(items) == 1 {
		it := items[0]
		b.Queue(insertSQL, it.in.TenantID, it.id, it.in.Type, string(it.in.Data), it.in.OrderingKey,
			it.in.IdempotencyKey, it.in.Source, it.acceptedAt, it.in.OnlyEndpointID)
	} else {
		cols := make([][]string, 8)
		for i := range cols {
			cols[i] = make([]string, len(items))
		}
		at := make([]time.Time, len(items))
		for i, it := range items {
			cols[0][i], cols[1][i], cols[2][i], cols[3][i] = it.in.TenantID, it.id, it.in.Type, string(it.in.Data)
			cols[4][i], cols[5][i], cols[6][i], cols[7][i] = it.in.OrderingKey, it.in.IdempotencyKey, it.in.Source, it.in.OnlyEndpointID
			at[i] = it.acceptedAt
		}
		b.Queue(insertManySQL, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], at, cols[7])
	}
	err := s.group.Do(ctx, b, func(br pgx.BatchResults) error {
		for _, it := range items {
			it.inserted = false
		}
		if len(items) == 1 {
			var id string
			err := br.QueryRow().Scan(&id)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return fmt.Errorf("insert event %s: %w", items[0].id, err)
			default:
				items[0].inserted = true
			}
			return nil
		}
		rows, err := br.Query()
		if err != nil {
			return fmt.Errorf("insert %d events: %w", len(items), err)
		}
		var id, key string
		_, err = pgx.ForEachRow(rows, []any{&id, &key}, func() error {
			// The first item not yet matched that has the row's id and
			// Idempotency-Key is the one inserted.
			for _, it := range items {
				if !it.inserted && it.id == id && it.in.IdempotencyKey == key {
					it.inserted = true
					break
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("insert %d events: %w", len(items), err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	return nil
}

// The events of one subject (a tenant's keyless events, or its keyed events
// of one key partition: [bus.EventSubject]) are published together: at most
// groupMaxEvents events and groupMaxBytes of their data in one message
// (hooklinev1.Events), which fan-out takes apart. One JetStream message,
// stored, delivered and acknowledged, then serves many events of a batch
// request.
const (
	groupMaxEvents = 100
	groupMaxBytes  = 256 << 10
)

// publish sends every event to HOOKLINE_EVENTS without waiting in between
// (those with grouped[i] set grouped per subject, in input order; the
// others alone), then waits for all acknowledgements. errs[i]
// is events[i]'s. Each event carries the trace context of traceCtx[i] (of
// ctx when traceCtx is nil).
func (s *Service) publish(ctx context.Context, events []*hooklinev1.Event, traceCtx []context.Context, grouped []bool) []error {
	errs := make([]error, len(events))
	if !s.js.Conn().IsConnected() {
		for i := range errs {
			errs[i] = errors.New("not connected to NATS")
		}
		return errs
	}
	traceOf := func(i int) context.Context {
		if traceCtx != nil {
			return traceCtx[i]
		}
		return ctx
	}
	type sent struct {
		f   jetstream.PubAckFuture
		idx []int
	}
	var futures []sent
	send := func(msg *nats.Msg, idx ...int) {
		f, err := s.js.PublishMsgAsync(msg, jetstream.WithExpectStream(bus.StreamEvents))
		if err != nil {
			for _, i := range idx {
				errs[i] = fmt.Errorf("publish event %s: %w", events[i].GetId(), err)
			}
			return
		}
		futures = append(futures, sent{f: f, idx: idx})
	}
	// Events with grouped[i] set are grouped per subject (a tenant's
	// keyless events; its keyed events of one key partition), in input
	// order; the others go alone, each under its own Nats-Msg-Id, ahead of
	// their subject's groups: such a copy is of an event accepted earlier
	// than any event grouped here.
	var (
		groups   = map[string][]int{}
		subjects []string
	)
	for i, ev := range events {
		if grouped != nil && grouped[i] {
			subj := bus.EventSubject(ev.GetTenantId(), ev.GetOrderingKey())
			if _, ok := groups[subj]; !ok {
				subjects = append(subjects, subj)
			}
			groups[subj] = append(groups[subj], i)
			continue
		}
		msg, err := eventMsg(ev, traceOf(i))
		if err != nil {
			errs[i] = err
			continue
		}
		send(msg, i)
	}
	for _, subj := range subjects {
		for _, idx := range chunkEvents(events, groups[subj]) {
			var (
				msg *nats.Msg
				err error
			)
			if len(idx) == 1 {
				msg, err = eventMsg(events[idx[0]], traceOf(idx[0]))
			} else {
				msg, err = eventsMsg(subj, events, idx, traceOf)
			}
			if err != nil {
				for _, i := range idx {
					errs[i] = err
				}
				continue
			}
			send(msg, idx...)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, s.publishTimeout)
	defer cancel()
	for _, p := range futures {
		var err error
		select {
		case <-p.f.Ok():
			continue
		case perr := <-p.f.Err():
			err = perr
		case <-wctx.Done():
			err = fmt.Errorf("wait for ack: %w", wctx.Err())
		}
		for _, i := range p.idx {
			errs[i] = fmt.Errorf("publish event %s: %w", events[i].GetId(), err)
		}
	}
	return errs
}

// eventMsg is the message of one event, carrying traceCtx's trace context.
func eventMsg(ev *hooklinev1.Event, traceCtx context.Context) (*nats.Msg, error) {
	data, err := proto.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", ev.GetId(), err)
	}
	msg := &nats.Msg{
		Subject: bus.EventSubject(ev.GetTenantId(), ev.GetOrderingKey()),
		Header:  nats.Header{},
		Data:    data,
	}
	msg.Header.Set(bus.HeaderMsgID, bus.EventMsgID(ev.GetTenantId(), ev.GetId()))
	telemetry.Inject(traceCtx, msg.Header)
	return msg, nil
}

// eventsMsg is the message of the events at idx, all of one tenant and
// subject, each with its trace context.
func eventsMsg(subject string, events []*hooklinev1.Event, idx []int, traceOf func(int) context.Context) (*nats.Msg, error) {
	g := &hooklinev1.Events{
		Events:       make([]*hooklinev1.Event, len(idx)),
		Traceparents: make([]string, len(idx)),
	}
	eventIDs := make([]string, len(idx))
	for j, i := range idx {
		g.Events[j] = events[i]
		g.Traceparents[j] = telemetry.Traceparent(traceOf(i))
		eventIDs[j] = events[i].GetId()
	}
	data, err := proto.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("encode %d events: %w", len(idx), err)
	}
	msg := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: data}
	msg.Header.Set(bus.HeaderMsgID, bus.EventsMsgID(events[idx[0]].GetTenantId(), eventIDs))
	msg.Header.Set(bus.HeaderEvents, strconv.Itoa(len(idx)))
	return msg, nil
}

// chunkEvents splits idx, indexes of events, into groups of at most
// groupMaxEvents events and groupMaxBytes of data (an event larger than
// that alone).
func chunkEvents(events []*hooklinev1.Event, idx []int) [][]int {
	var (
		out   [][]int
		cur   []int
		bytes int
	)
	for _, i := range idx {
		n := len(events[i].GetData())
		if len(cur) > 0 && (len(cur) == groupMaxEvents || bytes+n > groupMaxBytes) {
			out = append(out, cur)
			cur, bytes = nil, 0
		}
		cur = append(cur, i)
		bytes += n
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// problem returns err's problem, or nil.
func problem(err error) *httpapi.Problem {
	var p *httpapi.Problem
	if errors.As(err, &p) {
		return p
	}
	return nil
}
