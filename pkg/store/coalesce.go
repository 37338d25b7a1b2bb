package store

import (
	"context"
	"errors"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// Coalescer runs the items of concurrent callers through one flush, so that
// many callers' rows go to PostgreSQL in one statement, which costs it far
// less than a statement each. A lone caller waits for nothing: its item is
// flushed at once.
//
// When a shared flush fails on a value (a PostgreSQL error), each item is
// flushed again alone, so that only the bad one fails; an error not caused
// by a value (a lost connection) is every caller's.
type Coalescer[T any] struct {
	flush   func(ctx context.Context, items []T) error
	weight  func(T) int
	workers int
	limit   int

	start sync.Once
	reqs  chan *coalesceReq[T]
}

type coalesceReq[T any] struct {
	ctx  context.Context
	item T
	done chan error
}

// NewCoalescer returns a Coalescer with workers flushes in flight at once,
// each of items weighing at most limit together (by weight; an item heavier
// than limit goes alone).
func NewCoalescer[T any](workers, limit int, weight func(T) int, flush func(ctx context.Context, items []T) error) *Coalescer[T] {
	limit = max(limit, 1)
	return &Coalescer[T]{flush: flush, weight: weight, workers: max(workers, 1), limit: limit,
		reqs: make(chan *coalesceReq[T], 4*limit)}
}

// Do flushes item, with the items of concurrent callers, and returns the
// outcome of its flush. The flush runs with ctx's values (the trace of the
// first caller of a shared flush) but not its cancellation; Do returns early
// with ctx's error when ctx ends first.
func (c *Coalescer[T]) Do(ctx context.Context, item T) error {
	c.start.Do(func() {
		for range c.workers {
			go c.run()
		}
	})
	r := &coalesceReq[T]{ctx: ctx, item: item, done: make(chan error, 1)}
	return handOver(ctx, c.reqs, r, r.done, "a flush")
}

func (c *Coalescer[T]) run() {
	var (
		reqs    []*coalesceReq[T]
		items   []T
		pending *coalesceReq[T]
	)
	for {
		if pending != nil {
			reqs, pending = append(reqs, pending), nil
		} else {
			reqs = append(reqs, <-c.reqs)
		}
		n := c.weight(reqs[0].item)
	collect:
		for n < c.limit {
			select {
			case r := <-c.reqs:
				if w := c.weight(r.item); n+w > c.limit {
					pending = r
					break collect
				} else {
					n += w
				}
				reqs = append(reqs, r)
			default:
				break collect
			}
		}
		for _, r := range reqs {
			items = append(items, r.item)
		}
		err := c.flush(context.WithoutCancel(reqs[0].ctx), items)
		var pgErr *pgconn.PgError
		alone := err != nil && len(reqs) > 1 && errors.As(err, &pgErr)
		for _, r := range reqs {
			if alone {
				err = c.flush(context.WithoutCancel(r.ctx), []T{r.item})
			}
			r.done <- err
		}
		clear(reqs)
		clear(items)
		reqs, items = reqs[:0], items[:0]
	}
}
