// Package fanout turns one accepted event into one delivery per matching
// endpoint: it records the deliveries, publishes them (or, for a disabled
// endpoint, a dead letter) and only then acknowledges the event, so a crash at
// any point repeats work that the derived delivery ids and Nats-Msg-Ids make
// invisible.
package fanout

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
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
	"github.com/hookline/hookline/pkg/ids"
	"github.com/hookline/hookline/pkg/metrics"
	"github.com/hookline/hookline/pkg/telemetry"
	"github.com/hookline/hookline/pkg/workpool"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// ReasonEndpointDisabled is the dead-letter reason for an event matched by a
// disabled endpoint.
const ReasonEndpointDisabled = "endpoint_disabled"

// Matcher selects the endpoints an event goes to.
type Matcher interface {
	Endpoints(ev *hooklinev1.Event) []*hooklinev1.Endpoint
}

// Execer runs a statement; *pgxpool.Pool implements it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Handler fans events out.
type Handler struct {
	db     Execer
	js     jetstream.JetStream
	match  Matcher
	log    *slog.Logger
	tracer trace.Tracer
	// rows inserts the deliveries rows of events fanned out concurrently
	// in one statement.
	rows *rowWriter
	// Metrics counts deliveries created and unmatched events; NewHandler
	// sets one nobody serves.
	Metrics *metrics.Metrics
	// Circuits, when set, holds keyless deliveries to endpoints whose
	// circuit is not closed as their deliveries rows instead of publishing
	// them.
	Circuits *OpenCircuits
	// workers run the fan-out of a keyed event that came alone on a
	// goroutine whose stack has grown already (a group is fanned out on
	// its message's goroutine, as one batch).
	workers *workpool.Pool
}

// NewHandler returns a Handler writing to db and publishing through js.
func NewHandler(db Execer, js jetstream.JetStream, m Matcher, log *slog.Logger) *Handler {
	h := &Handler{db: db, js: js, match: m, log: log, tracer: otel.Tracer("github.com/hookline/hookline/services/fanout"),
		Metrics: metrics.New("hookline-fanout")}
	h.rows = newRowWriter(db, rowWriters, maxRows)
	h.workers = workpool.New(workerIdle)
	return h
}

// workerIdle is how long a worker goroutine waits for the next event
// before it ends.
const workerIdle = 10 * time.Second

// Close ends the worker goroutines once their work is done. Call it after
// the last event was handled.
func (h *Handler) Close() { h.workers.Close() }

// onWorker runs f on a worker and waits for it.
func (h *Handler) onWorker(f func() error) error {
	done := make(chan error, 1)
	h.workers.Go(func() { done <- f() })
	return <-done
}

// Deliveries rows: statements in flight at once, and the most rows one
// statement inserts (an event's rows are never split). One statement at a
// time, for the reason ingest commits one group at a time: the rows of events
// fanned out meanwhile wait for the next statement instead of going alone
// in a second one (a quarter fewer statements at 2,000 events a second).
const (
	rowWriters = 1
	maxRows    = 2000
)

// opTimeout bounds each database statement and each wait for publish acks.
const opTimeout = 10 * time.Second

// HeaderEventSeq, on each delivery message, is the HOOKLINE_EVENTS stream
// sequence of its event (for diagnosing order).
const HeaderEventSeq = "Hookline-Event-Seq"

// decode reads an event message; an undecodable one is terminated.
func (h *Handler) decode(msg jetstream.Msg) (*hooklinev1.Event, uint64, bool) {
	ev := &hooklinev1.Event{}
	if err := proto.Unmarshal(msg.Data(), ev); err != nil || ev.GetTenantId() == "" || ev.GetId() == "" {
		h.log.Error("undecodable event message, dropped", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return nil, 0, false
	}
	var seq uint64
	if meta, err := msg.Metadata(); err == nil {
		seq = meta.Sequence.Stream
	}
	return ev, seq, true
}

// Handle processes one event message without an ordering key and
// acknowledges it, or NAKs it with a short delay when the database or NATS
// failed (it is then fanned out again, which repeats nothing visible).
func (h *Handler) Handle(ctx context.Context, msg jetstream.Msg) {
	if msg.Headers().Get(bus.HeaderEvents) != "" {
		h.handleGroup(ctx, msg)
		return
	}
	ev, seq, ok := h.decode(msg)
	if !ok {
		return
	}
	log := h.eventLog(ev)
	if err := h.Process(ctx, msg.Headers(), ev, seq); err != nil {
		log().Warn("fan-out failed, will retry", "err", err)
		_ = msg.NakWithDelay(NakDelay())
		return
	}
	if err := msg.Ack(); err != nil {
		log().Warn("ack event", "err", err)
	}
}

// decodeGroup reads a message of several events (see [bus.HeaderEvents]);
// an undecodable one is terminated.
func (h *Handler) decodeGroup(msg jetstream.Msg) (*hooklinev1.Events, uint64, bool) {
	g := &hooklinev1.Events{}
	if err := proto.Unmarshal(msg.Data(), g); err != nil || len(g.GetEvents()) == 0 {
		h.log.Error("undecodable events message, dropped", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return nil, 0, false
	}
	var seq uint64
	if meta, err := msg.Metadata(); err == nil {
		seq = meta.Sequence.Stream
	}
	return g, seq, true
}

// groupEvent returns the i-th event of g with the context of its own trace,
// or false for an event that can never be fanned out (no tenant or id),
// which is logged.
func (h *Handler) groupEvent(ctx context.Context, msg jetstream.Msg, g *hooklinev1.Events, i int) (context.Context, *hooklinev1.Event, bool) {
	ev := g.GetEvents()[i]
	if ev.GetTenantId() == "" || ev.GetId() == "" {
		h.log.Error("event without tenant or id in an events message, dropped", "subject", msg.Subject(), "index", i)
		return ctx, nil, false
	}
	if i < len(g.GetTraceparents()) {
		if sc := telemetry.SpanContext(g.GetTraceparents()[i]); sc.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
		}
	}
	return ctx, ev, true
}

// handleGroup fans out the keyless events of one message (see
// [bus.HeaderEvents]) together, each in its own trace, and acknowledges the
// message once all are fanned out. When anything failed the message is
// NAKed and all are fanned out again, which repeats nothing visible. An
// event that can never be fanned out (no tenant or id) is logged and
// skipped.
func (h *Handler) handleGroup(ctx context.Context, msg jetstream.Msg) {
	g, seq, ok := h.decodeGroup(msg)
	if !ok {
		return
	}
	if err := h.processGroup(ctx, msg, g, seq); err != nil {
		h.log.Warn("fan-out of an events message failed, will retry", "events", len(g.GetEvents()), "err", err)
		_ = msg.NakWithDelay(NakDelay())
		return
	}
	if err := msg.Ack(); err != nil {
		h.log.Warn("ack events message", "err", err)
	}
}

// processGroup fans out the events of g (from msg, stream sequence seq) as
// one batch: one deliveries-rows write, and one message per endpoint
// carrying that endpoint's deliveries of all of them (see
// [bus.HeaderDeliveries]) instead of one message per delivery. The same
// events message always makes the same messages, so fanning it out again
// publishes nothing new.
func (h *Handler) processGroup(ctx context.Context, msg jetstream.Msg, g *hooklinev1.Events, seq uint64) (err error) {
	now := apitime.Now()
	fans := make([]*fanning, 0, len(g.GetEvents()))
	defer func() {
		for _, f := range fans {
			f.end(err)
		}
	}()
	var rows []deliveryRow
	for i := range g.GetEvents() {
		ectx, ev, ok := h.groupEvent(ctx, msg, g, i)
		if !ok {
			continue
		}
		f := h.prepare(ectx, ev, now)
		fans = append(fans, f)
		rows = append(rows, f.rows...)
	}
	msgs, err := groupedMessages(fans, seq)
	if err != nil {
		return err
	}
	return h.write(ctx, rows, msgs, fans)
}

// HandleOrdered processes the message at the head of a keyed subject (one
// event, or several: see [bus.HeaderEvents]) and acknowledges it. A failure
// is retried in place, with a backoff, until it succeeds or the service
// stops (then the message is NAKed and stays the head): moving on would
// reorder the key.
func (h *Handler) HandleOrdered(ctx context.Context, msg jetstream.Msg) {
	if msg.Headers().Get(bus.HeaderEvents) != "" {
		h.handleOrderedGroup(ctx, msg)
		return
	}
	ev, seq, ok := h.decode(msg)
	if !ok {
		return
	}
	h.retryInPlace(ctx, msg, h.eventLog(ev), func() error {
		return h.onWorker(func() error { return h.Process(ctx, msg.Headers(), ev, seq) })
	})
}

// handleOrderedGroup processes the keyed events of the message at the head
// of a key partition's subject: the events of one key one after another,
// in the message's order, and those of different keys together, each in
// its own trace. A failure is retried in place for the events not yet
// fanned out; a key's later events wait for its earlier ones.
func (h *Handler) handleOrderedGroup(ctx context.Context, msg jetstream.Msg) {
	g, seq, ok := h.decodeGroup(msg)
	if !ok {
		return
	}
	type step struct {
		ctx context.Context
		ev  *hooklinev1.Event
	}
	var (
		chains [][]step
		byKey  = map[string]int{}
	)
	for i := range g.GetEvents() {
		ectx, ev, ok := h.groupEvent(ctx, msg, g, i)
		if !ok {
			continue
		}
		c, seen := byKey[ev.GetOrderingKey()]
		if !seen {
			c = len(chains)
			byKey[ev.GetOrderingKey()] = c
			chains = append(chains, nil)
		}
		chains[c] = append(chains[c], step{ectx, ev})
	}
	// next[c] is how many of chain c's events are fanned out. Each wave
	// fans out the next event of every key at once, in one batch (one
	// rows write, one publish), and the wave after it waits for that: a
	// key's event is published only once its previous one is stored.
	next := make([]int, len(chains))
	h.retryInPlace(ctx, msg, func() *slog.Logger { return h.log.With("subject", msg.Subject()) }, func() error {
		for {
			var (
				wave []int
				fans []*fanning
				rows []deliveryRow
				now  = apitime.Now()
			)
			for c, chain := range chains {
				if next[c] == len(chain) {
					continue
				}
				f := h.prepare(chain[next[c]].ctx, chain[next[c]].ev, now)
				wave, fans, rows = append(wave, c), append(fans, f), append(rows, f.rows...)
			}
			if len(wave) == 0 {
				return nil
			}
			msgs, err := messagesOf(fans, seq)
			if err == nil {
				err = h.write(ctx, rows, msgs, fans)
			}
			for _, f := range fans {
				f.end(err)
			}
			if err != nil {
				return err
			}
			for _, c := range wave {
				next[c]++
			}
		}
	})
}

// retryInPlace runs fanOut until it succeeds, then acknowledges msg;
// between failures it waits with a backoff, telling JetStream that msg is
// still worked on. When ctx ends first, msg is NAKed.
func (h *Handler) retryInPlace(ctx context.Context, msg jetstream.Msg, log func() *slog.Logger, fanOut func() error) {
	wait := 100 * time.Millisecond
	lastAlive := time.Now()
	for {
		err := fanOut()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			_ = msg.Nak()
			return
		}
		log().Warn("fan-out failed, retrying in place", "err", err, "retry_in", wait.String())
		if time.Since(lastAlive) > 10*time.Second {
			_ = msg.InProgress()
			lastAlive = time.Now()
		}
		select {
		case <-ctx.Done():
			_ = msg.Nak()
			return
		case <-time.After(wait):
		}
		_ = msg.InProgress()
		wait = min(2*wait, 5*time.Second)
	}
	if err := msg.Ack(); err != nil {
		log().Warn("ack event", "err", err)
	}
}

// eventLog returns a function giving h.log with ev's ids; the ids are
// formatted only when something is logged.
func (h *Handler) eventLog(ev *hooklinev1.Event) func() *slog.Logger {
	return func() *slog.Logger { return h.log.With("tenant_id", ev.GetTenantId(), "event_id", ev.GetId()) }
}

// NakDelay is how long a failed event waits before it is fanned out again:
// one to two seconds, spread so that a burst of failures does not return at
// once.
func NakDelay() time.Duration {
	return time.Second + rand.N(time.Second) //nolint:gosec // jitter, not security
}

// Process publishes and records ev's deliveries, in one batch whose order
// is the endpoints', and waits for every publish acknowledgement and the
// rows' commit. headers
// carry the event's trace context; eventSeq is ev's stream sequence (0 when
// unknown).
//
// The work runs in a "fanout event" span, a child of the event's trace
// context; each matched endpoint gets a "fanout delivery" span, a child of
// it, whose context travels with that delivery (or dead letter).
func (h *Handler) Process(ctx context.Context, headers nats.Header, ev *hooklinev1.Event, eventSeq uint64) error {
	return h.process(telemetry.Extract(ctx, headers), ev, eventSeq)
}

// process is Process in ctx's trace context.
func (h *Handler) process(ctx context.Context, ev *hooklinev1.Event, eventSeq uint64) (err error) {
	f := h.prepare(ctx, ev, apitime.Now())
	defer func() { f.end(err) }()
	fans := []*fanning{f}
	msgs, err := messagesOf(fans, eventSeq)
	if err != nil {
		return err
	}
	return h.write(ctx, f.rows, msgs, fans)
}

// messagesOf builds a message of its own for everything fans publish (see
// groupedMessages for the messages of an events message).
func messagesOf(fans []*fanning, eventSeq uint64) ([]*nats.Msg, error) {
	var msgs []*nats.Msg
	for _, f := range fans {
		for _, o := range f.out {
			m, err := o.message(eventSeq)
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, m)
		}
	}
	return msgs, nil
}

// fanning is one event's fan-out under way: its deliveries rows, the
// messages to publish, and its spans, ended once both are written.
type fanning struct {
	span   trace.Span
	dspans []trace.Span
	rows   []deliveryRow
	out    []outgoing
	// matched is how many endpoints the event matched.
	matched int
}

// outgoing is what fan-out publishes for one delivery: the delivery, or
// for a disabled endpoint its dead letter. ctx holds the span of its
// fan-out, whose context travels with it.
type outgoing struct {
	ctx  context.Context
	d    *hooklinev1.Delivery
	dead bool
}

// message builds o's message on its own.
func (o outgoing) message(eventSeq uint64) (*nats.Msg, error) {
	var (
		m   *nats.Msg
		err error
	)
	if o.dead {
		m, err = deadLetterMsg(o.d, o.d.GetCreatedAt().AsTime())
	} else {
		m, err = deliveryMsg(o.d)
	}
	if err != nil {
		return nil, err
	}
	telemetry.Inject(o.ctx, m.Header)
	if eventSeq != 0 {
		m.Header.Set(HeaderEventSeq, strconv.FormatUint(eventSeq, 10))
	}
	return m, nil
}

// groupable reports whether o may travel with other deliveries to its
// endpoint: a keyless delivery (a keyed one is the head of its key's
// subject on its own), not a dead letter.
func (o outgoing) groupable() bool { return !o.dead && o.d.GetOrderingKey() == "" }

// end ends f's spans, marked failed when err is set.
func (f *fanning) end(err error) {
	for _, ds := range f.dspans {
		if err != nil {
			ds.SetStatus(codes.Error, "fan-out failed")
		}
		ds.End()
	}
	if err != nil {
		f.span.RecordError(err)
		f.span.SetStatus(codes.Error, "fan-out failed")
	}
	f.span.End()
}

// prepare matches ev and builds its deliveries rows and messages, at now,
// in a "fanout event" span, a child of ctx's trace context; each matched
// endpoint gets a "fanout delivery" span, a child of it, whose context
// travels with that delivery (or dead letter).
func (h *Handler) prepare(ctx context.Context, ev *hooklinev1.Event, now time.Time) *fanning {
	ctx, span := h.tracer.Start(ctx, "fanout event", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("hookline.tenant_id", ev.GetTenantId()), attribute.String("hookline.event_id", ev.GetId()),
			attribute.String("hookline.event_type", ev.GetType())))
	eps := h.match.Endpoints(ev)
	span.SetAttributes(attribute.Int("hookline.endpoints", len(eps)))
	f := &fanning{span: span, matched: len(eps)}
	if len(eps) == 0 {
		return f
	}
	f.rows = make([]deliveryRow, 0, len(eps))
	f.out = make([]outgoing, 0, len(eps))
	f.dspans = make([]trace.Span, 0, len(eps))
	for _, ep := range eps {
		d := &hooklinev1.Delivery{
			// The acceptance time in front: ids of deliveries fanned out
			// together sort together, so the deliveries key grows at its
			// right end instead of touching a random page per row.
			Id:          ids.DeliveryForAt(ev.GetTenantId(), ev.GetId(), ep.GetId(), ev.GetAcceptedAt().AsTime()),
			TenantId:    ev.GetTenantId(),
			EventId:     ev.GetId(),
			EndpointId:  ep.GetId(),
			EventType:   ev.GetType(),
			Data:        ev.GetData(),
			OrderingKey: ev.GetOrderingKey(),
			AcceptedAt:  ev.GetAcceptedAt(),
			CreatedAt:   timestamppb.New(now),
		}
		held := h.held(ep, d)
		dctx, ds := h.tracer.Start(ctx, "fanout delivery", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
			attribute.String("hookline.endpoint_id", ep.GetId()),
			attribute.String("hookline.delivery_id", d.GetId()),
			attribute.Bool("hookline.dead_letter", ep.GetDisabled()),
			attribute.Bool("hookline.circuit_open", held)))
		f.dspans = append(f.dspans, ds)
		row := deliveryRow{id: d.GetId(), tenant: ev.GetTenantId(), event: ev.GetId(), endpoint: ep.GetId(), status: "pending", hold: held}
		if ep.GetDisabled() {
			row.status = "dead"
		}
		if held {
			// The dispatcher would only park it: its row waits for the
			// circuit instead (the release rebuilds it from the row and
			// the event, and links to the trace context kept with it).
			if tp := telemetry.Traceparent(dctx); tp != "" {
				row.traceparent = &tp
			}
			f.rows = append(f.rows, row)
			continue
		}
		f.rows = append(f.rows, row)
		f.out = append(f.out, outgoing{ctx: dctx, d: d, dead: ep.GetDisabled()})
	}
	return f
}

// write publishes msgs and inserts rows, the fan-out of fans, and waits
// for both.
func (h *Handler) write(ctx context.Context, rows []deliveryRow, msgs []*nats.Msg, fans []*fanning) error {
	// The rows and the messages are independent: both writes are
	// idempotent, and the attempt-log writer upserts a row that is not
	// there yet (the row's insert then changes nothing). So the publish
	// and the insert run at the same time, and the event is acknowledged
	// once both are done.
	wait, err := bus.PublishAsync(h.js, msgs...)
	if err != nil {
		return err
	}
	// One deadline bounds both waits: a timer per context is a measurable
	// share of the fan-out's CPU at full load.
	opctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	insertErr := h.rows.insert(opctx, rows)
	if err := wait(opctx); err != nil {
		return err
	}
	if insertErr != nil {
		return fmt.Errorf("insert deliveries: %w", insertErr)
	}
	for _, f := range fans {
		if f.matched == 0 {
			h.Metrics.EventsUnmatched.Inc()
			continue
		}
		h.Metrics.DeliveriesCreated.Add(float64(f.matched))
	}
	return nil
}

// Limits of one message of several deliveries: at most this many, and
// about this many bytes of encoded deliveries. A dispatcher holds every
// delivery of the messages it has taken in memory (up to twice its
// concurrency of messages), so the limit is what bounds its memory, while
// the cost of a JetStream message shared by 32 deliveries is already
// small per delivery.
const (
	groupDeliveries = 32
	groupBytes      = 256 << 10
)

// groupedMessages builds the messages of fans, the events of one events
// message (stream sequence seq): each endpoint's keyless deliveries travel
// together, in the events' order, in messages of at most groupDeliveries
// deliveries and about groupBytes; anything else, and a delivery that
// would be alone, goes on its own.
func groupedMessages(fans []*fanning, seq uint64) ([]*nats.Msg, error) {
	type group struct {
		out   []outgoing
		bytes int
	}
	var (
		msgs    []*nats.Msg
		groups  []*group
		current = map[string]*group{}
	)
	for _, f := range fans {
		for _, o := range f.out {
			if !o.groupable() {
				m, err := o.message(seq)
				if err != nil {
					return nil, err
				}
				msgs = append(msgs, m)
				continue
			}
			subject := bus.DeliverySubject(o.d.GetTenantId(), o.d.GetEndpointId(), "")
			size := proto.Size(o.d)
			g := current[subject]
			if g == nil || len(g.out) == groupDeliveries || (len(g.out) > 0 && g.bytes+size > groupBytes) {
				g = &group{}
				current[subject] = g
				groups = append(groups, g)
			}
			g.out = append(g.out, o)
			g.bytes += size
		}
	}
	for _, g := range groups {
		if len(g.out) == 1 {
			m, err := g.out[0].message(seq)
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, m)
			continue
		}
		m, err := deliveriesMsg(g.out, seq)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// deliveriesMsg builds the message of several keyless deliveries to one
// endpoint (see [bus.HeaderDeliveries]); each delivery's trace context
// travels beside it.
func deliveriesMsg(out []outgoing, seq uint64) (*nats.Msg, error) {
	g := &hooklinev1.Deliveries{
		Deliveries:   make([]*hooklinev1.Delivery, len(out)),
		Traceparents: make([]string, len(out)),
	}
	deliveryIDs := make([]string, len(out))
	for i, o := range out {
		g.Deliveries[i], g.Traceparents[i], deliveryIDs[i] = o.d, telemetry.Traceparent(o.ctx), o.d.GetId()
	}
	b, err := proto.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("encode %d deliveries: %w", len(out), err)
	}
	d := out[0].d
	m := bus.NewMsg(bus.DeliverySubject(d.GetTenantId(), d.GetEndpointId(), ""), bus.DeliveriesMsgID(deliveryIDs), b)
	m.Header.Set(bus.HeaderDeliveries, strconv.Itoa(len(out)))
	if seq != 0 {
		m.Header.Set(HeaderEventSeq, strconv.FormatUint(seq, 10))
	}
	return m, nil
}

// held reports whether d, about to go to ep, waits for ep's circuit. Only
// keyless (or unordered) deliveries to an enabled endpoint are held here: a
// keyed one goes to the dispatcher, whose blocked-key bookkeeping keeps its
// key in order.
func (h *Handler) held(ep *hooklinev1.Endpoint, d *hooklinev1.Delivery) bool {
	if h.Circuits == nil || ep.GetDisabled() || (d.GetOrderingKey() != "" && ep.GetOrdering() != "none") {
		return false
	}
	return h.Circuits.Holds(ep.GetId())
}

func deliveryMsg(d *hooklinev1.Delivery) (*nats.Msg, error) {
	b, err := proto.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode delivery %s: %w", d.GetId(), err)
	}
	return bus.NewMsg(bus.DeliverySubject(d.GetTenantId(), d.GetEndpointId(), d.GetOrderingKey()), bus.DeliveryMsgID(d.GetId(), 0), b), nil
}

func deadLetterMsg(d *hooklinev1.Delivery, now time.Time) (*nats.Msg, error) {
	b, err := proto.Marshal(&hooklinev1.DeadLetter{
		Delivery: d,
		Reason:   ReasonEndpointDisabled,
		DeadAt:   timestamppb.New(now),
	})
	if err != nil {
		return nil, fmt.Errorf("encode dead letter %s: %w", d.GetId(), err)
	}
	return bus.NewMsg(bus.DeadSubject(d.GetTenantId(), d.GetEndpointId()), bus.DeadMsgID(d.GetId(), 0), b), nil
}
