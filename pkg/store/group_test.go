package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hookline/hookline/pkg/pgtest"
	"github.com/hookline/hookline/pkg/store"
)

// countingSender counts the batches sent.
type countingSender struct {
	store.BatchSender
	mu      sync.Mutex
	batches int
}

func (c *countingSender) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	c.mu.Lock()
	c.batches++
	c.mu.Unlock()
	return c.BatchSender.SendBatch(ctx, b)
}

func TestGroupCommitsConcurrentCallers(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `CREATE TABLE g (id int PRIMARY KEY CHECK (id >= 0))`); err != nil {
		t.Fatal(err)
	}
	cs := &countingSender{BatchSender: pool}
	g := store.NewGroup(cs, 1, 1000)

	// 200 callers at once, each inserting two rows and reading them back;
	// caller 7 inserts a row the CHECK refuses.
	const callers = 200
	errs := make([]error, callers)
	got := make([][]int, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			a, b := 2*i, 2*i+1
			if i == 7 {
				b = -1
			}
			batch := &pgx.Batch{}
			batch.Queue(`INSERT INTO g (id) VALUES ($1) RETURNING id`, a)
			batch.Queue(`INSERT INTO g (id) VALUES ($1) RETURNING id`, b)
			errs[i] = g.Do(ctx, batch, func(br pgx.BatchResults) error {
				got[i] = got[i][:0]
				for range 2 {
					var id int
					if err := br.QueryRow().Scan(&id); err != nil {
						return err
					}
					got[i] = append(got[i], id)
				}
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		var pgErr *pgconn.PgError
		switch {
		case i == 7 && !errors.As(err, &pgErr):
			t.Errorf("caller 7: err %v, want the CHECK violation", err)
		case i != 7 && err != nil:
			t.Errorf("caller %d: %v", i, err)
		case i != 7 && fmt.Sprint(got[i]) != fmt.Sprint([]int{2 * i, 2*i + 1}):
			t.Errorf("caller %d read %v", i, got[i])
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM g`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2*(callers-1) {
		t.Errorf("%d rows, want %d (caller 7's none)", n, 2*(callers-1))
	}
	// Concurrent callers shared batches: far fewer batches than callers
	// (the failed shared batch and its callers' retries included).
	if cs.batches >= callers {
		t.Errorf("%d batches for %d callers: nothing was grouped", cs.batches, callers)
	}
	t.Logf("%d callers in %d batches", callers, cs.batches)
}
