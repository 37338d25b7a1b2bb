package outcomes_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/natstest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/dispatcher/internal/outcomes"
)

func setup(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	if err := bus.EnsureStreams(t.Context(), js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	return js
}

// waitUntil polls cond until it holds, for at most 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func outcome(i int) *hooklinev1.AttemptOutcome {
	return &hooklinev1.AttemptOutcome{DeliveryId: fmt.Sprintf("dlv_%04d", i), TenantId: "acme", EndpointId: "ep_1", Attempt: 1, Succeeded: true, StatusCode: 200}
}

// stored reads every message of the attempts stream and returns the
// outcomes, their traceparents and the number of messages.
func stored(t *testing.T, js jetstream.JetStream) (map[string]string, int) {
	t.Helper()
	ctx := t.Context()
	st, err := js.Stream(ctx, bus.StreamAttempts)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != bus.AttemptBatchSubject {
			t.Fatalf("subject %q, want %q", m.Subject, bus.AttemptBatchSubject)
		}
		var batch hooklinev1.AttemptOutcomes
		if err := proto.Unmarshal(m.Data, &batch); err != nil {
			t.Fatal(err)
		}
		if len(batch.GetTraceparents()) != len(batch.GetOutcomes()) {
			t.Fatalf("%d traceparents for %d outcomes", len(batch.GetTraceparents()), len(batch.GetOutcomes()))
		}
		for i, o := range batch.GetOutcomes() {
			if _, dup := got[o.GetDeliveryId()]; dup {
				t.Errorf("outcome of %s stored twice", o.GetDeliveryId())
			}
			got[o.GetDeliveryId()] = batch.GetTraceparents()[i]
		}
	}
	return got, int(info.State.Msgs)
}

func TestConcurrentOutcomesShareMessages(t *testing.T) {
	js := setup(t)
	b := outcomes.New(js)
	b.Start()
	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- b.Publish(t.Context(), outcome(i), fmt.Sprintf("00-%032x-%016x-01", i+1, i+1), false)
		})
	}
	wg.Wait()
	b.Close()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, msgs := stored(t, js)
	if len(got) != n {
		t.Fatalf("%d outcomes stored, want %d", len(got), n)
	}
	for i := range n {
		if tp := got[fmt.Sprintf("dlv_%04d", i)]; tp != fmt.Sprintf("00-%032x-%016x-01", i+1, i+1) {
			t.Fatalf("outcome %d: traceparent %q", i, tp)
		}
	}
	// 2,000 concurrent callers: groups must form (at most 256 each, so at
	// least 8 messages), far fewer messages than outcomes.
	if msgs < n/outcomes.DefaultMaxOutcomes || msgs > n/4 {
		t.Errorf("%d messages for %d outcomes: want between %d and %d", msgs, n, n/outcomes.DefaultMaxOutcomes, n/4)
	}
	t.Logf("%d outcomes in %d messages", n, msgs)
}

// TestLoneOutcomeGoesAlone: a lone outcome goes after the linger, in a
// group of one.
func TestLoneOutcomeGoesAlone(t *testing.T) {
	js := setup(t)
	b := outcomes.New(js)
	b.Start()
	defer b.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := b.Publish(ctx, outcome(1), "", false); err != nil {
		t.Fatal(err)
	}
	if got, msgs := stored(t, js); len(got) != 1 || msgs != 1 {
		t.Fatalf("%d outcomes in %d messages, want 1 in 1", len(got), msgs)
	}
}

func TestLargeOutcomesSplitByBytes(t *testing.T) {
	js := setup(t)
	b := outcomes.New(js)
	b.Start()
	body := make([]byte, 4096)
	var wg sync.WaitGroup
	const n = 300 // 300 × 4 KiB: more than one message's byte limit
	for i := range n {
		wg.Go(func() {
			o := outcome(i)
			o.ResponseBody = body
			if err := b.Publish(t.Context(), o, "", false); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	b.Close()
	got, msgs := stored(t, js)
	if len(got) != n {
		t.Fatalf("%d outcomes stored, want %d", len(got), n)
	}
	if min := n * 4096 / outcomes.DefaultMaxBytes; msgs < min {
		t.Errorf("%d messages: want at least %d (%d bytes each at most)", msgs, min, outcomes.DefaultMaxBytes)
	}
}

func TestPublishAfterClose(t *testing.T) {
	b := outcomes.New(setup(t))
	b.Start()
	b.Close()
	if err := b.Publish(t.Context(), outcome(1), "", false); !errors.Is(err, outcomes.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
}

func TestNoAckIsAnError(t *testing.T) {
	js := setup(t)
	if err := js.DeleteStream(t.Context(), bus.StreamAttempts); err != nil {
		t.Fatal(err)
	}
	b := outcomes.New(js)
	b.Start()
	defer b.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if err := b.Publish(ctx, outcome(1), "", false); err == nil {
		t.Fatal("Publish without a stream to take the message succeeded")
	}
}

// TestLingerEndsWithUrgentOutcome: an outcome waits up to the linger for
// others to join its group, and an urgent one ends the wait: with an hour's
// linger, a lingering outcome and an urgent one that follows it go
// together, at once (without the urgent flag the test would time out).
func TestLingerEndsWithUrgentOutcome(t *testing.T) {
	js := setup(t)
	b := outcomes.New(js)
	b.Linger = time.Hour
	defer b.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// The first outcome waits in the queue until Start, so that it is
	// gathered, and lingering, before the urgent one is handed in.
	lingering := make(chan error, 1)
	go func() { lingering <- b.Publish(ctx, outcome(1), "", false) }()
	waitUntil(t, "the first outcome queued", func() bool { return outcomes.Queued(b) == 1 })
	b.Start()
	waitUntil(t, "the first outcome gathered", func() bool { return outcomes.Queued(b) == 0 })
	if err := b.Publish(ctx, outcome(2), "", true); err != nil {
		t.Fatal(err)
	}
	if err := <-lingering; err != nil {
		t.Fatal(err)
	}
	if got, msgs := stored(t, js); len(got) != 2 || msgs != 1 {
		t.Fatalf("%d outcomes in %d messages, want 2 in 1", len(got), msgs)
	}
}

// TestLingerGathersSequentialOutcomes: outcomes handed in one after
// another within the linger share a message.
func TestLingerGathersSequentialOutcomes(t *testing.T) {
	js := setup(t)
	b := outcomes.New(js)
	b.Linger = 2 * time.Second
	b.Start()
	defer b.Close()
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			if err := b.Publish(t.Context(), outcome(i), "", false); err != nil {
				t.Error(err)
			}
		})
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	if got, msgs := stored(t, js); len(got) != 5 || msgs != 1 {
		t.Fatalf("%d outcomes in %d messages, want 5 in 1", len(got), msgs)
	}
}
