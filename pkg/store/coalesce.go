package store

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Coalescer runs the items of concurrent callers through one flush, so that
// many callers' rows go to PostgreSQL in one statement, which costs it far
// less than a statement each. A lone caller waits for nothing: its item is
// flushed at once. With a linger ([Coalescer.Linger]), a flush waits a little
// for more items, but only while items arrive faster than one per linger.
//
// When a shared flush fails on a value (a PostgreSQL error), each item is
// flushed again alone, so that only the bad one fails; an error not caused
// by a value (a lost connection) is every caller's.
type Coalescer[T any] struct {
	flush   func(ctx context.Context, items []T) error
	weight  func(T) int
	workers int
	limit   int

	// linger is the longest an item waits for others to join its flush;
	// zero: it never waits.
	linger time.Duration
	now    func() time.Time // time.Now; tests replace it
	seen   arrivals         // what a worker starts from; tests set it

	start sync.Once
	reqs  chan *coalesceReq[T]
}

type coalesceReq[T any] struct {
	ctx  context.Context
	item T
	at   time.Time // when Do was called, kept only with a linger
	done chan error
}

// NewCoalescer returns a Coalescer with workers flushes in flight at once,
// each of items weighing at most limit together (by weight; an item heavier
// than limit goes alone).
func NewCoalescer[T any](workers, limit int, weight func(T) int, flush func(ctx context.Context, items []T) error) *Coalescer[T] {
	limit = max(limit, 1)
	return &Coalescer[T]{flush: flush, weight: weight, workers: max(workers, 1), limit: limit,
		now: time.Now, reqs: make(chan *coalesceReq[T], 4*limit)}
}

// Linger lets an item wait up to d after its Do for more items to join its
// flush, while the recent arrival rate says more will come within d: a
// moving average of the gaps between arrivals below d. Items then go to
// PostgreSQL (or JetStream) in groups at a steady rate too, not only when
// a flush is slow enough for a queue to form; at a rate under one item per
// d, nothing waits. Each of c's workers measures the arrivals it takes, so
// a linger suits a Coalescer with one worker. It must be set before the
// first Do; c is returned.
func (c *Coalescer[T]) Linger(d time.Duration) *Coalescer[T] {
	c.linger = max(d, 0)
	return c
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
	if c.linger > 0 {
		r.at = c.now()
	}
	return handOver(ctx, c.reqs, r, r.done, "a flush")
}

// arrivals keeps a moving average of the gaps between the arrivals of
// items, for [Coalescer.Linger].
type arrivals struct {
	last  time.Time
	gap   time.Duration
	known bool // two arrivals seen: gap means something
}

// maxGap bounds the gap one arrival adds to the average, so that a pause
// (an idle night) is forgotten after a few dozen arrivals at a steady rate.
const maxGap = 100 * time.Millisecond

// observe adds an arrival at t.
func (a *arrivals) observe(t time.Time) {
	if a.last.IsZero() {
		a.last = t
		return
	}
	g := min(max(t.Sub(a.last), 0), maxGap)
	a.last = t
	if !a.known {
		a.gap, a.known = g, true
		return
	}
	a.gap += (g - a.gap) / 8
}

// lingerFor is how much longer a flush whose first item is first waits for
// more, with nothing queued now: until first's linger is over, counted from
// its Do (an item that already waited for the previous flush is not held
// any longer), and no longer than twice the average gap past the latest
// arrival. The second bound ends the wait once the items stop coming: when
// a fixed number of callers take turns (a closed loop, like ingest's
// intake lanes), all of them may already be in, and waiting out the linger
// would only slow each turn down. ok is false when the flush should go now.
func (c *Coalescer[T]) lingerFor(first *coalesceReq[T], seen *arrivals) (d time.Duration, ok bool) {
	if c.linger == 0 || !seen.known || seen.gap >= c.linger {
		return 0, false
	}
	now := c.now()
	d = min(first.at.Add(c.linger).Sub(now), seen.last.Add(2*seen.gap).Sub(now))
	return d, d > 0
}

func (c *Coalescer[T]) run() {
	var (
		reqs    []*coalesceReq[T]
		items   []T
		pending *coalesceReq[T]
		seen    = c.seen
		timer   *time.Timer
	)
	observe := func(r *coalesceReq[T]) {
		if c.linger > 0 {
			seen.observe(r.at)
		}
	}
	for {
		if pending != nil {
			reqs, pending = append(reqs, pending), nil
		} else {
			r := <-c.reqs
			observe(r)
			reqs = append(reqs, r)
		}
		n := c.weight(reqs[0].item)
	collect:
		for n < c.limit {
			var r *coalesceReq[T]
			select {
			case r = <-c.reqs:
			default:
				d, ok := c.lingerFor(reqs[0], &seen)
				if !ok {
					break collect
				}
				if timer == nil {
					timer = time.NewTimer(d)
				} else {
					timer.Reset(d)
				}
				select {
				case r = <-c.reqs:
				case <-timer.C:
					break collect
				}
			}
			observe(r)
			if w := c.weight(r.item); n+w > c.limit {
				pending = r
				break
			} else {
				n += w
			}
			reqs = append(reqs, r)
		}
		if timer != nil {
			timer.Stop()
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
