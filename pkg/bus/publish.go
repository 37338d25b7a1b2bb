package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NewMsg returns a message for subject carrying data, with its Nats-Msg-Id
// header set to msgID.
func NewMsg(subject, msgID string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(HeaderMsgID, msgID)
	return m
}

// PublishAll publishes msgs asynchronously and waits until JetStream has
// acknowledged every one of them, or ctx ends. Callers bound ctx: an ack that
// never arrives (a lost connection) must not block them forever. Any error
// means some messages may be stored and others not; their Nats-Msg-Id makes a
// retry of the whole set safe.
func PublishAll(ctx context.Context, js jetstream.JetStream, msgs ...*nats.Msg) error {
	wait, err := PublishAsync(js, msgs...)
	if err != nil {
		return err
	}
	return wait(ctx)
}

// PublishAsync publishes msgs asynchronously, in order, and returns a
// function that waits until JetStream has acknowledged every one of them, or
// its ctx ends; other work can run in between. Errors mean what they mean for
// [PublishAll].
func PublishAsync(js jetstream.JetStream, msgs ...*nats.Msg) (wait func(ctx context.Context) error, err error) {
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return nil, fmt.Errorf("publish to %s: %w", m.Subject, err)
		}
		futures = append(futures, f)
	}
	return func(ctx context.Context) error { return waitAcks(ctx, js, futures) }, nil
}

// MarkFirstOfSubject asks the stream to store m only if no other message of
// its subject is stored (Nats-Expected-Last-Subject-Sequence: 0). The stream
// keeps the header with the message, so a consumer of a work-queue stream
// that gets m on its first delivery knows, without asking, that m is its
// subject's head (see package keylane). When the stream refuses m because an
// older message of the subject is stored, [PublishAsync] and [PublishAll]
// publish it again without the mark: a refused message records no
// Nats-Msg-Id, so the second publish is not taken for a duplicate.
func MarkFirstOfSubject(m *nats.Msg) {
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
}

// RepublishUnmarked publishes m again without its [MarkFirstOfSubject]
// mark when err is the stream's refusal of that mark (an older message of
// its subject is stored), and reports whether it did, with the error of
// that publish; otherwise it returns false and err.
func RepublishUnmarked(ctx context.Context, js jetstream.JetStream, m *nats.Msg, err error) (bool, error) {
	var apiErr *jetstream.APIError
	if m.Header.Get(jetstream.ExpectedLastSubjSeqHeader) == "" || !errors.As(err, &apiErr) ||
		(apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence && apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return false, err
	}
	m.Header.Del(jetstream.ExpectedLastSubjSeqHeader)
	_, err = js.PublishMsg(ctx, m)
	return true, err
}

func waitAcks(ctx context.Context, js jetstream.JetStream, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if again, err := RepublishUnmarked(ctx, js, f.Msg(), err); again && err == nil {
				continue
			}
			return fmt.Errorf("publish to %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return fmt.Errorf("wait for publish ack on %s: %w", f.Msg().Subject, ctx.Err())
		}
	}
	return nil
}
