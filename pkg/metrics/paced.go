package metrics

import (
	"context"
	"time"
)

// Paced calls fn now and again after each call, NextCount(interval, the
// time fn took) later, until ctx ends: for background work whose cost grows
// with what it reads (counts, sweeps), so that it takes at most one part in
// 50 of the time however slow it gets.
func Paced(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	for {
		start := time.Now()
		fn(ctx)
		t := time.NewTimer(NextCount(interval, time.Since(start)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
