package store

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestCoalescer: every caller's item is flushed, no flush weighs more than
// the limit, and an item PostgreSQL refuses fails alone.
func TestCoalescer(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		weights []int
	)
	flush := func(_ context.Context, items []int) error {
		w := 0
		for _, it := range items {
			w += it % 10
		}
		mu.Lock()
		weights = append(weights, w)
		mu.Unlock()
		if slices.Contains(items, 77) {
			return &pgconn.PgError{Code: "23514", Message: "check violation"}
		}
		return nil
	}
	c := NewCoalescer(2, 20, func(it int) int { return it % 10 }, flush)
	errs := make([]error, 200)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = c.Do(t.Context(), i) })
	}
	wg.Wait()
	for i, err := range errs {
		var pgErr *pgconn.PgError
		if (err != nil) != (i == 77) || (err != nil && !errors.As(err, &pgErr)) {
			t.Errorf("item %d: err %v", i, err)
		}
	}
	for _, w := range weights {
		if w > 20 {
			t.Errorf("a flush weighed %d, over the limit of 20", w)
		}
	}
}

// TestCoalescerGroupsWhatArrivesDuringAFlush: with one flush in flight at a
// time, the callers that arrive while it runs all go in the next flush
// together, none alone (ingest and fan-out rely on this to grow their
// statements with load).
func TestCoalescerGroupsWhatArrivesDuringAFlush(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		flushes [][]int
	)
	started := make(chan struct{})
	release := make(chan struct{})
	flush := func(_ context.Context, items []int) error {
		mu.Lock()
		flushes = append(flushes, slices.Clone(items))
		first := len(flushes) == 1
		mu.Unlock()
		if first {
			close(started)
			<-release
		}
		return nil
	}
	c := NewCoalescer(1, 100, func(int) int { return 1 }, flush)
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.Do(t.Context(), 0) })
	<-started
	const later = 20
	for i := 1; i <= later; i++ {
		wg.Go(func() { _ = c.Do(t.Context(), i) })
	}
	// Every later caller is queued once the channel holds them all; a
	// second flush in flight would take them instead.
	deadline := time.Now().Add(5 * time.Second)
	for len(c.reqs) < later {
		if time.Now().After(deadline) {
			close(release)
			wg.Wait()
			t.Fatalf("only %d of %d callers left queued during the first flush: another flush took the rest", len(c.reqs), later)
		}
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if len(flushes) != 2 || len(flushes[0]) != 1 || len(flushes[1]) != later {
		sizes := make([]int, len(flushes))
		for i, f := range flushes {
			sizes[i] = len(f)
		}
		t.Fatalf("flush sizes %v, want [1 %d]: the callers that arrived during the first flush should go in one", sizes, later)
	}
}
