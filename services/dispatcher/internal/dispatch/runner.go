package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/keylane"
	"github.com/hookline/hookline/pkg/natsconn"
	"github.com/hookline/hookline/pkg/workpool"
)

// InProgressEvery is how often a delivery being worked on (waiting for a slot
// or a rate limit, or in its HTTP attempt) tells JetStream it is still held,
// so its ack wait does not run out.
const InProgressEvery = 10 * time.Second

// workerIdle is how long a handler goroutine waits for the next delivery
// before it ends.
const workerIdle = 10 * time.Second

// Runner takes delivery messages from a consumer and handles each on a
// goroutine of its own while it runs (kept for later deliveries), within
// [Limits]. The consumer's MaxAckPending bounds the
// goroutines. Deliveries that must keep their key's order go through
// per-subject lanes and are attempted only as the head of their subject.
type Runner struct {
	h      *Handler
	limits *Limits
	lanes  *keylane.Lanes
	log    *slog.Logger
	wg     sync.WaitGroup
	// workers run the handlers of deliveries, ordered or not.
	workers *workpool.Pool

	// Settled, when set, tells which deliveries the attempt log shows as
	// settled, for a redelivered message of several (see
	// [Runner.workGroup]); *attemptlog.Settled with a pool implements it.
	Settled func(ctx context.Context, ids []string) (map[string]bool, error)

	// stopWaiting ends waits for a slot: a delivery not yet started when
	// the dispatcher stops is handed back at once.
	stopWaiting context.Context
	stop        context.CancelFunc
}

// NewRunner returns a Runner; head finds the head of a delivery subject.
func NewRunner(h *Handler, limits *Limits, head keylane.HeadFunc, log *slog.Logger) *Runner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runner{h: h, limits: limits, log: log, stopWaiting: ctx, stop: cancel, workers: workpool.New(workerIdle)}
	r.lanes = keylane.New(head, r.workOrdered, log)
	r.lanes.Disconnects = natsconn.Disconnects
	return r
}

// Consume hands its messages to handlers running with workCtx until the
// iterator is closed.
func (r *Runner) Consume(workCtx context.Context, it jetstream.MessagesContext) {
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			r.lanes.Break()
			r.log.Warn("fetch deliveries", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		o := r.lanes.Observe(msg, !strings.HasSuffix(msg.Subject(), "."+bus.NoKey))
		r.wg.Add(1)
		r.workers.Go(func() { r.work(workCtx, msg, o) })
	}
}

// keepAlive tells JetStream msg is still being worked on until stop is
// called, so a wait for a slot or a rate limit does not outlast AckWait.
//
// It is a timer, not a goroutine: most deliveries finish long before the
// first heartbeat.
func keepAlive(msg jetstream.Msg) (stop func()) {
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(InProgressEvery, func() {
		_ = msg.InProgress()
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(InProgressEvery)
		}
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// work handles msg, observed as o: it goes to its subject's lane when its
// key's order must be kept, and is handled at once otherwise; a message of
// several deliveries is handled by [Runner.workGroup].
func (r *Runner) work(ctx context.Context, msg jetstream.Msg, o keylane.Observed) {
	defer r.wg.Done()
	laned := false
	defer func() {
		if !laned {
			r.lanes.Forget(msg, o)
		}
	}()
	if msg.Headers().Get(bus.HeaderDeliveries) != "" {
		r.workGroup(ctx, msg)
		return
	}
	d, ok := Decode(msg, r.log)
	if !ok {
		return
	}
	ep, err := r.h.Endpoints.Get(ctx, d.GetEndpointId())
	if err != nil {
		r.log.Warn("look up endpoint, will retry", "endpoint_id", d.GetEndpointId(), "err", err)
		_ = msg.NakWithDelay(FailedDelay)
		return
	}
	if Ordered(ep, d) {
		r.lanes.Add(ctx, msg, o)
		laned = true
		return
	}
	stop := keepAlive(msg)
	defer stop()
	release, ok := r.limits.Acquire(r.stopWaiting, d.GetEndpointId())
	if !ok {
		_ = msg.Nak()
		return
	}
	release = once(release)
	defer release()
	r.h.handle(ctx, msg, d, ep, release)
}

// once returns f made safe to call more than once: only the first call runs.
func once(f func()) func() {
	var o sync.Once
	return func() { o.Do(f) }
}

// workOrdered handles the head of a key's subject on a worker, and waits for
// it: the lane's goroutine (one per subject, short-lived) then never grows
// its stack through the HTTP client.
func (r *Runner) workOrdered(ctx context.Context, msg jetstream.Msg) {
	done := make(chan struct{})
	r.workers.Go(func() {
		defer close(done)
		r.handleHead(ctx, msg)
	})
	<-done
}

// handleHead handles the head of a key's subject.
func (r *Runner) handleHead(ctx context.Context, msg jetstream.Msg) {
	d, ok := Decode(msg, r.log)
	if !ok {
		return
	}
	stop := keepAlive(msg)
	defer stop()
	release, ok := r.limits.Acquire(r.stopWaiting, d.GetEndpointId())
	if !ok {
		_ = msg.Nak()
		return
	}
	release = once(release)
	defer release()
	r.h.handleOrdered(ctx, msg, d, release)
}

// HeadChecks returns how many heads of ordered deliveries' subjects were
// looked up, and how many were known without a lookup.
func (r *Runner) HeadChecks() (lookups, known uint64) { return r.lanes.Counts() }

// Stop hands back deliveries still waiting for a slot or for their turn;
// those being attempted continue. Call it after the iterator is closed.
func (r *Runner) Stop() {
	r.stop()
	r.lanes.Stop()
}

// Wait waits up to timeout for every handler to return and reports whether
// they did.
func (r *Runner) Wait(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { r.wg.Wait(); r.lanes.Wait(timeout); close(done) }()
	select {
	case <-done:
		r.workers.Close()
		return true
	case <-time.After(timeout):
		return false
	}
}
