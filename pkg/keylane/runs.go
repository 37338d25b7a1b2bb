package keylane

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Run names an unbroken run of first deliveries from one consumer to this
// replica. The zero Run is none: a redelivery, or a message not observed.
type Run uint64

// runs finds runs in the deliveries of one consumer, seen in the order they
// were delivered. A run goes on while each delivery is a first delivery
// whose consumer sequence follows the previous one's and whose stream
// sequence is higher; anything else (a gap, meaning another replica got
// deliveries in between; a redelivery; a consumer that was recreated; a
// disconnection) ends it.
type runs struct {
	run         Run
	consumerSeq uint64
	streamSeq   uint64
	disconnects uint64
	broken      bool
	// ended is set when a run ended, until the owner cleared what it
	// remembered of it.
	ended bool
}

// observe returns the run of the delivery meta, 0 for none.
func (r *runs) observe(meta *jetstream.MsgMetadata, disconnects uint64) Run {
	r.current(disconnects)
	if meta.NumDelivered != 1 {
		r.brk()
		return 0
	}
	if r.run == 0 || r.broken || meta.Sequence.Consumer != r.consumerSeq+1 || meta.Sequence.Stream <= r.streamSeq {
		r.run++
		r.broken = false
		r.ended = true
	}
	r.consumerSeq, r.streamSeq = meta.Sequence.Consumer, meta.Sequence.Stream
	return r.run
}

// current returns the run going on, 0 when it was broken, ending it first
// if a connection was lost since the last call.
func (r *runs) current(disconnects uint64) Run {
	if disconnects != r.disconnects {
		r.disconnects = disconnects
		r.brk()
	}
	if r.broken {
		return 0
	}
	return r.run
}

// brk ends the current run; the next first delivery starts a new one.
func (r *runs) brk() {
	if !r.broken {
		r.broken = true
		r.ended = true
	}
}

// settling is a message handed to work, recording how work settled it:
// removed from the stream (acknowledged or terminated) or kept (NAKed, or an
// acknowledgement that failed).
type settling struct {
	jetstream.Msg
	removed, kept bool
	// follows: the message directly follows a head of its subject that
	// this replica finished in the same run and whose work called
	// LeaveClear; clear: this message's work called it.
	follows, clear bool
}

// LeaveClear records that working on msg, a head handed to work, left its
// subject clear: in whatever sense the work gives it (the dispatcher: its
// key is not blocked, and only the head's own work could block it). The
// subject's next message learns it through [FollowsClear] when it is known
// to follow msg directly, with nothing in between.
func LeaveClear(msg jetstream.Msg) {
	if s, ok := msg.(*settling); ok {
		s.clear = true
	}
}

// FollowsClear reports whether msg, a head handed to work, directly
// follows a head this replica finished, in the same run, whose work called
// [LeaveClear]: nothing of its subject came in between.
func FollowsClear(msg jetstream.Msg) bool {
	s, ok := msg.(*settling)
	return ok && s.follows
}

func (s *settling) note(err error) error {
	if err != nil {
		s.kept = true
	} else {
		s.removed = true
	}
	return err
}

func (s *settling) Ack() error { return s.note(s.Msg.Ack()) }

func (s *settling) DoubleAck(ctx context.Context) error { return s.note(s.Msg.DoubleAck(ctx)) }

func (s *settling) Term() error { return s.note(s.Msg.Term()) }

func (s *settling) TermWithReason(reason string) error {
	return s.note(s.Msg.TermWithReason(reason))
}

func (s *settling) Nak() error {
	s.kept = true
	return s.Msg.Nak()
}

func (s *settling) NakWithDelay(delay time.Duration) error {
	s.kept = true
	return s.Msg.NakWithDelay(delay)
}
