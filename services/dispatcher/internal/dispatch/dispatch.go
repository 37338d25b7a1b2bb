// Package dispatch handles delivery messages: it makes the attempt, reports
// its outcome to HOOKLINE_ATTEMPTS, parks a retry or publishes a dead letter,
// and only then acknowledges the message.
package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

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
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/keylane"
	"github.com/hookline/hookline/pkg/metrics"
	"github.com/hookline/hookline/pkg/telemetry"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/dispatcher/internal/breaker"
	"github.com/hookline/hookline/services/dispatcher/internal/delivery"
	"github.com/hookline/hookline/services/dispatcher/internal/parking"
)

// EndpointGetter finds an endpoint's configuration: nil when it does not
// exist, Deleted set when it was deleted. [endpoints.Cache] implements it.
type EndpointGetter interface {
	Get(ctx context.Context, id string) (*hooklinev1.Endpoint, error)
}

// Parker stores a delivery for a later attempt at due.
type Parker func(ctx context.Context, d *hooklinev1.Delivery, due time.Time) error

// Holder stores a delivery to wait for its endpoint's circuit, at the
// latest until latest.
type Holder func(ctx context.Context, d *hooklinev1.Delivery, latest time.Time) error

// Disabler disables an endpoint that answered 410 Gone.
type Disabler func(ctx context.Context, endpointID string) error

// Delays of NAKs.
const (
	// ParkFailedDelay: parking a retry failed (PostgreSQL down); the attempt
	// is repeated after this.
	ParkFailedDelay = 5 * time.Second
	// FailedDelay: a lookup or publish failed.
	FailedDelay = 2 * time.Second
	opTimeout   = 10 * time.Second
)

// Breaker is the per-endpoint circuit breaker. Allow returns done, to be
// called with the attempt's result, or a time until which the endpoint's
// deliveries wait without an attempt. *breaker.Circuits implements it.
type Breaker interface {
	Allow(ctx context.Context, endpointID, deliveryID string) (breaker.Done, time.Time)
}

// RateLimiter makes a request to ep wait for its rate limit.
// *ratelimit.Limiters implements it.
type RateLimiter interface {
	Wait(ctx context.Context, ep *hooklinev1.Endpoint) error
}

// Handler handles delivery messages.
type Handler struct {
	Endpoints EndpointGetter
	Sender    *delivery.Sender
	Park      Parker
	// Hold, when set, stores the keyless deliveries the shared circuit
	// holds, to wait for the circuit rather than for a time; without it
	// they are parked until the circuit may be probed.
	Hold    Holder
	Disable Disabler
	JS      jetstream.JetStream
	Log     *slog.Logger
	// Breaker and Rates are optional.
	Breaker Breaker
	Rates   RateLimiter
	// Keys is the blocked-key registry of ordered delivery.
	Keys *parking.Store
	// Outcomes, when set, publishes attempt outcomes grouped with those of
	// concurrent deliveries (see package outcomes); without it each goes
	// alone on hookline.attempt.<tenant>.<endpoint>.
	Outcomes OutcomePublisher
	// Metrics counts attempts, retries and disabled endpoints; NewHandler
	// sets one nobody serves.
	Metrics  *metrics.Metrics
	tracer   trace.Tracer
	attempts atomic.Pointer[attemptCache]
}

// OutcomePublisher publishes an attempt's outcome and returns once JetStream
// acknowledged it; *outcomes.Batcher implements it. urgent says that
// another delivery waits for this one's acknowledgement (a key's next
// head): it must not linger for others to join.
type OutcomePublisher interface {
	Publish(ctx context.Context, o *hooklinev1.AttemptOutcome, traceparent string, urgent bool) error
}

// NewHandler returns a Handler; every field must be set.
func NewHandler(eps EndpointGetter, s *delivery.Sender, park Parker, disable Disabler, js jetstream.JetStream, log *slog.Logger) *Handler {
	return &Handler{Endpoints: eps, Sender: s, Park: park, Disable: disable, JS: js, Log: log,
		Metrics: metrics.New("hookline-dispatcher"),
		tracer:  otel.Tracer("github.com/hookline/hookline/services/dispatcher")}
}

// Decode reads a delivery message; ok is false for one that can never be
// handled (it has been terminated).
func Decode(msg jetstream.Msg, log *slog.Logger) (*hooklinev1.Delivery, bool) {
	d := &hooklinev1.Delivery{}
	if err := proto.Unmarshal(msg.Data(), d); err != nil || d.GetId() == "" || d.GetEndpointId() == "" {
		log.Error("undecodable delivery message, dropped", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return nil, false
	}
	return d, true
}

// Ordered reports whether d must be delivered in its key's order: it has an
// ordering key and its endpoint keeps order (the default).
func Ordered(ep *hooklinev1.Endpoint, d *hooklinev1.Delivery) bool {
	return d.GetOrderingKey() != "" && ep != nil && !ep.GetDeleted() && ep.GetOrdering() != "none"
}

// logger returns h.Log with d's ids on every line. The ids are added only to
// lines actually logged: Logger.With would format them for every delivery.
func (h *Handler) logger(d *hooklinev1.Delivery) *slog.Logger {
	return slog.New(deliveryLog{h.Log.Handler(), d})
}

// deliveryLog adds a delivery's ids to the records it handles.
type deliveryLog struct {
	slog.Handler
	d *hooklinev1.Delivery
}

func (l deliveryLog) attrs() []slog.Attr {
	return []slog.Attr{slog.String("tenant_id", l.d.GetTenantId()), slog.String("event_id", l.d.GetEventId()),
		slog.String("endpoint_id", l.d.GetEndpointId()), slog.String("delivery_id", l.d.GetId())}
}

func (l deliveryLog) Handle(ctx context.Context, r slog.Record) error {
	r.AddAttrs(l.attrs()...)
	return l.Handler.Handle(ctx, r)
}

func (l deliveryLog) WithAttrs(as []slog.Attr) slog.Handler {
	return l.Handler.WithAttrs(append(l.attrs(), as...))
}

func (l deliveryLog) WithGroup(name string) slog.Handler {
	return l.Handler.WithAttrs(l.attrs()).WithGroup(name)
}

// kind is what follows a decision.
type kind int

const (
	kindSucceeded kind = iota + 1
	// kindRetry: attempted, failed, another attempt at due.
	kindRetry
	// kindDead: dead letter dl (attempted or not).
	kindDead
	// kindHold: the circuit is open; no attempt, wait until due (or, with
	// circuit set, for the circuit, at the latest until latest).
	kindHold
	// kindStopping: the dispatcher is stopping; nothing happened.
	kindStopping
)

// verdict is what became of one delivery: the attempt's outcome (nil without
// an attempt), the delivery as it must be stored for later (attempts
// counted; nil once it succeeded), and the dead letter.
type verdict struct {
	kind    kind
	due     time.Time
	circuit bool
	latest  time.Time
	next    *hooklinev1.Delivery
	outcome *hooklinev1.AttemptOutcome
	dl      *hooklinev1.DeadLetter
	reason  string
	errText string
	// took is the attempt's duration.
	took time.Duration
}

// startSpan starts the span of one handling of d: a child of ctx's trace
// context, or, with opts holding trace.WithNewRoot and a link, a new trace
// linked to the one d came from.
//
// Attributes are set only on a recording span: the ID-only tracer used when
// no spans are exported keeps none, and building them costs allocations on
// every delivery. No sampler of ours looks at start attributes.
func (h *Handler) startSpan(ctx context.Context, d *hooklinev1.Delivery, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	opts = append(opts, consumerKind)
	ctx, span := h.tracer.Start(ctx, "deliver", opts...)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("hookline.tenant_id", d.GetTenantId()),
			attribute.String("hookline.event_id", d.GetEventId()),
			attribute.String("hookline.endpoint_id", d.GetEndpointId()),
			attribute.String("hookline.delivery_id", d.GetId()),
			attribute.Int("hookline.attempt", int(d.GetAttempts())+1),
		)
		if d.GetReplayId() != "" {
			span.SetAttributes(attribute.String("hookline.replay_id", d.GetReplayId()))
		}
	}
	return ctx, span
}

// Span kinds, built once.
var (
	consumerKind = trace.WithSpanKind(trace.SpanKindConsumer)
	clientKind   = trace.WithSpanKind(trace.SpanKindClient)
)

// observe counts v and ends span with its result.
func (h *Handler) observe(span trace.Span, d *hooklinev1.Delivery, v verdict) {
	var outcome string
	switch v.kind {
	case kindSucceeded:
		outcome = "succeeded"
		if d.GetReplayId() == "" && d.GetAcceptedAt() != nil {
			h.Metrics.DeliveryLatency.Observe(time.Since(d.GetAcceptedAt().AsTime()).Seconds())
		}
	case kindRetry:
		outcome = "retry"
		h.Metrics.RetriesScheduled.Inc()
	case kindDead:
		outcome = "dead"
		span.SetAttributes(attribute.String("hookline.dead_reason", v.reason))
	case kindHold:
		span.SetAttributes(attribute.Bool("hookline.circuit_open", true))
	}
	if outcome != "" {
		span.SetAttributes(attribute.String("hookline.outcome", outcome))
	}
	if v.outcome != nil {
		c := h.attemptMetrics(outcome)
		c.inc()
		c.observe(v.took.Seconds())
	}
	if v.kind == kindDead || v.kind == kindRetry {
		span.SetStatus(codes.Error, v.errText)
	}
}

// attemptSeries are the attempt metrics of one outcome label.
type attemptSeries struct {
	inc     func()
	observe func(float64)
}

// attemptCache holds the series of h.Metrics per outcome, looked up once
// instead of hashing the label on every attempt.
type attemptCache struct {
	m      *metrics.Metrics
	series map[string]attemptSeries
}

func (h *Handler) attemptMetrics(outcome string) attemptSeries {
	c := h.attempts.Load()
	if c == nil || c.m != h.Metrics {
		c = &attemptCache{m: h.Metrics, series: map[string]attemptSeries{}}
		for _, o := range []string{"succeeded", "retry", "dead"} {
			c.series[o] = h.lookupSeries(o)
		}
		h.attempts.Store(c)
	}
	if s, ok := c.series[outcome]; ok {
		return s
	}
	return h.lookupSeries(outcome)
}

func (h *Handler) lookupSeries(outcome string) attemptSeries {
	return attemptSeries{h.Metrics.Attempts.WithLabelValues(outcome).Inc, h.Metrics.AttemptDuration.WithLabelValues(outcome).Observe}
}

// Phaser is the side-effect-free question of a [Breaker]: what does an
// endpoint's shared circuit mean now for the deliveries it holds, and until
// when would Allow hold one. *breaker.Circuits implements it.
type Phaser interface {
	Phase(endpointID string, now time.Time) (breaker.Phase, time.Time)
}

// holdDeadline is the latest d may wait for ep's circuit: its creation
// plus ep's retry horizon (from now for a delivery without a creation time).
func holdDeadline(ep *hooklinev1.Endpoint, d *hooklinev1.Delivery, now time.Time) time.Time {
	created := now
	if d.GetCreatedAt() != nil {
		created = d.GetCreatedAt().AsTime()
	}
	return created.Add(endpoints.Horizon(ep))
}

// Held reports whether d, taken from its retry row now, would only be held
// again by its endpoint's open circuit, and the latest time it may be held
// (its retry horizon). It answers false whenever anything else could happen
// to d: its endpoint gone or disabled, its key's order to keep, its horizon
// reached, the circuit due for a probe, or no answer without I/O.
func (h *Handler) Held(ctx context.Context, d *hooklinev1.Delivery, now time.Time) (time.Time, bool) {
	p, ok := h.Breaker.(Phaser)
	if !ok {
		return time.Time{}, false
	}
	if phase, _ := p.Phase(d.GetEndpointId(), now); phase != breaker.PhaseHeld {
		return time.Time{}, false
	}
	ep, err := h.Endpoints.Get(ctx, d.GetEndpointId())
	if err != nil || ep == nil || ep.GetDeleted() || ep.GetDisabled() || Ordered(ep, d) {
		return time.Time{}, false
	}
	deadline := holdDeadline(ep, d, now)
	if !now.Before(deadline) {
		return time.Time{}, false
	}
	return deadline, true
}

// CircuitPhase is what endpointID's circuit means now for the deliveries
// held for it: [breaker.PhaseClosed] also when the endpoint is gone or
// disabled, since they must then be released to be dead-lettered, and
// [breaker.PhaseHeld] when the endpoint cannot be looked up (the question is
// asked again soon). expiredBefore is the creation time before which a held
// delivery is past the endpoint's retry horizon (zero when unknown).
func (h *Handler) CircuitPhase(ctx context.Context, endpointID string, now time.Time) (phase breaker.Phase, expiredBefore time.Time) {
	ep, err := h.Endpoints.Get(ctx, endpointID)
	switch {
	case err != nil:
		return breaker.PhaseHeld, time.Time{}
	case ep == nil || ep.GetDeleted() || ep.GetDisabled():
		return breaker.PhaseClosed, time.Time{}
	}
	expiredBefore = now.Add(-endpoints.Horizon(ep))
	p, ok := h.Breaker.(Phaser)
	if !ok {
		return breaker.PhaseClosed, expiredBefore
	}
	phase, _ = p.Phase(endpointID, now)
	return phase, expiredBefore
}

// decide attempts d to ep unless the endpoint is gone or disabled or its
// circuit is open, and classifies the result. ctx carries the trace.
func (h *Handler) decide(ctx context.Context, ep *hooklinev1.Endpoint, d *hooklinev1.Delivery) verdict {
	switch {
	case ep == nil || ep.GetDeleted():
		return deadWithoutAttempt(d, delivery.ReasonEndpointDeleted)
	case ep.GetDisabled():
		return deadWithoutAttempt(d, delivery.ReasonEndpointDisabled)
	}
	done := breaker.Done(func(breaker.Result) {})
	if h.Breaker != nil {
		var until time.Time
		done, until = h.Breaker.Allow(ctx, ep.GetId(), d.GetId())
		if done == nil {
			now := time.Now()
			deadline := holdDeadline(ep, d, now)
			if !now.Before(deadline) {
				return deadWithoutAttempt(d, delivery.ReasonExpired)
			}
			if until.After(deadline) {
				until = deadline
			}
			v := verdict{kind: kindHold, due: until, next: d}
			if p, ok := h.Breaker.(Phaser); ok && h.Hold != nil && !Ordered(ep, d) {
				// The shared circuit holds it (a breaker only this
				// replica's holds is not recorded anywhere: its
				// delivery waits a cool-down instead). An ordered one
				// blocks its key until due instead.
				if phase, _ := p.Phase(ep.GetId(), now); phase != breaker.PhaseClosed {
					v.circuit, v.latest = true, deadline
				}
			}
			return v
		}
	}
	if h.Rates != nil {
		if err := h.Rates.Wait(ctx, ep); err != nil {
			done(breaker.Abandoned)
			return verdict{kind: kindStopping}
		}
	}

	// The HTTP request's client span: its context is the traceparent the
	// endpoint receives. It records the host, never the URL (which may carry
	// a secret).
	n := d.GetAttempts() + 1
	ctx, span := h.tracer.Start(ctx, http.MethodPost, clientKind)
	defer span.End()
	recording := span.IsRecording()
	if recording {
		span.SetAttributes(
			attribute.String("http.request.method", http.MethodPost),
			attribute.String("hookline.endpoint_id", ep.GetId()),
			attribute.String("hookline.event_id", d.GetEventId()),
			attribute.Int("hookline.attempt", int(n)),
			attribute.String("server.address", host(ep.GetUrl())),
		)
	}

	now := time.Now()
	res := h.Sender.Send(ctx, ep, d, now)
	if ctx.Err() != nil {
		// Stopping: the attempt was cut short by us, not by the endpoint.
		done(breaker.Abandoned)
		return verdict{kind: kindStopping}
	}
	out := delivery.Classify(res.Response, res.Err, now)
	if out.Kind == delivery.Retry {
		done(breaker.Failure)
	} else {
		done(breaker.Success)
	}
	if out.StatusCode != 0 && recording {
		span.SetAttributes(attribute.Int("http.response.status_code", out.StatusCode))
	}
	if out.Kind != delivery.Succeeded {
		span.SetStatus(codes.Error, out.Error)
	}
	took := res.Duration

	outcome := &hooklinev1.AttemptOutcome{
		DeliveryId:   d.GetId(),
		TenantId:     d.GetTenantId(),
		EventId:      d.GetEventId(),
		EndpointId:   d.GetEndpointId(),
		Attempt:      n,
		StartedAt:    timestamppb.New(now.UTC().Truncate(time.Microsecond)),
		DurationMs:   uint32(res.Duration.Milliseconds()), //nolint:gosec // bounded by the timeout
		StatusCode:   uint32(out.StatusCode),              //nolint:gosec // HTTP status
		Error:        out.Error,
		ResponseBody: res.Body,
		Succeeded:    out.Kind == delivery.Succeeded,
		ReplayId:     d.GetReplayId(),
		DeadLetterId: d.GetDeadLetterId(),
	}
	if out.Kind == delivery.Succeeded {
		// Nothing stores the delivery again: no copy of it is needed.
		outcome.Status = hooklinev1.DeliveryStatus_DELIVERY_STATUS_SUCCEEDED
		return verdict{kind: kindSucceeded, outcome: outcome, took: took}
	}
	next := proto.CloneOf(d)
	next.Attempts = n
	next.LastStatusCode = uint32(out.StatusCode) //nolint:gosec // HTTP status
	next.LastError = out.Error

	switch out.Kind {
	case delivery.Retry:
		delay, ok := delivery.NextDelay(delivery.Schedule(ep.GetRetryScheduleMs()), int(n), out.RetryAfter, rand.Float64()) //nolint:gosec // jitter
		if ok {
			outcome.Status = hooklinev1.DeliveryStatus_DELIVERY_STATUS_PENDING
			return verdict{kind: kindRetry, due: time.Now().Add(delay), next: next, outcome: outcome, errText: out.Error, took: took}
		}
		out.Reason = delivery.ReasonExhausted
	case delivery.Dead:
		if out.DisableEndpoint {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
			if err := h.Disable(dctx, ep.GetId()); err != nil {
				h.logger(d).ErrorContext(ctx, "disable endpoint after 410 Gone", "err", err)
			} else {
				h.Metrics.EndpointsDisabled.WithLabelValues("gone").Inc()
				h.logger(d).WarnContext(ctx, "endpoint answered 410 Gone, disabled")
			}
			cancel()
		}
	}
	outcome.Status = hooklinev1.DeliveryStatus_DELIVERY_STATUS_DEAD
	return verdict{kind: kindDead, next: next, outcome: outcome, reason: out.Reason, errText: out.Error, took: took, dl: &hooklinev1.DeadLetter{
		Delivery:       next,
		Reason:         out.Reason,
		Attempts:       n,
		LastStatusCode: next.GetLastStatusCode(),
		LastError:      next.GetLastError(),
		DeadAt:         timestamppb.New(apitime.Now()),
	}}
}

func deadWithoutAttempt(d *hooklinev1.Delivery, reason string) verdict {
	return verdict{kind: kindDead, next: d, reason: reason, dl: &hooklinev1.DeadLetter{
		Delivery:       d,
		Reason:         reason,
		Attempts:       d.GetAttempts(),
		LastStatusCode: d.GetLastStatusCode(),
		LastError:      d.GetLastError(),
		DeadAt:         timestamppb.New(apitime.Now()),
	}}
}

func (v verdict) log(ctx context.Context, log *slog.Logger) {
	switch v.kind {
	case kindSucceeded:
		log.DebugContext(ctx, "delivered", "attempt", v.outcome.GetAttempt())
	case kindRetry:
		log.InfoContext(ctx, "attempt failed, retry parked", "attempt", v.outcome.GetAttempt(), "err", v.errText, "retry_in", time.Until(v.due).Round(time.Millisecond).String())
	case kindHold:
		if v.circuit {
			log.InfoContext(ctx, "circuit open, delivery held until it closes", "latest", v.latest)
		} else {
			log.InfoContext(ctx, "circuit open, delivery held", "until", v.due)
		}
	case kindDead:
		log.InfoContext(ctx, "delivery dead", "reason", v.reason, "attempts", v.dl.GetAttempts(), "err", v.errText)
	}
}

// Handle delivers d (decoded from msg) to ep, which may be nil when the
// endpoint is unknown, without regard to order, and settles msg. ctx is
// cancelled only when the dispatcher gives up on in-flight work at shutdown;
// the message is then NAKed and nothing is recorded.
func (h *Handler) Handle(ctx context.Context, msg jetstream.Msg, d *hooklinev1.Delivery, ep *hooklinev1.Endpoint) {
	h.handle(ctx, msg, d, ep, func() {})
}

// handle is Handle calling attempted once the attempt (if any) is over,
// before its outcome is recorded: the caller's slot for the endpoint is free
// again while the outcome is published.
func (h *Handler) handle(ctx context.Context, msg jetstream.Msg, d *hooklinev1.Delivery, ep *hooklinev1.Endpoint, attempted func()) {
	log := h.logger(d)
	ctx = telemetry.Extract(ctx, msg.Headers())
	ctx, span := h.startSpan(ctx, d)
	defer span.End()
	v := h.decide(ctx, ep, d)
	attempted()
	h.observe(span, d, v)
	switch v.kind {
	case kindStopping:
		_ = msg.Nak()
		return
	case kindRetry, kindHold:
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		var err error
		if v.circuit {
			err = h.Hold(pctx, v.next, v.latest)
		} else {
			err = h.Park(pctx, v.next, v.due)
		}
		cancel()
		if err != nil {
			log.WarnContext(ctx, "park retry, attempt will be repeated", "err", err)
			_ = msg.NakWithDelay(ParkFailedDelay)
			return
		}
	}
	h.settle(ctx, msg, log, v.outcome, v.dl, false)
	v.log(ctx, log)
}

// HandleOrdered delivers d, the head of its (endpoint, key) subject, and
// settles msg: parked behind its key when the key is blocked; otherwise
// attempted, and when it must wait (retry, open circuit) its key is blocked
// with it as the first parked delivery.
func (h *Handler) HandleOrdered(ctx context.Context, msg jetstream.Msg, d *hooklinev1.Delivery) {
	h.handleOrdered(ctx, msg, d, func() {})
}

// handleOrdered is HandleOrdered calling attempted once the attempt (if any)
// is over. The key stays held until msg is settled: the next delivery of the
// key is not the head before that.
func (h *Handler) handleOrdered(ctx context.Context, msg jetstream.Msg, d *hooklinev1.Delivery, attempted func()) {
	log := h.logger(d)
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.NakWithDelay(FailedDelay)
		return
	}
	seq := meta.Sequence.Stream
	token := bus.KeyToken(d.GetOrderingKey())
	// A delivery parked behind its key keeps this trace context, so its
	// attempt can link back to it.
	ctx = telemetry.Extract(ctx, msg.Headers())
	ep, err := h.Endpoints.Get(ctx, d.GetEndpointId())
	if err != nil {
		log.Warn("look up endpoint, will retry", "err", err)
		_ = msg.NakWithDelay(FailedDelay)
		return
	}
	// unblocked: the key is known not to be blocked. Only the work of the
	// key's head blocks it, so when this replica finished the previous
	// head itself, with nothing in between, and that head found the key
	// unblocked and left it so, it still is.
	unblocked := false
	if ep != nil && !ep.GetDeleted() && !ep.GetDisabled() {
		if keylane.FollowsClear(msg) {
			unblocked = true
		} else {
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
			parked, err := h.Keys.AppendIfBlocked(pctx, d, token, seq)
			cancel()
			if err != nil {
				log.Warn("check blocked key, will retry", "err", err)
				_ = msg.NakWithDelay(ParkFailedDelay)
				return
			}
			if parked {
				if err := msg.Ack(); err != nil {
					log.Warn("ack delivery", "err", err)
				}
				log.Debug("key blocked, delivery parked behind it", "seq", seq)
				return
			}
			unblocked = true
		}
	}
	ctx, span := h.startSpan(ctx, d)
	defer span.End()
	v := h.decide(ctx, ep, d)
	attempted()
	h.observe(span, d, v)
	switch v.kind {
	case kindStopping:
		_ = msg.Nak()
		return
	case kindRetry, kindHold:
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		err := h.Keys.Block(pctx, v.next, token, seq, v.due)
		cancel()
		if err != nil {
			log.WarnContext(ctx, "block key, attempt will be repeated", "err", err)
			_ = msg.NakWithDelay(ParkFailedDelay)
			return
		}
	default:
		if unblocked {
			keylane.LeaveClear(msg)
		}
	}
	h.settle(ctx, msg, log, v.outcome, v.dl, true)
	v.log(ctx, log)
}

// publish publishes an attempt's outcome and dead letter (either may be nil)
// and waits for JetStream's acknowledgements.
func (h *Handler) publish(ctx context.Context, o *hooklinev1.AttemptOutcome, dl *hooklinev1.DeadLetter, urgent bool) error {
	var msgs []*nats.Msg
	if o != nil && h.Outcomes != nil {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		defer cancel()
		if err := h.Outcomes.Publish(pctx, o, telemetry.Traceparent(ctx), urgent); err != nil {
			return err
		}
		o = nil
	}
	if o != nil {
		b, err := proto.Marshal(o)
		if err != nil {
			return fmt.Errorf("encode attempt outcome: %w", err)
		}
		m := bus.NewMsg(bus.AttemptSubject(o.GetTenantId(), o.GetEndpointId()), bus.AttemptMsgID(o.GetDeliveryId(), o.GetAttempt()), b)
		telemetry.Inject(ctx, m.Header)
		msgs = append(msgs, m)
	}
	if dl != nil {
		b, err := proto.Marshal(dl)
		if err != nil {
			return fmt.Errorf("encode dead letter: %w", err)
		}
		d := dl.GetDelivery()
		m := bus.NewMsg(bus.DeadSubject(d.GetTenantId(), d.GetEndpointId()), bus.DeadMsgID(d.GetId(), dl.GetAttempts()), b)
		telemetry.Inject(ctx, m.Header)
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		return nil
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	return bus.PublishAll(pctx, h.JS, msgs...)
}

// settle publishes the attempt's outcome (and dead letter) and, once both
// are acknowledged by JetStream, acknowledges msg. ordered says that msg
// is a key's head: the key's next delivery waits for this acknowledgement.
func (h *Handler) settle(ctx context.Context, msg jetstream.Msg, log *slog.Logger, o *hooklinev1.AttemptOutcome, dl *hooklinev1.DeadLetter, ordered bool) {
	if err := h.publish(ctx, o, dl, ordered); err != nil {
		log.WarnContext(ctx, "publish attempt outcome, will retry", "err", err)
		_ = msg.NakWithDelay(FailedDelay)
		return
	}
	if err := msg.Ack(); err != nil {
		log.WarnContext(ctx, "ack delivery", "err", err)
	}
}

func host(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Hostname()
}
