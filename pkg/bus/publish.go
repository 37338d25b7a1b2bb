package bus

import (
	"context"
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
	return func(ctx context.Context) error { return waitAcks(ctx, futures) }, nil
}

func waitAcks(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish to %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return fmt.Errorf("wait for publish ack on %s: %w", f.Msg().Subject, ctx.Err())
		}
	}
	return nil
}
