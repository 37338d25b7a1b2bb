package fanout

import (
	"testing"
)

func TestLaneOf(t *testing.T) {
	t.Parallel()
	l := NewLanes(8, 1, nil)
	const keyed = "hookline.events.acme.00000000deadbeef"
	first := l.laneOf(keyed)
	for range 20 {
		if got := l.laneOf(keyed); got != first {
			t.Fatalf("keyed subject moved from lane %d to %d", first, got)
		}
	}
	seen := map[int]bool{}
	for range 16 {
		seen[l.laneOf("hookline.events.acme._")] = true
	}
	if len(seen) < 2 {
		t.Errorf("keyless events all went to one lane")
	}
}
