package dispatch

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/dispatcher/internal/breaker"
)

type fixedEndpoints map[string]*hooklinev1.Endpoint

func (f fixedEndpoints) Get(_ context.Context, id string) (*hooklinev1.Endpoint, error) {
	return f[id], nil
}

// heldBreaker holds every endpoint until until.
type heldBreaker struct{ until time.Time }

func (b heldBreaker) Allow(context.Context, string, string) (breaker.Done, time.Time) {
	return nil, b.until
}

func (b heldBreaker) Phase(string, time.Time) (breaker.Phase, time.Time) {
	return breaker.PhaseHeld, b.until
}

func TestHeld(t *testing.T) {
	t.Parallel()
	now := time.Now()
	sched := []uint64{1000} // one retry after 1 s: horizon 1 s + 1 day
	eps := fixedEndpoints{
		"ep":       {Id: "ep", RetryScheduleMs: sched},
		"disabled": {Id: "disabled", Disabled: true, RetryScheduleMs: sched},
		"deleted":  {Id: "deleted", Deleted: true},
		"ordered":  {Id: "ordered", Ordering: "key", RetryScheduleMs: sched},
	}
	fresh := timestamppb.New(now.Add(-time.Hour))
	old := timestamppb.New(now.Add(-48 * time.Hour))
	nearly := timestamppb.New(now.Add(-24*time.Hour - time.Second + time.Minute)) // horizon in a minute
	horizon := func(created *timestamppb.Timestamp) time.Time {
		return created.AsTime().Add(24*time.Hour + time.Second)
	}
	hour := now.Add(time.Hour)
	for _, tc := range []struct {
		name      string
		breaker   Breaker
		d         *hooklinev1.Delivery
		wantHeld  bool
		wantUntil time.Time
	}{
		{"held until its horizon", heldBreaker{hour}, &hooklinev1.Delivery{EndpointId: "ep", CreatedAt: fresh}, true, horizon(fresh)},
		{"horizon before the cool-down ends", heldBreaker{hour}, &hooklinev1.Delivery{EndpointId: "ep", CreatedAt: nearly}, true, horizon(nearly)},
		{"past the horizon", heldBreaker{hour}, &hooklinev1.Delivery{EndpointId: "ep", CreatedAt: old}, false, time.Time{}},
		{"disabled", heldBreaker{hour}, &hooklinev1.Delivery{EndpointId: "disabled", CreatedAt: fresh}, false, time.Time{}},
		{"deleted", heldBreaker{hour}, &hooklinev1.Delivery{EndpointId: "deleted", CreatedAt: fresh}, false, time.Time{}},
		{"unknown", heldBreaker{hour}, &hooklinev1.Delivery{EndpointId: "nope", CreatedAt: fresh}, false, time.Time{}},
		{"keyed on an ordered endpoint", heldBreaker{hour}, &hooklinev1.Delivery{EndpointId: "ordered", OrderingKey: "k", CreatedAt: fresh}, false, time.Time{}},
		{"breaker without Held", nil, &hooklinev1.Delivery{EndpointId: "ep", CreatedAt: fresh}, false, time.Time{}},
	} {
		h := NewHandler(eps, nil, nil, nil, nil, slog.New(slog.DiscardHandler))
		h.Breaker = tc.breaker
		until, held := h.Held(t.Context(), tc.d, now)
		if held != tc.wantHeld || !until.Equal(tc.wantUntil) {
			t.Errorf("%s: Held = %s, %v; want %s, %v", tc.name, until, held, tc.wantUntil, tc.wantHeld)
		}
	}
}
