package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"os"
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
	"github.com/hookline/hookline/services/ingest/internal/lease"
)

// HealthIntake is the readiness flag of the NATS intake. It is true while
// the replica does its part: consuming HOOKLINE_INTAKE as the intake leader,
// or standing by as a follower while another replica holds the lease. It is
// false while the lease cannot be read or the leader cannot set up its
// consumer, and once the intake stopped.
const HealthIntake = "intake"

// Intake consumer settings: a message is worked on for at most a publish
// timeout plus a database round trip, far below the ack wait. A message
// retried in place is kept alive with InProgress.
const (
	intakeAckWait       = 60 * time.Second
	intakeMaxAckPending = 1000
	intakeWorkTimeout   = 30 * time.Second
	rejectPayloadBytes  = 4 << 10
)

// Intake leadership timing: the leader renews its lease every
// intakeRenewEvery (so two renews can fail before the bucket's TTL lets
// another replica in); a follower tries to take it every intakeAcquireEvery.
const (
	intakeRenewEvery   = bus.LeaseTTL * 3 / 10
	intakeAcquireEvery = 2 * time.Second
	intakeLeaseTimeout = 5 * time.Second
)

// Intake roles, as logged.
const (
	roleLeader   = "leader"
	roleFollower = "follower"
	roleNone     = "none"
)

// RunIntake takes part in the election of the one intake consumer of the
// cluster until ctx ends. Exactly one replica at a time (the holder of the
// lease [bus.LeaseIntake]) consumes HOOKLINE_INTAKE; the others stand by
// and take over within about [bus.LeaseTTL] when it dies. When ctx ends,
// the leader stops fetching, finishes the messages in hand (within the
// shutdown timeout), releases the lease and RunIntake returns nil.
func (s *Service) RunIntake(ctx context.Context, health *ops.Health) error {
	setHealth := func(ok bool) {
		if health != nil {
			health.Set(HealthIntake, ok)
		}
	}
	setHealth(false)
	defer setHealth(false)

	owner := intakeOwner()
	role := ""
	setRole := func(r string, attrs ...any) {
		if r != role {
			role = r
			s.log.InfoContext(ctx, "intake role", append([]any{"role", r, "owner", owner}, attrs...)...)
		}
	}
	defer setRole(roleNone)

	var l *lease.Lease
	delay := 500 * time.Millisecond
	retry := func(what string, err error, unhealthy bool) {
		if unhealthy {
			setHealth(false)
		}
		setRole(roleNone)
		s.log.WarnContext(ctx, what, "err", err, "retry_in", delay.String())
		sleep(ctx, delay)
		delay = min(delay*2, 10*time.Second)
	}
	for ctx.Err() == nil {
		if l == nil {
			cctx, cancel := context.WithTimeout(ctx, intakeLeaseTimeout)
			kv, err := bus.EnsureLeasesBucket(cctx, s.js, bus.Options{Replicas: s.cfg.StreamReplicas})
			cancel()
			if err != nil {
				retry("intake lease bucket unavailable, retrying", err, true)
				continue
			}
			l = lease.New(kv, bus.LeaseIntake, owner, bus.LeaseTTL)
		}
		cctx, cancel := context.WithTimeout(ctx, intakeLeaseTimeout)
		won, err := l.Acquire(cctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			retry("intake lease unreadable, retrying", err, true)
			continue
		case err != nil:
			continue
		case !won:
			setRole(roleFollower)
			setHealth(true) // following is this replica's whole intake job
			delay = 500 * time.Millisecond
			sleep(ctx, intakeAcquireEvery)
			continue
		}
		setRole(roleLeader)
		began := time.Now()
		err = s.lead(ctx, l, setHealth)
		if ctx.Err() != nil {
			break
		}
		if time.Since(began) > time.Minute {
			delay = 500 * time.Millisecond
		}
		// Losing the lease is no reason to fail readiness: the replica
		// still serves its API. A consumer that cannot be set up is
		// (consume turned the flag off).
		retry("intake leadership ended, contending again", err, false)
	}
	return nil
}

// intakeOwner names this process incarnation in the intake lease.
func intakeOwner() string {
	host, _ := os.Hostname()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// lead consumes HOOKLINE_INTAKE while l is held. It returns nil when ctx
// ended (after finishing the messages in hand and releasing the lease), or
// why leadership ended: the lease was lost or the consumer failed.
func (s *Service) lead(ctx context.Context, l *lease.Lease, setHealth func(bool)) error {
	// The lease is kept through a graceful shutdown, so the messages in
	// hand are finished under it; it is released after.
	keepCtx, stopKeep := context.WithCancel(context.WithoutCancel(ctx))
	lost := make(chan struct{})
	var lostErr error
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		if err := l.Keep(keepCtx, intakeRenewEvery); err != nil {
			lostErr = err
			close(lost)
		}
	}()
	leading := func() bool {
		select {
		case <-lost:
			return false
		default:
			return l.Held()
		}
	}

	err := s.consume(ctx, lost, leading, setHealth)
	stopKeep()
	<-kept
	if ctx.Err() != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), intakeLeaseTimeout)
		if rerr := l.Release(rctx); rerr != nil {
			s.log.WarnContext(ctx, "release intake lease", "err", rerr)
		}
		cancel()
		return nil
	}
	select {
	case <-lost:
		return errors.Join(lostErr, err)
	default:
	}
	return err
}

// consume restarts the intake consumer at the oldest unacknowledged message
// and works on it in per-key lanes until ctx ends (it returns nil), the lease
// is lost, or the consumer fails.
//
// A new leader must not trust the consumer it inherits: the previous
// leader's pull buffers and redelivery timers would hand out a key's
// messages in any order. Deleting and recreating it (DeliverAll on the
// WorkQueue stream) restarts delivery at the oldest message nobody acked, in
// stream order. What the previous leader had accepted but not acked comes
// again: Accept answers it as a duplicate, and publishes it again only if
// its outbox row is still there (JetStream drops the copy by its
// Nats-Msg-Id).
func (s *Service) consume(ctx context.Context, lost <-chan struct{}, leading func() bool, setHealth func(bool)) error {
	// Handlers outlive ctx by up to the shutdown timeout, so they finish
	// what they hold; they stop at once when the lease is lost.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	go func() {
		select {
		case <-lost:
			cancelWork()
		case <-workCtx.Done():
		}
	}()

	if !leading() {
		return errors.New("intake lease lost before the consumer was set up")
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := s.js.DeleteConsumer(cctx, bus.StreamIntake, bus.ConsumerIngest)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		cancel()
		setHealth(false)
		return fmt.Errorf("delete consumer %s on %s: %w", bus.ConsumerIngest, bus.StreamIntake, err)
	}
	cons, err := bus.EnsureConsumer(cctx, s.js, bus.StreamIntake,
		bus.Consumer(bus.ConsumerIngest, intakeAckWait, intakeMaxAckPending))
	cancel()
	if err != nil {
		setHealth(false)
		return err
	}

	lanes := make([]chan jetstream.Msg, s.intakeLanes)
	var wg sync.WaitGroup
	for i := range lanes {
		// A lane can hold every message the consumer may have in flight,
		// so the consume callback never blocks.
		lanes[i] = make(chan jetstream.Msg, intakeMaxAckPending)
		wg.Go(func() {
			for msg := range lanes[i] {
				s.work(workCtx, msg, leading)
			}
		})
	}
	var mu sync.RWMutex
	closed := false
	var rr atomic.Uint64
	failed := make(chan error, 1)
	closeLanes := func() {
		mu.Lock()
		closed = true
		for _, l := range lanes {
			close(l)
		}
		mu.Unlock()
	}

	cc, err := cons.Consume(func(msg jetstream.Msg) {
		mu.RLock()
		defer mu.RUnlock()
		if closed {
			return // not acked: the next leader's consumer delivers it again
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
		closeLanes()
		wg.Wait()
		setHealth(false)
		return fmt.Errorf("consume %s: %w", bus.StreamIntake, err)
	}
	setHealth(true)

	select {
	case <-ctx.Done():
		// Stop fetching, let the buffered messages reach the lanes, then
		// let the lanes finish within the shutdown timeout.
		cc.Drain()
		select {
		case <-cc.Closed():
		case <-lost:
			cc.Stop()
		case <-time.After(s.cfg.ShutdownTimeout):
			cc.Stop()
		}
	case <-lost:
		cc.Stop()
		err = errors.New("intake lease lost")
	case err = <-failed:
		// Deleted under us: another replica took the lease (this one was
		// paused past it) or an operator removed the consumer.
		cc.Stop()
		err = fmt.Errorf("intake consumer: %w", err)
	}
	closeLanes()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.ShutdownTimeout):
		// Overran: the lanes see their context end and leave what they
		// hold unacknowledged, for the next leader.
		cancelWork()
		<-done
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// work handles one message of a lane: accepted or rejected, then acked. A
// transient failure (the database or NATS unreachable) is retried in place,
// with a backoff, keeping the message alive with InProgress: moving on to
// the key's next message would reorder the key. The message is left
// unacknowledged when the lease is lost or the work context ends; the next
// leader's consumer delivers it again, in stream order.
func (s *Service) work(workCtx context.Context, msg jetstream.Msg, leading func() bool) {
	backoff := 50 * time.Millisecond
	maxBackoff := max(s.nakDelay, backoff)
	touched := time.Now()
	for attempt := 1; ; attempt++ {
		if workCtx.Err() != nil || !leading() {
			return
		}
		if !s.handleIntake(workCtx, msg, attempt) {
			return
		}
		sleep(workCtx, backoff)
		backoff = min(backoff*2, maxBackoff)
		if time.Since(touched) > intakeAckWait/4 && workCtx.Err() == nil {
			if err := msg.InProgress(); err != nil {
				s.log.WarnContext(workCtx, "extend intake message ack wait", "err", err, "subject", msg.Subject())
			}
			touched = time.Now()
		}
	}
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

// handleIntake accepts one NATS message or records it as rejected, and acks
// it. It answers true when a transient failure left the message unhandled
// (and unacknowledged): the caller retries it.
func (s *Service) handleIntake(workCtx context.Context, msg jetstream.Msg, attempt int) (retry bool) {
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
		return false
	}
	var p *httpapi.Problem
	if errors.As(err, &p) && p.Status >= 400 && p.Status < 500 {
		if rerr := s.reject(ctx, in, subject, p); rerr != nil {
			span.SetStatus(codes.Error, "rejection not recorded, will retry")
			s.log.WarnContext(ctx, "record rejected event, will retry", "err", rerr, "subject", subject, "attempt", attempt)
			return true
		}
		if err := msg.Ack(); err != nil {
			s.log.WarnContext(ctx, "ack rejected intake message", "err", err, "subject", subject)
		}
		return false
	}
	span.SetStatus(codes.Error, "not accepted, will retry")
	s.log.WarnContext(ctx, "intake message not accepted, will retry", "err", err, "subject", subject, "tenant_id", tenant, "attempt", attempt)
	return true
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
