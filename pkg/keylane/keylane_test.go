package keylane

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/natstest"
)

func setupStream(t testing.TB) (jetstream.JetStream, jetstream.Stream, jetstream.Consumer) {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, bus.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	c, err := bus.EnsureConsumer(ctx, js, bus.StreamDeliveries, bus.Consumer("test", 30*time.Second, 10000))
	if err != nil {
		t.Fatal(err)
	}
	return js, s, c
}

// TestLanesOrderAgainstRedeliveryOrder feeds each subject's messages in a
// scrambled order (as redeliveries arrive) and checks that work sees every
// subject's messages in stream order, once, and that a message whose
// predecessor is held elsewhere waits for it.
func TestLanesOrderAgainstRedeliveryOrder(t *testing.T) {
	t.Parallel()
	js, s, c := setupStream(t)
	const subjects, per = 4, 10
	for i := range per {
		for k := range subjects {
			publish(t, js, bus.DeliverySubject("acme", "ep", fmt.Sprint("key", k)), fmt.Sprint(i))
		}
	}
	// fetch waits until all are in hand: right after the publishes the
	// consumer may not offer every message yet, above all on a loaded
	// machine.
	msgs := fetch(t, c, subjects*per)
	var (
		mu  sync.Mutex
		got = map[string][]string{}
	)
	l := New(StreamHead(s), func(_ context.Context, m jetstream.Msg) {
		mu.Lock()
		got[m.Subject()] = append(got[m.Subject()], string(m.Data()))
		mu.Unlock()
		if err := m.DoubleAck(context.Background()); err != nil {
			t.Error(err)
		}
	}, discard())
	// The first message of each subject is "held by another replica": it
	// is added last, after a pause in which nothing may run.
	var firsts []jetstream.Msg
	for i := len(msgs) - 1; i >= 0; i-- {
		if string(msgs[i].Data()) == "0" {
			firsts = append(firsts, msgs[i])
			continue
		}
		l.Add(t.Context(), msgs[i], Observed{})
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	if len(got) != 0 {
		t.Errorf("work ran before the heads arrived: %v", got)
	}
	mu.Unlock()
	for _, m := range firsts {
		l.Add(t.Context(), m, Observed{})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := 0
		for _, v := range got {
			n += len(v)
		}
		mu.Unlock()
		if n == subjects*per {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d handled", n, subjects*per)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for subj, seq := range got {
		for i, v := range seq {
			if v != fmt.Sprint(i) {
				t.Fatalf("%s handled in order %v", subj, seq)
			}
		}
	}
	l.Stop()
	if !l.Wait(5 * time.Second) {
		t.Error("lanes did not end")
	}
}

// BenchmarkHeadCheck measures the head lookup every ordered delivery costs:
// 1,000 subjects with 20 stored messages each.
func BenchmarkHeadCheck(b *testing.B) {
	js, s, _ := setupStream(b)
	const subjects = 1000
	for i := range 20 * subjects {
		if _, err := js.PublishAsync(bus.DeliverySubject("acme", "ep", fmt.Sprint("key", i%subjects)), []byte("x")); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	head := StreamHead(s)
	i := 0
	for b.Loop() {
		if _, found, err := head(context.Background(), bus.DeliverySubject("acme", "ep", fmt.Sprint("key", i%subjects))); err != nil || !found {
			b.Fatal(err, found)
		}
		i++
	}
}
