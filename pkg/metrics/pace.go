package metrics

import (
	"context"
	"time"
)

// countShare is the most of its time a gauge sampler may spend counting:
// one part in countShare.
const countShare = 50

// NextCount says how long a gauge sampler that counts rows waits before
// its next count, given how long the last one took: interval, or longer
// when counting is slow, so that a replica spends at most one part in 50
// of its time (of a PostgreSQL backend's) counting. The counts that grow
// with an incident (deliveries held for an open circuit, pending dead
// letters) read every row they count: at a few million rows, a count every
// 10 s on every replica would add load to a database already busy with the
// incident. A count that failed (a timeout, say) waits as long as one that
// took as long.
func NextCount(interval, took time.Duration) time.Duration {
	return max(interval, countShare*took)
}

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
