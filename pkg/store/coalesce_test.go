package store

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

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
