package attemptlog

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/dispatcher/internal/outcomes"
)

// Outcomes grouped by the dispatcher's batcher, next to one published
// alone (as an older dispatcher does), all reach the attempt log once, in
// more than one transaction chunk.
func TestWriterStoresGroupedOutcomes(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := t.Context()
	_, js := natstest.Start(t).Connect(t)
	if err := bus.EnsureStreams(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	cons, err := bus.EnsureConsumer(ctx, js, bus.StreamAttempts, bus.Consumer(bus.ConsumerAttemptLog, 30*time.Second, 1000))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	outcomeOf := func(i int) *hooklinev1.AttemptOutcome {
		return &hooklinev1.AttemptOutcome{
			DeliveryId: fmt.Sprintf("dlv_%05d", i), TenantId: "acme", EventId: fmt.Sprintf("evt_%05d", i), EndpointId: "ep_1",
			Attempt: 1, StartedAt: timestamppb.New(now), DurationMs: 3, StatusCode: 200, Succeeded: true,
			Status: hooklinev1.DeliveryStatus_DELIVERY_STATUS_SUCCEEDED,
		}
	}
	n := storeChunk + 500 // more than one chunk
	b := outcomes.New(js)
	b.Start()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := b.Publish(ctx, outcomeOf(i), "", false); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	b.Close()
	// One outcome the old way, alone on its own subject.
	if err := bus.PublishAll(ctx, js, bus.NewMsg(bus.AttemptSubject("acme", "ep_1"), bus.AttemptMsgID("dlv_single", 1),
		mustMarshal(t, &hooklinev1.AttemptOutcome{DeliveryId: "dlv_single", TenantId: "acme", EventId: "evt_single", EndpointId: "ep_1",
			Attempt: 1, StartedAt: timestamppb.New(now), StatusCode: 200, Succeeded: true, Status: hooklinev1.DeliveryStatus_DELIVERY_STATUS_SUCCEEDED}))); err != nil {
		t.Fatal(err)
	}

	w := New(pool, cons, slog.New(slog.DiscardHandler))
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(wctx) }()
	defer func() { stop(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var attempts, succeeded int
		if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM attempts), (SELECT count(*) FROM deliveries WHERE status = 'succeeded')`).Scan(&attempts, &succeeded); err != nil {
			t.Fatal(err)
		}
		if attempts == n+1 && succeeded == n+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d attempts and %d succeeded deliveries stored, want %d each", attempts, succeeded, n+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Everything was acknowledged: the stream is empty.
	deadline = time.Now().Add(10 * time.Second)
	for {
		info, err := js.Stream(ctx, bus.StreamAttempts)
		if err != nil {
			t.Fatal(err)
		}
		si, err := info.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if si.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d attempt messages left unacknowledged", si.State.Msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
