package store

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
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

// TestCoalescerLingersWhileItemsArriveOften: with a linger, items arriving
// one after another (each caller alone, no flush running) are flushed
// together while they arrive more often than one per linger, and the first
// item, before any rate is known, is not held back.
func TestCoalescerLingersWhileItemsArriveOften(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		flushes [][]int
	)
	flush := func(_ context.Context, items []int) error {
		mu.Lock()
		flushes = append(flushes, slices.Clone(items))
		mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	fresh := NewCoalescer(1, 20, func(int) int { return 1 }, flush).Linger(time.Hour)
	if err := fresh.Do(ctx, -1); err != nil {
		t.Fatalf("the first item, with no arrival rate known, waited: %v", err)
	}

	// The clock stands still and the items so far came a second apart: a
	// flush waits for its linger (an hour) or for two seconds past the
	// latest arrival (twice the average gap, which only shrinks as items
	// come at the same instant), so only the limit of 20 ends it.
	at := time.Unix(1_000_000, 0)
	c := NewCoalescer(1, 20, func(int) int { return 1 }, flush).Linger(time.Hour)
	c.now = func() time.Time { return at }
	c.seen = arrivals{last: at, gap: time.Second, known: true}
	mu.Lock()
	flushes = nil
	mu.Unlock()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if err := c.Do(ctx, i); err != nil {
				t.Errorf("item %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	sizes := make([]int, len(flushes))
	for i, f := range flushes {
		sizes[i] = len(f)
	}
	if !slices.Equal(sizes, []int{20}) {
		t.Fatalf("flush sizes %v, want [20]: items arriving one after another should wait for each other", sizes)
	}
}

// TestCoalescerLingerEndsWhenArrivalsStop: callers taking turns (each calls
// again once its item is flushed) are not held for the whole linger: a
// flush goes once no caller came for twice the average gap. With the
// linger alone, every turn would wait an hour.
func TestCoalescerLingerEndsWhenArrivalsStop(t *testing.T) {
	t.Parallel()
	var flushes atomic.Int64
	flush := func(context.Context, []int) error {
		flushes.Add(1)
		return nil
	}
	at := time.Unix(1_000_000, 0)
	c := NewCoalescer(1, 100, func(int) int { return 1 }, flush).Linger(time.Hour)
	c.now = func() time.Time { return at }
	c.seen = arrivals{last: at, gap: time.Millisecond, known: true}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for caller := range 4 {
		wg.Go(func() {
			for turn := range 25 {
				if err := c.Do(ctx, caller*100+turn); err != nil {
					t.Errorf("caller %d, turn %d: %v", caller, turn, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := flushes.Load(); n < 25 {
		t.Errorf("%d flushes for 4 callers taking 25 turns each, want at least 25", n)
	}
}

// TestArrivalsAverage: the linger applies only while the average gap
// between arrivals is below it, and a long pause turns it off until the
// rate is back.
func TestArrivalsAverage(t *testing.T) {
	t.Parallel()
	const limit = 10 * time.Millisecond
	c := NewCoalescer(1, 100, func(int) int { return 1 }, func(context.Context, []int) error { return nil }).Linger(limit)
	at := time.Unix(1_000_000, 0)
	c.now = func() time.Time { return at }
	var a arrivals
	lingers := func() bool {
		_, ok := c.lingerFor(&coalesceReq[int]{at: at}, &a)
		return ok
	}
	a.observe(at)
	if lingers() {
		t.Fatal("after one arrival a flush lingers: no rate is known yet")
	}
	step := func(n int, gap time.Duration) {
		for range n {
			at = at.Add(gap)
			a.observe(at)
		}
	}
	step(50, 20*time.Millisecond) // 50 a second: under one per linger
	if lingers() {
		t.Errorf("at 50/s a flush lingers (average gap %v, linger %v)", a.gap, limit)
	}
	step(1, 100*time.Microsecond) // two requests at once, once
	if lingers() {
		t.Errorf("at 50/s, after two arrivals together, a flush lingers (average gap %v, linger %v)", a.gap, limit)
	}
	step(30, 500*time.Microsecond) // 2,000 a second
	if !lingers() {
		t.Errorf("at 2,000/s a flush does not linger (average gap %v, linger %v)", a.gap, limit)
	}
	step(1, time.Hour) // a pause
	if lingers() {
		t.Errorf("after an hour's pause a flush lingers (average gap %v, linger %v)", a.gap, limit)
	}
	step(40, 500*time.Microsecond)
	if !lingers() {
		t.Errorf("40 arrivals after the pause a flush does not linger (average gap %v, linger %v)", a.gap, limit)
	}
	a.observe(at.Add(-time.Second)) // a caller's clock reading from before the last
	if a.gap < 0 {
		t.Errorf("an arrival out of order made the gap negative: %v", a.gap)
	}
}
