// Package keylane works on the messages of a WorkQueue stream that share a
// subject one at a time, in stream order, and each only once it is the head
// of its subject: the oldest message the stream still stores for it. In a
// WorkQueue stream an acknowledged message is deleted, so the head is the
// oldest message nobody has finished; whichever replica holds it, the others
// wait. This is how per-key order holds across any number of replicas
// (docs/design/ordering.md).
package keylane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// HeadFunc returns the stream sequence of subject's head; found is false
// when the stream stores no message for subject.
type HeadFunc func(ctx context.Context, subject string) (seq uint64, found bool, err error)

// StreamHead is the HeadFunc of stream s: a STREAM.MSG.GET with next_by_subj
// from sequence 1.
func StreamHead(s jetstream.Stream) HeadFunc {
	return func(ctx context.Context, subject string) (uint64, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		m, err := s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("get head of %s: %w", subject, err)
		}
		return m.Sequence, true, nil
	}
}

// Waits between two checks of a head held elsewhere, and how often a waiting
// message tells JetStream it is still held.
const (
	minWait         = 5 * time.Millisecond
	maxWait         = 250 * time.Millisecond
	inProgressEvery = 10 * time.Second
)

// Lanes hold the messages a replica received, per subject, and hand each to
// Work once it is its subject's head. Messages of different subjects run
// concurrently, one goroutine per subject with messages waiting.
type Lanes struct {
	head HeadFunc
	work func(ctx context.Context, msg jetstream.Msg)
	log  *slog.Logger

	// stop ends the waits: waiting messages are handed back.
	stopWaiting context.Context
	stop        context.CancelFunc

	mu    sync.Mutex
	lanes map[string]map[uint64]jetstream.Msg
	wg    sync.WaitGroup
}

// New returns Lanes that call work for each head; work settles the message.
func New(head HeadFunc, work func(ctx context.Context, msg jetstream.Msg), log *slog.Logger) *Lanes {
	ctx, cancel := context.WithCancel(context.Background())
	return &Lanes{head: head, work: work, log: log, stopWaiting: ctx, stop: cancel, lanes: map[string]map[uint64]jetstream.Msg{}}
}

// Add queues msg on its subject's lane. work gets ctx. A message with a
// sequence already queued (a redelivery) replaces the earlier copy.
func (l *Lanes) Add(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		l.log.Error("message without metadata, handed back", "subject", msg.Subject(), "err", err)
		_ = msg.Nak()
		return
	}
	subject := msg.Subject()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopWaiting.Err() != nil {
		_ = msg.Nak()
		return
	}
	lane, ok := l.lanes[subject]
	if !ok {
		lane = map[uint64]jetstream.Msg{}
		l.lanes[subject] = lane
		l.wg.Add(1)
		go l.run(ctx, subject, lane)
	}
	lane[meta.Sequence.Stream] = msg
}

// next returns the lowest sequence of lane, or false after removing an empty
// lane (the caller's goroutine then ends).
func (l *Lanes) next(subject string, lane map[uint64]jetstream.Msg) (uint64, jetstream.Msg, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(lane) == 0 {
		delete(l.lanes, subject)
		return 0, nil, false
	}
	var low uint64
	first := true
	for seq := range lane {
		if first || seq < low {
			low, first = seq, false
		}
	}
	return low, lane[low], true
}

func (l *Lanes) remove(lane map[uint64]jetstream.Msg, seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(lane, seq)
}

func (l *Lanes) run(ctx context.Context, subject string, lane map[uint64]jetstream.Msg) {
	defer l.wg.Done()
	wait := minWait
	lastAlive := time.Now()
	for {
		seq, msg, ok := l.next(subject, lane)
		if !ok {
			return
		}
		if l.stopWaiting.Err() != nil {
			l.remove(lane, seq)
			_ = msg.Nak()
			continue
		}
		head, found, err := l.head(ctx, subject)
		switch {
		case err != nil:
			l.log.Warn("check head of subject, will retry", "subject", subject, "err", err)
			wait = maxWait
		case !found || head > seq:
			// Finished elsewhere: this was a redelivery of a message that
			// has been acknowledged since.
			l.remove(lane, seq)
			continue
		case head == seq:
			l.remove(lane, seq)
			l.work(ctx, msg)
			wait = minWait
			continue
		}
		// An older message of the subject is in flight elsewhere (or not
		// yet delivered here): wait for it.
		if time.Since(lastAlive) >= inProgressEvery {
			l.keepAlive(lane)
			lastAlive = time.Now()
		}
		select {
		case <-time.After(wait):
		case <-l.stopWaiting.Done():
		}
		wait = min(2*wait, maxWait)
	}
}

func (l *Lanes) keepAlive(lane map[uint64]jetstream.Msg) {
	l.mu.Lock()
	msgs := make([]jetstream.Msg, 0, len(lane))
	for _, m := range lane {
		msgs = append(msgs, m)
	}
	l.mu.Unlock()
	for _, m := range msgs {
		_ = m.InProgress()
	}
}

// Stop hands back every message still waiting; those being worked on
// continue. Call it after the consumer stopped delivering.
func (l *Lanes) Stop() { l.stop() }

// Wait waits up to timeout for every lane to end and reports whether they
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
