// Package dispatch handles delivery messages: it makes the attempt, reports
// its outcome to HOOKLINE_ATTEMPTS, parks a retry or publishes a dead letter,
// and only then acknowledges the message.
package dispatch

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/url"
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
	"github.com/hookline/hookline/pkg/telemetry"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/dispatcher/internal/delivery"
)

// EndpointGetter finds an endpoint's configuration: nil when it does not
// exist, Deleted set when it was deleted. [endpoints.Cache] implements it.
type EndpointGetter interface {
	Get(ctx context.Context, id string) (*hooklinev1.Endpoint, error)
}

// Parker stores a delivery for a later attempt at due.
type Parker func(ctx context.Context, d *hooklinev1.Delivery, due time.Time) error

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

// Handler handles delivery messages.
type Handler struct {
	Endpoints EndpointGetter
	Sender    *delivery.Sender
	Park      Parker
	Disable   Disabler
	JS        jetstream.JetStream
	Log       *slog.Logger
	tracer    trace.Tracer
}

// NewHandler returns a Handler; every field must be set.
func NewHandler(eps EndpointGetter, s *delivery.Sender, park Parker, disable Disabler, js jetstream.JetStream, log *slog.Logger) *Handler {
	return &Handler{Endpoints: eps, Sender: s, Park: park, Disable: disable, JS: js, Log: log,
		tracer: otel.Tracer("github.com/hookline/hookline/services/dispatcher")}
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

// Handle makes one attempt of d (decoded from msg) and settles msg. ctx is
// cancelled only when the dispatcher gives up on in-flight work at shutdown;
// the message is then NAKed and nothing is recorded.
func (h *Handler) Handle(ctx context.Context, msg jetstream.Msg, d *hooklinev1.Delivery) {
	log := h.Log.With("tenant_id", d.GetTenantId(), "event_id", d.GetEventId(), "endpoint_id", d.GetEndpointId(),
		"delivery_id", d.GetId())
	ep, err := h.Endpoints.Get(ctx, d.GetEndpointId())
	if err != nil {
		log.Warn("look up endpoint, will retry", "err", err)
		_ = msg.NakWithDelay(FailedDelay)
		return
	}
	switch {
	case ep == nil || ep.GetDeleted():
		h.deadWithoutAttempt(ctx, msg, d, delivery.ReasonEndpointDeleted, log)
		return
	case ep.GetDisabled():
		h.deadWithoutAttempt(ctx, msg, d, delivery.ReasonEndpointDisabled, log)
		return
	}

	ctx = telemetry.Extract(ctx, msg.Headers())
	n := d.GetAttempts() + 1
	ctx, span := h.tracer.Start(ctx, "deliver", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("hookline.endpoint_id", ep.GetId()),
		attribute.String("hookline.event_id", d.GetEventId()),
		attribute.Int("hookline.attempt", int(n)),
		attribute.String("server.address", host(ep.GetUrl())),
	))
	defer span.End()

	now := time.Now()
	res := h.Sender.Send(ctx, ep, d, now)
	if ctx.Err() != nil {
		// Stopping: the attempt was cut short by us, not by the endpoint.
		_ = msg.Nak()
		return
	}
	out := delivery.Classify(res.Response, res.Err, now)
	if out.StatusCode != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", out.StatusCode))
	}
	if out.Kind != delivery.Succeeded {
		span.SetStatus(codes.Error, out.Error)
	}

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
	next := proto.CloneOf(d)
	next.Attempts = n
	next.LastStatusCode = uint32(out.StatusCode) //nolint:gosec // HTTP status
	next.LastError = out.Error

	log = log.With("attempt", n)
	switch out.Kind {
	case delivery.Succeeded:
		outcome.Status = hooklinev1.DeliveryStatus_DELIVERY_STATUS_SUCCEEDED
		h.settle(ctx, msg, log, outcome, nil)
		log.Debug("delivered", "status_code", out.StatusCode)
		return
	case delivery.Retry:
		delay, ok := delivery.NextDelay(delivery.Schedule(ep.GetRetryScheduleMs()), int(n), out.RetryAfter, rand.Float64()) //nolint:gosec // jitter
		if ok {
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
			err := h.Park(pctx, next, time.Now().Add(delay))
			cancel()
			if err != nil {
				log.Warn("park retry, attempt will be repeated", "err", err)
				_ = msg.NakWithDelay(ParkFailedDelay)
				return
			}
			outcome.Status = hooklinev1.DeliveryStatus_DELIVERY_STATUS_PENDING
			h.settle(ctx, msg, log, outcome, nil)
			log.Info("attempt failed, retry parked", "err", out.Error, "retry_in", delay.String())
			return
		}
		out.Reason = delivery.ReasonExhausted
	case delivery.Dead:
		if out.DisableEndpoint {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
			if err := h.Disable(dctx, ep.GetId()); err != nil {
				log.Error("disable endpoint after 410 Gone", "err", err)
			} else {
				log.Warn("endpoint answered 410 Gone, disabled")
			}
			cancel()
		}
	}
	outcome.Status = hooklinev1.DeliveryStatus_DELIVERY_STATUS_DEAD
	dl := &hooklinev1.DeadLetter{
		Delivery:       next,
		Reason:         out.Reason,
		Attempts:       n,
		LastStatusCode: next.GetLastStatusCode(),
		LastError:      next.GetLastError(),
		DeadAt:         timestamppb.New(apitime.Now()),
	}
	h.settle(ctx, msg, log, outcome, dl)
	log.Info("delivery dead", "reason", out.Reason, "err", out.Error)
}

// settle publishes the attempt's outcome (and dead letter) and, once both
// are acknowledged by JetStream, acknowledges msg.
func (h *Handler) settle(ctx context.Context, msg jetstream.Msg, log *slog.Logger, o *hooklinev1.AttemptOutcome, dl *hooklinev1.DeadLetter) {
	var msgs []*nats.Msg
	if o != nil {
		b, err := proto.Marshal(o)
		if err != nil {
			log.Error("encode attempt outcome", "err", err)
			_ = msg.NakWithDelay(FailedDelay)
			return
		}
		msgs = append(msgs, bus.NewMsg(bus.AttemptSubject(o.GetTenantId(), o.GetEndpointId()), bus.AttemptMsgID(o.GetDeliveryId(), o.GetAttempt()), b))
	}
	if dl != nil {
		b, err := proto.Marshal(dl)
		if err != nil {
			log.Error("encode dead letter", "err", err)
			_ = msg.NakWithDelay(FailedDelay)
			return
		}
		d := dl.GetDelivery()
		m := bus.NewMsg(bus.DeadSubject(d.GetTenantId(), d.GetEndpointId()), bus.DeadMsgID(d.GetId(), dl.GetAttempts()), b)
		telemetry.Inject(ctx, m.Header)
		msgs = append(msgs, m)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	if err := bus.PublishAll(pctx, h.JS, msgs...); err != nil {
		log.Warn("publish attempt outcome, will retry", "err", err)
		_ = msg.NakWithDelay(FailedDelay)
		return
	}
	if err := msg.Ack(); err != nil {
		log.Warn("ack delivery", "err", err)
	}
}

// deadWithoutAttempt dead-letters d without attempting it (its endpoint is
// disabled or gone).
func (h *Handler) deadWithoutAttempt(ctx context.Context, msg jetstream.Msg, d *hooklinev1.Delivery, reason string, log *slog.Logger) {
	dl := &hooklinev1.DeadLetter{
		Delivery:       d,
		Reason:         reason,
		Attempts:       d.GetAttempts(),
		LastStatusCode: d.GetLastStatusCode(),
		LastError:      d.GetLastError(),
		DeadAt:         timestamppb.New(apitime.Now()),
	}
	ctx = telemetry.Extract(ctx, msg.Headers())
	h.settle(ctx, msg, log, nil, dl)
	log.Info("delivery dead without attempt", "reason", reason)
}

func host(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Hostname()
}
