package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// inProgressEvery is how often a delivery waiting for a slot tells JetStream
// it is still held, so its ack wait does not run out while it queues.
const inProgressEvery = 20 * time.Second

// Runner takes delivery messages from a consumer and handles each in its own
// goroutine, within [Limits]. The consumer's MaxAckPending bounds the
// goroutines.
type Runner struct {
	h      *Handler
	limits *Limits
	log    *slog.Logger
	wg     sync.WaitGroup

	// stopWaiting ends waits for a slot: a delivery not yet started when
	// the dispatcher stops is handed back at once.
	stopWaiting context.Context
	stop        context.CancelFunc
}

// NewRunner returns a Runner.
func NewRunner(h *Handler, limits *Limits, log *slog.Logger) *Runner {
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{h: h, limits: limits, log: log, stopWaiting: ctx, stop: cancel}
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
			r.log.Warn("fetch deliveries", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		r.wg.Add(1)
		go r.work(workCtx, msg)
	}
}

func (r *Runner) work(ctx context.Context, msg jetstream.Msg) {
	defer r.wg.Done()
	d, ok := Decode(msg, r.log)
	if !ok {
		return
	}
	waited := make(chan struct{})
	go func() {
		t := time.NewTicker(inProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-waited:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	release, ok := r.limits.Acquire(r.stopWaiting, d.GetEndpointId())
	close(waited)
	if !ok {
		_ = msg.Nak()
		return
	}
	defer release()
	r.h.Handle(ctx, msg, d)
}

// Stop hands back deliveries still waiting for a slot; those being attempted
// continue. Call it after the iterator is closed.
func (r *Runner) Stop() { r.stop() }

// Wait waits up to timeout for every handler to return and reports whether
// they did.
func (r *Runner) Wait(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}
