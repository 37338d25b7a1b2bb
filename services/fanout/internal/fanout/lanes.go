package fanout

import (
	"context"
	"hash/fnv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
)

// Lanes process keyless event messages concurrently on a fixed number of
// goroutines (lanes), each handling one message at a time: messages on a
// keyless subject ("_") go to the lanes in turn. Keyed events do not come
// here (their partition subjects go through pkg/keylane, which waits for
// each message to be its subject's head); should a message of another
// subject ever come, its subject is pinned to one lane, which keeps that
// subject's messages in order.
type Lanes struct {
	handle   func(context.Context, jetstream.Msg)
	lanes    []chan jetstream.Msg
	stopping atomic.Bool
	next     atomic.Uint64
	wg       sync.WaitGroup
}

// NewLanes returns n lanes, each queueing up to depth messages, that hand
// messages to handle.
func NewLanes(n, depth int, handle func(context.Context, jetstream.Msg)) *Lanes {
	l := &Lanes{handle: handle, lanes: make([]chan jetstream.Msg, n)}
	for i := range l.lanes {
		l.lanes[i] = make(chan jetstream.Msg, depth)
	}
	return l
}

// Start runs the lanes; handlers get ctx.
func (l *Lanes) Start(ctx context.Context) {
	for _, ch := range l.lanes {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for msg := range ch {
				if l.stopping.Load() {
					// Not started yet: hand it back at once rather than
					// after the ack wait.
					_ = msg.Nak()
					continue
				}
				l.handle(ctx, msg)
			}
		}()
	}
}

// Dispatch queues msg on its subject's lane, blocking while that lane is full.
// It must not be called concurrently with [Lanes.Stop].
func (l *Lanes) Dispatch(msg jetstream.Msg) {
	l.lanes[l.laneOf(msg.Subject())] <- msg
}

func (l *Lanes) laneOf(subject string) int {
	n := uint64(len(l.lanes))
	if strings.HasSuffix(subject, "."+bus.NoKey) {
		return int(l.next.Add(1) % n) //nolint:gosec // < len(lanes)
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(subject))
	return int(h.Sum64() % n) //nolint:gosec // < len(lanes)
}

// Stop takes no more messages: messages already being handled finish, queued
// ones are NAKed. Call [Lanes.Wait] to wait for the handlers.
func (l *Lanes) Stop() {
	l.stopping.Store(true)
	for _, ch := range l.lanes {
		close(ch)
	}
}

// Wait waits up to timeout for every lane to finish and reports whether they
// did.
func (l *Lanes) Wait(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}
