package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// BatchSender sends a batch of statements; *pgxpool.Pool implements it.
type BatchSender interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Group commits the statements of concurrent callers together: what the
// callers queue while a flush is running is sent as one batch, one round trip
// and one implicit transaction, so one WAL flush serves them all (group
// commit). A lone caller waits for nothing: its statements go at once.
//
// A batch is atomic, so a statement that fails aborts the others' work too:
// then the failing caller's statements are sent again on their own, the
// others' again together, and every caller gets the outcome of its own
// statements only.
type Group struct {
	db            BatchSender
	workers       int
	maxStatements int
	timeout       time.Duration

	start sync.Once
	reqs  chan *groupReq
}

type groupReq struct {
	ctx   context.Context
	batch *pgx.Batch
	read  func(pgx.BatchResults) error
	done  chan error
}

// NewGroup returns a Group sending through db with workers flushes in flight
// at once, each of at most maxStatements statements (a caller's statements
// are never split).
func NewGroup(db BatchSender, workers, maxStatements int) *Group {
	return &Group{db: db, workers: max(workers, 1), maxStatements: max(maxStatements, 1), timeout: 30 * time.Second,
		reqs: make(chan *groupReq, 4096)}
}

// Do sends b's statements, with other callers' statements when they are
// queued at the same time, and calls read with the results of b's statements
// in order. read must read every result of b (it may stop at an error) and
// must be safe to call again: after a failed shared batch it is called again
// with the results of the next attempt. The batch runs with ctx's values
// (the trace of the first caller of a shared batch) but not its
// cancellation; Do returns early with ctx's error when ctx ends first.
func (g *Group) Do(ctx context.Context, b *pgx.Batch, read func(pgx.BatchResults) error) error {
	if b.Len() == 0 {
		return nil
	}
	g.start.Do(func() {
		for range g.workers {
			go g.run()
		}
	})
	r := &groupReq{ctx: ctx, batch: b, read: read, done: make(chan error, 1)}
	return handOver(ctx, g.reqs, r, r.done, "statements")
}

// handOver queues r on reqs for a worker and waits for its outcome on
// done, or until ctx ends.
func handOver[R any](ctx context.Context, reqs chan<- R, r R, done <-chan error, what string) error {
	select {
	case reqs <- r:
	case <-ctx.Done():
		return fmt.Errorf("queue %s: %w", what, ctx.Err())
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("wait for %s: %w", what, ctx.Err())
	}
}

func (g *Group) run() {
	var pending []*groupReq
	for {
		var reqs []*groupReq
		if len(pending) > 0 {
			reqs, pending = pending[:1], pending[1:]
		} else {
			reqs = []*groupReq{<-g.reqs}
		}
		n := reqs[0].batch.Len()
	collect:
		for n < g.maxStatements {
			var r *groupReq
			if len(pending) > 0 {
				r, pending = pending[0], pending[1:]
			} else {
				select {
				case r = <-g.reqs:
				default:
					break collect
				}
			}
			if n+r.batch.Len() > g.maxStatements {
				pending = append(pending, r)
				break
			}
			reqs = append(reqs, r)
			n += r.batch.Len()
		}
		g.flush(reqs)
	}
}

// flush sends reqs as one batch. When a caller's statement fails (a
// PostgreSQL error), that caller's statements are sent again alone, for its
// own outcome, and the others' again together; an error not caused by a
// statement (a lost connection) is every caller's.
func (g *Group) flush(reqs []*groupReq) {
	for len(reqs) > 1 {
		merged := &pgx.Batch{}
		for _, r := range reqs {
			queue(merged, r.batch)
		}
		failed := -1
		err := g.send(reqs[0].ctx, merged, func(br pgx.BatchResults) error {
			for i, r := range reqs {
				if err := r.read(br); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			for _, r := range reqs {
				r.done <- nil
			}
			return
		case failed < 0 || !errors.As(err, &pgErr):
			for _, r := range reqs {
				r.done <- err
			}
			return
		}
		r := reqs[failed]
		r.done <- g.send(r.ctx, r.batch, r.read)
		reqs = append(reqs[:failed:failed], reqs[failed+1:]...)
	}
	if len(reqs) == 1 {
		r := reqs[0]
		r.done <- g.send(r.ctx, r.batch, r.read)
	}
}

// queue adds from's statements to b as new queued queries: pgx keeps a
// prepared statement's description in each one sent, which must not follow
// it into another batch (it may name a statement the next connection does
// not have).
func queue(b, from *pgx.Batch) {
	for _, q := range from.QueuedQueries {
		b.Queue(q.SQL, q.Arguments...)
	}
}

func (g *Group) send(ctx context.Context, b *pgx.Batch, read func(pgx.BatchResults) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.timeout)
	defer cancel()
	fresh := &pgx.Batch{}
	queue(fresh, b)
	br := g.db.SendBatch(ctx, fresh)
	err := read(br)
	return errors.Join(err, br.Close())
}
