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
//
// A message is known to be the head without asking the stream when this
// replica itself finished its subject's previous head and no message of the
// subject can have gone to anyone else in between: see [Lanes.Observe].
type Lanes struct {
	head HeadFunc
	work func(ctx context.Context, msg jetstream.Msg)
	log  *slog.Logger

	// Disconnects, when set, counts the disconnections of the NATS
	// connection the consumer and the acknowledgements use: a disconnection
	// ends the run (an acknowledgement may have been lost with the old
	// connection).
	Disconnects func() uint64

	// stop ends the waits: waiting messages are handed back.
	stopWaiting context.Context
	stop        context.CancelFunc

	mu    sync.Mutex
	lanes map[string]map[uint64]entry
	wg    sync.WaitGroup
	// runs finds the runs of deliveries; transit counts, per subject, the
	// observed messages not yet added or forgotten; done is, per subject,
	// the head this replica last finished (acknowledged) in the current run.
	runs    runs
	transit map[string]int
	done    map[string]mark
	// lookups and skipped count head checks asked of the stream and
	// heads known without asking.
	lookups, skipped uint64
}

// entry is a message waiting in its lane, with the run it arrived in.
type entry struct {
	msg jetstream.Msg
	run Run
}

// mark is a head finished by this replica: its sequence, its run, and
// whether work left its subject clear (see [LeaveClear]).
type mark struct {
	seq   uint64
	run   Run
	clear bool
}

// maxDone bounds the finished heads remembered: beyond it they are
// forgotten (the next message of each subject is then looked up).
const maxDone = 1 << 16

// New returns Lanes that call work for each head; work settles the message.
func New(head HeadFunc, work func(ctx context.Context, msg jetstream.Msg), log *slog.Logger) *Lanes {
	ctx, cancel := context.WithCancel(context.Background())
	return &Lanes{head: head, work: work, log: log, stopWaiting: ctx, stop: cancel,
		lanes: map[string]map[uint64]entry{}, transit: map[string]int{}, done: map[string]mark{}}
}

// Observed is what [Lanes.Observe] learned of a message; the zero Observed
// is a message it did not see, always looked up.
type Observed struct {
	run     Run
	transit bool
}

// Observe must see every message the consumer delivers to this replica,
// keyed or not, in the order they are delivered, before anything else is
// done with them. keyed says whether msg may go to the lanes: it must then
// be passed to [Lanes.Add] or [Lanes.Forget] with what Observe returned.
//
// From the delivery metadata Observe finds runs: deliveries with
// consecutive consumer sequences, each a first delivery. A consumer
// delivers every message for the first time in stream order, so every
// message whose stream sequence lies between two messages of one run went,
// for the first time, to this replica within that run. When this replica
// finished (acknowledged) the head of a subject and later gets the next
// message of that subject in the same run, no message in between can be
// held or pending anywhere else: it is the head, and is handed to work
// without a lookup. A gap, a redelivery, an error of the consumer or a
// disconnection ends the run and everything remembered of it.
func (l *Lanes) Observe(msg jetstream.Msg, keyed bool) Observed {
	meta, err := msg.Metadata()
	l.mu.Lock()
	defer l.mu.Unlock()
	var o Observed
	if err == nil {
		o.run = l.runs.observe(meta, l.disconnects())
	} else {
		l.runs.brk()
	}
	l.forgetEndedRun()
	if keyed {
		l.transit[msg.Subject()]++
		o.transit = true
	}
	return o
}

// Break ends the current run: call it when the consumer reports an error
// (messages may have been lost on the way).
func (l *Lanes) Break() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs.brk()
	l.forgetEndedRun()
}

// forgetEndedRun forgets the finished heads of a run that ended: none of
// them can let a message skip its lookup any more.
func (l *Lanes) forgetEndedRun() {
	if l.runs.ended {
		clear(l.done)
		l.runs.ended = false
	}
}

// Forget tells the lanes that msg, observed as keyed, does not come to
// them (it was handled without order, or could not be handled). Its
// subject's next message is looked up.
func (l *Lanes) Forget(msg jetstream.Msg, o Observed) {
	if !o.transit {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.untransit(msg.Subject(), o)
	delete(l.done, msg.Subject())
}

func (l *Lanes) untransit(subject string, o Observed) {
	if !o.transit {
		return
	}
	if n := l.transit[subject] - 1; n > 0 {
		l.transit[subject] = n
	} else {
		delete(l.transit, subject)
	}
}

func (l *Lanes) disconnects() uint64 {
	if l.Disconnects == nil {
		return 0
	}
	return l.Disconnects()
}

// Counts returns how many heads were looked up and how many were known
// without a lookup.
func (l *Lanes) Counts() (lookups, skipped uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lookups, l.skipped
}

// Add queues msg on its subject's lane; o is what [Lanes.Observe] returned
// for it (the zero Observed when it was not observed). work gets ctx. A
// message with a sequence already queued (a redelivery) replaces the
// earlier copy.
func (l *Lanes) Add(ctx context.Context, msg jetstream.Msg, o Observed) {
	meta, err := msg.Metadata()
	subject := msg.Subject()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.untransit(subject, o)
	if err != nil {
		delete(l.done, subject)
		l.log.Error("message without metadata, handed back", "subject", subject, "err", err)
		_ = msg.Nak()
		return
	}
	if l.stopWaiting.Err() != nil {
		delete(l.done, subject)
		_ = msg.Nak()
		return
	}
	lane, ok := l.lanes[subject]
	if !ok {
		lane = map[uint64]entry{}
		l.lanes[subject] = lane
		l.wg.Add(1)
		go l.run(ctx, subject, lane)
	}
	lane[meta.Sequence.Stream] = entry{msg: msg, run: o.run}
}

// next returns the lowest sequence of lane, or false after removing an empty
// lane (the caller's goroutine then ends).
func (l *Lanes) next(subject string, lane map[uint64]entry) (uint64, entry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(lane) == 0 {
		delete(l.lanes, subject)
		return 0, entry{}, false
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

func (l *Lanes) remove(lane map[uint64]entry, seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(lane, seq)
}

// known reports whether e, the lowest message of subject's lane, is known
// to be the head without a lookup: it arrived in the current run, this
// replica finished the subject's previous head in that run, and no message
// of the subject observed here is still on its way to the lane. It counts
// the answer.
//
// cleared is whether work left the finished head's subject clear.
func (l *Lanes) known(subject string, seq uint64, e entry) (known, cleared bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, ok := l.done[subject]
	if ok && e.run != 0 && d.run == e.run && d.seq < seq && l.transit[subject] == 0 && l.runs.current(l.disconnects()) == e.run {
		l.skipped++
		return true, d.clear
	}
	l.forgetEndedRun()
	l.lookups++
	return false, false
}

// finished records how work settled the head seq of subject: acknowledged
// (or terminated), it is the subject's last finished head; otherwise the
// subject's next message is looked up.
func (l *Lanes) finished(subject string, seq uint64, e entry, s *settling) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.removed && !s.kept && e.run != 0 {
		if len(l.done) >= maxDone {
			clear(l.done)
		}
		l.done[subject] = mark{seq: seq, run: e.run, clear: s.clear}
		return
	}
	delete(l.done, subject)
}

// handle hands the head e to work and records how it was settled; follows
// is whether e directly follows a head work left clear.
func (l *Lanes) handle(ctx context.Context, subject string, seq uint64, e entry, follows bool) {
	s := &settling{Msg: e.msg, follows: follows}
	l.work(ctx, s)
	l.finished(subject, seq, e, s)
}

func (l *Lanes) run(ctx context.Context, subject string, lane map[uint64]entry) {
	defer l.wg.Done()
	wait := minWait
	lastAlive := time.Now()
	for {
		seq, e, ok := l.next(subject, lane)
		if !ok {
			return
		}
		if l.stopWaiting.Err() != nil {
			l.remove(lane, seq)
			l.forgetDone(subject)
			_ = e.msg.Nak()
			continue
		}
		if known, cleared := l.known(subject, seq, e); known {
			l.remove(lane, seq)
			l.handle(ctx, subject, seq, e, cleared)
			wait = minWait
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
			l.forgetDone(subject)
			continue
		case head == seq:
			l.remove(lane, seq)
			l.handle(ctx, subject, seq, e, false)
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

func (l *Lanes) forgetDone(subject string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.done, subject)
}

func (l *Lanes) keepAlive(lane map[uint64]entry) {
	l.mu.Lock()
	msgs := make([]jetstream.Msg, 0, len(lane))
	for _, e := range lane {
		msgs = append(msgs, e.msg)
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
