package dispatch

import (
	"context"
	"testing"
	"time"
)

func TestLimitsPerEndpointCap(t *testing.T) {
	t.Parallel()
	l := NewLimits(4, 2)
	var releases []func()
	for range 2 {
		r, ok := l.Acquire(t.Context(), "slow")
		if !ok {
			t.Fatal("acquire failed")
		}
		releases = append(releases, r)
	}
	// The slow endpoint is saturated: a third delivery to it waits...
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, ok := l.Acquire(ctx, "slow"); ok {
		t.Fatal("third slot of a saturated endpoint granted")
	}
	// ...while other endpoints still get the remaining global slots.
	for range 2 {
		r, ok := l.Acquire(t.Context(), "fast")
		if !ok {
			t.Fatal("other endpoint starved")
		}
		releases = append(releases, r)
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel2()
	if _, ok := l.Acquire(ctx2, "third"); ok {
		t.Fatal("global limit exceeded")
	}
	for _, r := range releases {
		r()
	}
	r, ok := l.Acquire(t.Context(), "slow")
	if !ok {
		t.Fatal("slot not released")
	}
	r()
	if n := len(l.endpoints); n != 0 {
		t.Errorf("%d endpoint entries left after release", n)
	}
}
