package fanout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// deliveryRow is one deliveries row fan-out writes.
type deliveryRow struct {
	id, tenant, event, endpoint, status string
	// hold marks a delivery held for its endpoint's open circuit;
	// traceparent is then the context of its fan-out, for its release to
	// link back to.
	hold        bool
	traceparent *string
}

// insertRowsSQL writes deliveries rows, in the order given. A repeated
// fan-out derives the same ids and changes nothing.
const insertRowsSQL = `
INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, circuit_hold, traceparent)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::text[])
ON CONFLICT (id) DO NOTHING`

// rowWriter inserts the deliveries rows of events fanned out at the same
// time in one statement, sorted by id: one statement costs PostgreSQL about
// half as much per row as a statement per event, and rows taken in id order
// cannot deadlock with the attempt-log writer, which upserts deliveries rows
// in id order too (it may get there first: fan-out publishes and inserts at
// the same time). A lone event waits for nothing.
type rowWriter struct {
	db      Execer
	workers int
	max     int
	start   sync.Once
	reqs    chan *rowsReq
}

type rowsReq struct {
	ctx  context.Context
	rows []deliveryRow
	done chan error
}

func newRowWriter(db Execer, workers, maxRows int) *rowWriter {
	return &rowWriter{db: db, workers: max(workers, 1), max: max(maxRows, 1), reqs: make(chan *rowsReq, 4096)}
}

// insert writes rows, with the rows of concurrent callers, and returns
// once they are committed. When a shared statement fails on a value, each
// caller's rows are written again alone, so only the bad one fails.
func (w *rowWriter) insert(ctx context.Context, rows []deliveryRow) error {
	if len(rows) == 0 {
		return nil
	}
	w.start.Do(func() {
		for range w.workers {
			go w.run()
		}
	})
	r := &rowsReq{ctx: ctx, rows: rows, done: make(chan error, 1)}
	select {
	case w.reqs <- r:
	case <-ctx.Done():
		return fmt.Errorf("queue deliveries rows: %w", ctx.Err())
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("wait for deliveries rows: %w", ctx.Err())
	}
}

func (w *rowWriter) run() {
	var (
		reqs    []*rowsReq
		pending *rowsReq
	)
	for {
		reqs = reqs[:0]
		if pending != nil {
			reqs, pending = append(reqs, pending), nil
		} else {
			reqs = append(reqs, <-w.reqs)
		}
		n := len(reqs[0].rows)
	collect:
		for n < w.max {
			select {
			case r := <-w.reqs:
				if n+len(r.rows) > w.max {
					pending = r
					break collect
				}
				reqs = append(reqs, r)
				n += len(r.rows)
			default:
				break collect
			}
		}
		err := w.write(reqs[0].ctx, reqs...)
		var pgErr *pgconn.PgError
		alone := err != nil && len(reqs) > 1 && errors.As(err, &pgErr)
		for _, r := range reqs {
			if alone {
				err = w.write(r.ctx, r)
			}
			r.done <- err
		}
		clear(reqs)
	}
}

// write inserts the rows of reqs in one statement, with ctx's values (the
// trace of the first caller) but not its cancellation: the statement is the
// others' too.
func (w *rowWriter) write(ctx context.Context, reqs ...*rowsReq) error {
	var all []deliveryRow
	if len(reqs) == 1 {
		all = slices.Clone(reqs[0].rows)
	} else {
		for _, r := range reqs {
			all = append(all, r.rows...)
		}
	}
	slices.SortFunc(all, func(a, b deliveryRow) int { return cmp.Compare(a.id, b.id) })
	var (
		ids, tenants, events, endpoints, statuses = make([]string, len(all)), make([]string, len(all)), make([]string, len(all)), make([]string, len(all)), make([]string, len(all))
		holds                                     = make([]bool, len(all))
		traceparents                              = make([]*string, len(all))
	)
	for i, r := range all {
		ids[i], tenants[i], events[i], endpoints[i], statuses[i] = r.id, r.tenant, r.event, r.endpoint, r.status
		holds[i], traceparents[i] = r.hold, r.traceparent
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	if _, err := w.db.Exec(ctx, insertRowsSQL, ids, tenants, events, endpoints, statuses, holds, traceparents); err != nil {
		return fmt.Errorf("insert %d deliveries rows: %w", len(all), err)
	}
	return nil
}
