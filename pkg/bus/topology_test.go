package bus_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/natstest"
)

func TestEnsureTopologyOnRealServer(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := bus.CheckServer(ctx, nc.ConnectedServerVersion(), js); err != nil {
		t.Fatalf("embedded server refused: %v", err)
	}
	opts := bus.Options{DedupeWindow: 3 * time.Minute}
	for range 2 { // creating twice must be an update, not an error
		if err := bus.EnsureStreams(ctx, js, opts); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range bus.Streams(opts) {
		s, err := js.Stream(ctx, want.Name)
		if err != nil {
			t.Fatal(err)
		}
		got := s.CachedInfo().Config
		if got.Retention != jetstream.WorkQueuePolicy || got.Storage != jetstream.FileStorage || got.Duplicates != 3*time.Minute {
			t.Errorf("%s: retention %v storage %v duplicates %v", want.Name, got.Retention, got.Storage, got.Duplicates)
		}
	}
	if _, err := bus.EnsureConsumer(ctx, js, bus.StreamDeliveries, bus.Consumer(bus.ConsumerDispatcher, 90*time.Second, 512)); err != nil {
		t.Fatal(err)
	}

	// A repeated publish with the same Msg-Id is dropped by the stream.
	subject := bus.DeliverySubject("acme", "ep_1", "customer-42")
	for range 2 {
		msg := nats.NewMsg(subject)
		msg.Header.Set(bus.HeaderMsgID, bus.DeliveryMsgID("dlv_1", 0))
		msg.Data = []byte("x")
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := js.Stream(ctx, bus.StreamDeliveries)
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1 (duplicate dropped)", info.State.Msgs)
	}
	if _, err := bus.EnsureEndpointsBucket(ctx, js, opts); err != nil {
		t.Fatal(err)
	}
}
