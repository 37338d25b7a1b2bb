// Package outcomes publishes attempt outcomes to JetStream in groups: the
// outcomes that callers hand in while a publish is on its way travel
// together, as one hooklinev1.AttemptOutcomes message on
// [bus.AttemptBatchSubject], so that a busy dispatcher stores, delivers and
// acknowledges one message per group instead of one per attempt. A lone
// caller waits at most the linger (5 ms by default) for others to join its
// group, and an urgent one (a key's head, whose successor waits for it)
// for nothing. The linger costs a delivery's acknowledgement a few
// milliseconds, never its webhook: the attempt is over. At a moderate rate
// it turns a message per attempt into one per few milliseconds.
//
// A caller's Publish returns only once JetStream acknowledged the message
// holding its outcome, so a delivery is still acknowledged only after its
// outcome is durable.
package outcomes

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/bus"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// AsyncPublisher is the part of jetstream.JetStream a Batcher uses.
type AsyncPublisher interface {
	PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

// Defaults: how many outcomes and bytes one message holds at most, and how
// many messages are on their way at once.
const (
	DefaultMaxOutcomes = 256
	DefaultMaxBytes    = 256 << 10
	DefaultInFlight    = 4
	DefaultLinger      = 5 * time.Millisecond
	publishTimeout     = 10 * time.Second
)

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("outcome batcher closed")

// Batcher groups outcomes into messages. Start it before the first Publish
// and Close it once no Publish is running.
type Batcher struct {
	js          AsyncPublisher
	maxOutcomes int
	maxBytes    int
	inFlight    int
	timeout     time.Duration
	// Linger is how long a group that is not full waits for more outcomes
	// once none is queued; 0 waits for nothing. Set it before Start.
	Linger time.Duration

	reqs chan *request
	// collecting is held by the goroutine gathering the next group, so
	// that groups are gathered one at a time (and published up to
	// inFlight at a time). It guards carry: the request that did not fit
	// in the last group, which starts the next one, whichever goroutine
	// gathers it (a goroutine that kept it for itself could wait for the
	// lock forever while another, holding it, waits for a request).
	collecting sync.Mutex
	carry      *request
	mu         sync.RWMutex
	closed     bool
	wg         sync.WaitGroup
}

type request struct {
	outcome     *hooklinev1.AttemptOutcome
	traceparent string
	size        int
	urgent      bool
	done        chan error
}

// New returns a Batcher publishing through js with the defaults.
func New(js AsyncPublisher) *Batcher {
	return &Batcher{
		js:          js,
		maxOutcomes: DefaultMaxOutcomes,
		maxBytes:    DefaultMaxBytes,
		inFlight:    DefaultInFlight,
		timeout:     publishTimeout,
		Linger:      DefaultLinger,
		reqs:        make(chan *request, 4096),
	}
}

// Start starts the publishing goroutines.
func (b *Batcher) Start() {
	for range b.inFlight {
		b.wg.Go(b.run)
	}
}

// Close lets the goroutines finish what was handed in and waits for them.
// Publish calls that start afterwards fail with ErrClosed.
func (b *Batcher) Close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.reqs)
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// Publish hands o in and waits until JetStream acknowledged the message that
// holds it, or ctx ends (then the outcome may still be published: writing it
// to the attempt log again changes nothing). traceparent is the W3C trace
// context of the attempt, or "". An urgent outcome ends the linger of its
// group: its group goes as soon as it is gathered.
func (b *Batcher) Publish(ctx context.Context, o *hooklinev1.AttemptOutcome, traceparent string, urgent bool) error {
	r := &request{outcome: o, traceparent: traceparent, size: proto.Size(o) + len(traceparent) + 8, urgent: urgent, done: make(chan error, 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return ErrClosed
	}
	select {
	case b.reqs <- r:
		b.mu.RUnlock()
	case <-ctx.Done():
		b.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run publishes groups until the request channel is closed and drained: it
// gathers a group (see gather) and publishes it as one message, waiting for
// its acknowledgement while another goroutine gathers the next.
func (b *Batcher) run() {
	var group []*request
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		b.collecting.Lock()
		var ok bool
		group, ok = b.gather(group[:0], linger)
		b.collecting.Unlock()
		if len(group) > 0 {
			err := b.publish(group)
			for _, r := range group {
				r.done <- err
			}
		}
		if !ok {
			return
		}
	}
}

// gather, called with b.collecting held, starts a group with b.carry or
// waits for a request, then takes what else is queued, up to the limits
// (a request that does not fit becomes b.carry); when the queue runs dry
// first, it waits up to the linger for more, unless a request in the group
// is urgent. It returns false once the channel is closed and drained.
func (b *Batcher) gather(group []*request, linger *time.Timer) ([]*request, bool) {
	if b.carry != nil {
		group, b.carry = append(group, b.carry), nil
	} else {
		r, ok := <-b.reqs
		if !ok {
			return group, false
		}
		group = append(group, r)
	}
	size, urgent := group[0].size, group[0].urgent
	var deadline <-chan time.Time
	defer linger.Stop()
	for len(group) < b.maxOutcomes {
		var (
			r  *request
			ok bool
		)
		select {
		case r, ok = <-b.reqs:
		default:
			if urgent || b.Linger <= 0 {
				return group, true
			}
			if deadline == nil {
				linger.Reset(b.Linger)
				deadline = linger.C
			}
			select {
			case r, ok = <-b.reqs:
			case <-deadline:
				return group, true
			}
		}
		if !ok {
			return group, false
		}
		if size+r.size > b.maxBytes {
			b.carry = r
			return group, true
		}
		group = append(group, r)
		size += r.size
		urgent = urgent || r.urgent
	}
	return group, true
}

// publish sends group as one message and waits for its acknowledgement.
func (b *Batcher) publish(group []*request) error {
	msg := &hooklinev1.AttemptOutcomes{
		Outcomes:     make([]*hooklinev1.AttemptOutcome, len(group)),
		Traceparents: make([]string, len(group)),
	}
	ids := make([]string, len(group))
	attempts := make([]uint32, len(group))
	for i, r := range group {
		msg.Outcomes[i], msg.Traceparents[i] = r.outcome, r.traceparent
		ids[i], attempts[i] = r.outcome.GetDeliveryId(), r.outcome.GetAttempt()
	}
	data, err := proto.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode %d attempt outcomes: %w", len(group), err)
	}
	f, err := b.js.PublishMsgAsync(bus.NewMsg(bus.AttemptBatchSubject, bus.AttemptBatchMsgID(ids, attempts), data))
	if err != nil {
		return fmt.Errorf("publish %d attempt outcomes: %w", len(group), err)
	}
	t := time.NewTimer(b.timeout)
	defer t.Stop()
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return fmt.Errorf("publish %d attempt outcomes: %w", len(group), err)
	case <-t.C:
		return fmt.Errorf("publish %d attempt outcomes: no acknowledgement within %s", len(group), b.timeout)
	}
}
