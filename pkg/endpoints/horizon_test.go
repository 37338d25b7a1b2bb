package endpoints

import (
	"testing"
	"time"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

func TestHorizon(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		sched []uint64
		want  time.Duration
	}{
		{"none", nil, 24 * time.Hour},
		{"default", []uint64{5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000},
			24*time.Hour + 27*time.Hour + 35*time.Minute + 5*time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Horizon(&hooklinev1.Endpoint{RetryScheduleMs: tc.sched}); got != tc.want {
				t.Errorf("Horizon = %s, want %s", got, tc.want)
			}
		})
	}
}
