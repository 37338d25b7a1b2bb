package events

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/ids"
	"github.com/hookline/hookline/pkg/ops"
	"github.com/hookline/hookline/pkg/telemetry"
)

// HealthIntake is the readiness flag set while the intake consumes.
const HealthIntake = "intake_consuming"

// Intake consumer settings: a message is worked on for at most a publish
// timeout plus a database round trip, far below the ack wait.
const (
	intakeAckWait       = 60 * time.Second
	intakeMaxAckPending = 1000
	intakeWorkTimeout   = 30 * time.Second
	rejectPayloadBytes  = 4 << 10
)

// RunIntake consumes HOOKLINE_INTAKE until ctx ends, then stops fetching,
// finishes the messages in hand (within the shutdown timeout; what is left is
// NAKed) and returns nil.
func (s *Service) RunIntake(ctx context.Context, health *ops.Health) error {
	setHealth := func(ok bool) {
		if health != nil {
			health.Set(HealthIntake, ok)
		}
	}
	setHealth(false)
	defer setHealth(false)

	delay := 500 * time.Millisecond
	for ctx.Err() == nil {
		restart, err := s.consume(ctx, setHealth)
		setHealth(false)
		if !restart {
			return nil
		}
		s.log.WarnContext(ctx, "intake consumer stopped, restarting", "err", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
	return nil
}

// consume runs one consumer subscription until ctx ends (restart false) or
// the subscription fails (restart true).
func (s *Service) consume(ctx context.Context, setHealth func(bool)) (restart bool, err error) {
	// Handlers outlive ctx by up to the shutdown timeout, so they finish
	// what they hold instead of NAKing it.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := bus.EnsureConsumer(cctx, s.js, bus.StreamIntake,
		bus.Consumer(bus.ConsumerIngest, intakeAckWait, intakeMaxAckPending))
	cancel()
	if err != nil {
		return true, err
	}

	lanes := make([]chan jetstream.Msg, s.intakeLanes)
	var wg sync.WaitGroup
	for i := range lanes {
		// A lane can hold every message the consumer may have in flight,
		// so the consume callback never blocks.
		lanes[i] = make(chan jetstream.Msg, intakeMaxAckPending)
		wg.Go(func() {
			for msg := range lanes[i] {
				s.handleIntake(workCtx, msg)
			}
		})
	}
	var mu sync.RWMutex
	closed := false
	var rr atomic.Uint64
	failed := make(chan error, 1)

	cc, err := cons.Consume(func(msg jetstream.Msg) {
		mu.RLock()
		defer mu.RUnlock()
		if closed {
			return // not acked: redelivered after the ack wait
		}
		lanes[s.lane(msg, &rr)] <- msg
	}, jetstream.PullMaxMessages(500), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			select {
			case failed <- err:
			default:
			}
		}
	}))
	if err != nil {
		mu.Lock()
		closed = true
		for _, l := range lanes {
			close(l)
		}
		mu.Unlock()
		wg.Wait()
		return true, fmt.Errorf("consume %s: %w", bus.StreamIntake, err)
	}
	setHealth(true)

	select {
	case <-ctx.Done():
		restart = false
	case err = <-failed:
		restart = true
	}
	setHealth(false)

	// Stop fetching, let the buffered messages reach the lanes, then let
	// the lanes finish within the shutdown timeout.
	cc.Drain()
	select {
	case <-cc.Closed():
	case <-time.After(s.cfg.ShutdownTimeout):
		cc.Stop()
	}
	mu.Lock()
	closed = true
	for _, l := range lanes {
		close(l)
	}
	mu.Unlock()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.ShutdownTimeout):
		// Overran: handlers see their context end and NAK what they hold.
		cancelWork()
		<-done
	}
	return restart, err
}

// lane picks the worker of a message: messages sharing a tenant and
// ordering key share a lane and are handled in order; others spread out.
func (s *Service) lane(msg jetstream.Msg, rr *atomic.Uint64) int {
	key := msg.Headers().Get(bus.HeaderOrderingKey)
	if key == "" {
		return int(rr.Add(1) % uint64(len2(s.intakeLanes)))
	}
	tenant, _, _ := bus.ParsePublishSubject(msg.Subject())
	h := fnv.New64a()
	_, _ = h.Write([]byte(tenant))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(key))
	return int(h.Sum64() % uint64(len2(s.intakeLanes)))
}

func len2(n int) int { return max(n, 1) }

// handleIntake accepts one NATS message, records it as rejected, or NAKs it.
func (s *Service) handleIntake(workCtx context.Context, msg jetstream.Msg) {
	ctx, cancel := context.WithTimeout(workCtx, intakeWorkTimeout)
	defer cancel()
	ctx = telemetry.Extract(ctx, msg.Headers())
	subject := msg.Subject()
	ctx, span := s.tracer.Start(ctx, "receive "+bus.StreamIntake, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", subject)))
	defer span.End()

	hdr := msg.Headers()
	tenant, typ, ok := bus.ParsePublishSubject(subject)
	if !ok {
		// hookline.publish.<tenant> without a type.
		tenant = strings.TrimPrefix(subject, bus.PublishPrefix)
	}
	in := Input{
		TenantID:    tenant,
		ID:          hdr.Get(bus.HeaderMsgID),
		Type:        typ,
		Data:        msg.Data(),
		OrderingKey: hdr.Get(bus.HeaderOrderingKey),
		Source:      "nats",
	}
	var err error
	if ok {
		_, err = s.Accept(ctx, in)
	} else {
		err = httpapi.Invalid(httpapi.FieldError{Field: "type", Message: "the subject names no event type: publish to hookline.publish.<tenant>.<type>"})
		s.metrics.EventsRejected.WithLabelValues(sourceLabel(in.Source), "invalid_type").Inc()
	}
	if err == nil {
		if err := msg.Ack(); err != nil {
			s.log.WarnContext(ctx, "ack intake message", "err", err, "subject", subject)
		}
		return
	}
	var p *httpapi.Problem
	if errors.As(err, &p) && p.Status >= 400 && p.Status < 500 {
		if rerr := s.reject(ctx, in, subject, p); rerr != nil {
			s.log.WarnContext(ctx, "record rejected event", "err", rerr, "subject", subject)
			s.nak(ctx, msg)
			return
		}
		if err := msg.Ack(); err != nil {
			s.log.WarnContext(ctx, "ack rejected intake message", "err", err, "subject", subject)
		}
		return
	}
	span.SetStatus(codes.Error, "not accepted, will retry")
	s.log.WarnContext(ctx, "intake message not accepted, will retry", "err", err, "subject", subject, "tenant_id", tenant)
	s.nak(ctx, msg)
}

func (s *Service) nak(ctx context.Context, msg jetstream.Msg) {
	if err := msg.NakWithDelay(s.nakDelay); err != nil {
		s.log.WarnContext(ctx, "nak intake message", "err", err, "subject", msg.Subject())
	}
}

// rejectReason maps a validation problem to the reason slug recorded.
func rejectReason(p *httpapi.Problem) string {
	switch p.Status {
	case http.StatusNotFound:
		return "unknown_tenant"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	}
	if len(p.Errors) > 0 {
		switch p.Errors[0].Field {
		case "type":
			return "invalid_type"
		case "data":
			return "invalid_json"
		case "id":
			return "invalid_id"
		case "ordering_key":
			return "invalid_ordering_key"
		}
	}
	return "invalid"
}

// reject records a message that failed validation.
func (s *Service) reject(ctx context.Context, in Input, subject string, p *httpapi.Problem) error {
	reason := rejectReason(p)
	detail := p.Detail
	if reason == "unknown_tenant" {
		detail = fmt.Sprintf("tenant %q does not exist", in.TenantID)
	}
	if len(p.Errors) > 1 {
		var parts []string
		for _, fe := range p.Errors {
			parts = append(parts, fe.Field+": "+fe.Message)
		}
		detail = strings.Join(parts, "; ")
	}
	payload := in.Data
	if len(payload) > rejectPayloadBytes {
		payload = payload[:rejectPayloadBytes]
	}
	_, err := s.pool.Exec(ctx, `
INSERT INTO rejected_events (id, tenant_id, subject, event_type, event_id, reason, detail, size_bytes, payload, received_at)
VALUES ($1, NULLIF($2, ''), $3, NULLIF($4, ''), NULLIF($5, ''), $6, $7, $8, $9, $10)`,
		ids.New(ids.Reject), text(in.TenantID, 256), text(subject, 1024), text(in.Type, 256), text(in.ID, 256),
		reason, text(detail, 1024), len(in.Data), payload, apitime.Now())
	if err != nil {
		return fmt.Errorf("insert rejected event: %w", err)
	}
	return nil
}

// text makes an untrusted value storable as PostgreSQL text: valid UTF-8,
// without NUL, at most n bytes.
func text(v string, n int) string {
	v = strings.ReplaceAll(strings.ToValidUTF8(v, "\uFFFD"), "\x00", "")
	if len(v) <= n {
		return v
	}
	v = v[:n]
	for !utf8.ValidString(v) {
		v = v[:len(v)-1]
	}
	return v
}
