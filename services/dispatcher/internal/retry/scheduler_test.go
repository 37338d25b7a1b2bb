package retry

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// TestTickHoldsInPlace: a due row that Hold holds moves to its new due time
// and is not republished; the others are republished and deleted.
func TestTickHoldsInPlace(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := t.Context()
	if err := bus.EnsureStreams(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Second)
	held := &hooklinev1.Delivery{Id: "dlv_held", TenantId: "acme", EndpointId: "ep_open", EventId: "evt_1", Attempts: 1}
	free := &hooklinev1.Delivery{Id: "dlv_free", TenantId: "acme", EndpointId: "ep_ok", EventId: "evt_1", Attempts: 1}
	for _, d := range []*hooklinev1.Delivery{held, free} {
		if err := Park(ctx, pool, d, past); err != nil {
			t.Fatal(err)
		}
	}
	until := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	s := NewScheduler(pool, js, slog.New(slog.DiscardHandler))
	s.Hold = func(d *hooklinev1.Delivery, _ time.Time) (time.Time, bool) {
		return until, d.GetEndpointId() == "ep_open"
	}
	n, err := s.Tick(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Tick = %d, %v; want 2 rows handled", n, err)
	}
	var id string
	var due time.Time
	if err := pool.QueryRow(ctx, `SELECT delivery_id, due_at FROM delivery_retries`).Scan(&id, &due); err != nil {
		t.Fatal(err)
	}
	if id != "dlv_held" || !due.Equal(until) {
		t.Errorf("row left: %s due %s, want dlv_held due %s", id, due, until)
	}
	stream, err := js.Stream(ctx, bus.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages republished, want 1", info.State.Msgs)
	}
	for subj := range info.State.Subjects {
		if want := bus.DeliverySubject("acme", "ep_ok", ""); subj != want {
			t.Errorf("republished on %s, want %s", subj, want)
		}
	}
	// Nothing is due now: the held row is not taken again.
	if n, err := s.Tick(context.WithoutCancel(ctx)); err != nil || n != 0 {
		t.Errorf("second Tick = %d, %v", n, err)
	}
}
