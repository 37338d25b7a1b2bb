package metrics

import (
	"context"
	"testing"
	"time"
)

// TestPaced: Paced calls fn at once and then again and again, and returns
// once ctx ends.
func TestPaced(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	calls := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		Paced(ctx, time.Millisecond, func(context.Context) {
			if calls++; calls == 3 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Paced did not return after its context ended")
	}
	if calls != 3 {
		t.Errorf("fn called %d times, want 3 (the third ended the context)", calls)
	}
}
