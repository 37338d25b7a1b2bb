package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/bus"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// maxHandBackDelay bounds how long a message of several deliveries is held,
// once all are settled, before those that asked for a delayed redelivery are
// handed back.
const maxHandBackDelay = ParkFailedDelay

// workGroup handles a message of several keyless deliveries to one endpoint
// (see [bus.HeaderDeliveries]). Each delivery is handled as if it had come
// alone, within [Limits], and the message is acknowledged once every one is
// settled. A delivery that would have been handed back to JetStream (the
// dispatcher is stopping, or its retry could not be stored) is published
// again as a message of its own first, so that the others are not attempted
// again. Only when that publish fails is the whole message handed back.
// A message redelivered (its replica was killed part-way) skips what the
// attempt log shows the earlier handling settled.
func (r *Runner) workGroup(ctx context.Context, msg jetstream.Msg) {
	g := &hooklinev1.Deliveries{}
	if err := proto.Unmarshal(msg.Data(), g); err != nil || len(g.GetDeliveries()) == 0 {
		r.log.Error("undecodable deliveries message, dropped", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	stop := keepAlive(msg)
	defer stop()
	settled := r.settledBefore(msg, g)
	parts := make([]*part, len(g.GetDeliveries()))
	var (
		wg sync.WaitGroup
		// The deliveries share an endpoint (fan-out groups them by
		// subject): it is looked up once per run of one endpoint id.
		epID  string
		ep    *hooklinev1.Endpoint
		epErr error
	)
	for i, d := range g.GetDeliveries() {
		p := &part{group: msg, d: d}
		if i < len(g.GetTraceparents()) && g.GetTraceparents()[i] != "" {
			p.header = nats.Header{"traceparent": []string{g.GetTraceparents()[i]}}
		}
		parts[i] = p
		if d.GetId() == "" || d.GetEndpointId() == "" {
			r.log.Error("delivery without id or endpoint in a deliveries message, dropped", "subject", msg.Subject(), "index", i)
			_ = p.Term()
			continue
		}
		if settled[d.GetId()] {
			_ = p.Ack()
			continue
		}
		if d.GetEndpointId() != epID {
			epID = d.GetEndpointId()
			ep, epErr = r.h.Endpoints.Get(ctx, epID)
			if epErr != nil {
				r.log.Warn("look up endpoint, will retry", "endpoint_id", epID, "err", epErr)
			}
		}
		if epErr != nil {
			_ = p.NakWithDelay(FailedDelay)
			continue
		}
		ep := ep
		release, ok := r.limits.Acquire(r.stopWaiting, d.GetEndpointId())
		if !ok {
			_ = p.Nak()
			continue
		}
		release = once(release)
		wg.Add(1)
		r.workers.Go(func() {
			defer wg.Done()
			defer release()
			// Fan-out groups keyless deliveries only: nothing here has
			// a key's order to keep.
			r.h.handle(ctx, p, d, ep, release)
		})
	}
	wg.Wait()
	r.settleGroup(msg, parts)
}

// settledBefore returns the deliveries of g, a message delivered before
// (to a replica that did not acknowledge it: it was killed, say), that an
// earlier handling settled, as the attempt log shows them: they are not
// sent again. A first delivery, or no answer, skips nothing.
func (r *Runner) settledBefore(msg jetstream.Msg, g *hooklinev1.Deliveries) map[string]bool {
	if r.Settled == nil {
		return nil
	}
	meta, err := msg.Metadata()
	if err != nil || meta.NumDelivered < 2 {
		return nil
	}
	ids := make([]string, 0, len(g.GetDeliveries()))
	for _, d := range g.GetDeliveries() {
		ids = append(ids, d.GetId())
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	settled, err := r.Settled(ctx, ids)
	if err != nil {
		r.log.Warn("look up which deliveries of a redelivered deliveries message were settled; attempting them all", "subject", msg.Subject(), "err", err)
		return nil
	}
	if len(settled) > 0 {
		r.log.Info("redelivered deliveries message: skipping deliveries settled before", "subject", msg.Subject(),
			"settled", len(settled), "of", len(ids), "delivered", meta.NumDelivered)
	}
	return settled
}

// settleGroup acknowledges msg once the deliveries that asked to be
// redelivered are published again on their own.
func (r *Runner) settleGroup(msg jetstream.Msg, parts []*part) {
	var (
		back  []*part
		delay time.Duration
	)
	for _, p := range parts {
		if again, d := p.outcome(); again {
			back = append(back, p)
			delay = max(delay, d)
		}
	}
	if len(back) == 0 {
		if err := msg.Ack(); err != nil {
			r.log.Warn("ack deliveries message", "err", err)
		}
		return
	}
	// A delivery NAKed with a delay (its retry could not be stored) waits
	// here as it would have in JetStream; at shutdown nothing waits.
	if delay > 0 {
		t := time.NewTimer(min(delay, maxHandBackDelay))
		select {
		case <-t.C:
		case <-r.stopWaiting.Done():
		}
		t.Stop()
	}
	var seq uint64
	if meta, err := msg.Metadata(); err == nil {
		seq = meta.Sequence.Stream
	}
	msgs := make([]*nats.Msg, 0, len(back))
	for _, p := range back {
		b, err := proto.Marshal(p.d)
		if err != nil {
			r.log.Error("encode delivery to hand back; the whole message will be redelivered", "delivery_id", p.d.GetId(), "err", err)
			_ = msg.NakWithDelay(FailedDelay)
			return
		}
		m := bus.NewMsg(msg.Subject(), bus.HandedBackMsgID(p.d.GetId(), p.d.GetAttempts(), seq), b)
		for k, v := range p.header {
			m.Header[k] = v
		}
		msgs = append(msgs, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := bus.PublishAll(ctx, r.h.JS, msgs...); err != nil {
		r.log.Warn("hand back deliveries of a deliveries message; the whole message will be redelivered",
			"subject", msg.Subject(), "deliveries", len(back), "err", err)
		_ = msg.NakWithDelay(FailedDelay)
		return
	}
	if err := msg.Ack(); err != nil {
		r.log.Warn("ack deliveries message", "err", err)
	}
	r.log.Debug("deliveries of a deliveries message handed back on their own", "subject", msg.Subject(), "deliveries", len(back), "of", len(parts))
}

// part is one delivery of a message of several, settled on its own: it
// records what its handler decided instead of telling JetStream, and
// forwards only InProgress (for the whole message).
type part struct {
	group  jetstream.Msg
	d      *hooklinev1.Delivery
	header nats.Header

	mu      sync.Mutex
	settled bool
	again   bool
	delay   time.Duration
}

var _ jetstream.Msg = (*part)(nil)

// outcome reports whether p must be delivered again (it was NAKed, or
// never settled), and after what delay.
func (p *part) outcome() (again bool, delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.again || !p.settled, p.delay
}

// settle records the first decision; later ones fail, as JetStream's
// second acknowledgement of a message does.
func (p *part) settle(again bool, delay time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.settled {
		return jetstream.ErrMsgAlreadyAckd
	}
	p.settled, p.again, p.delay = true, again, delay
	return nil
}

func (p *part) Metadata() (*jetstream.MsgMetadata, error) { return p.group.Metadata() }

func (p *part) Data() []byte {
	b, _ := proto.Marshal(p.d)
	return b
}

func (p *part) Headers() nats.Header {
	if p.header == nil {
		return nats.Header{}
	}
	return p.header
}

func (p *part) Subject() string { return p.group.Subject() }
func (p *part) Reply() string   { return "" }
func (p *part) Ack() error      { return p.settle(false, 0) }

func (p *part) DoubleAck(context.Context) error { return p.settle(false, 0) }

func (p *part) Nak() error { return p.settle(true, 0) }

func (p *part) NakWithDelay(delay time.Duration) error { return p.settle(true, delay) }

func (p *part) InProgress() error { return p.group.InProgress() }

func (p *part) Term() error { return p.settle(false, 0) }

func (p *part) TermWithReason(string) error { return p.settle(false, 0) }
