package parking

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// maxBatch caps the keys of one blocked-key read.
const maxBatch = 500

// batchTimeout bounds one batched read.
const batchTimeout = 10 * time.Second

// reads batches the "is this key blocked?" reads of concurrent deliveries:
// while one query runs, the keys asked for meanwhile wait, and the next
// query reads them all at once. A lone read is not delayed. Each answer is
// as fresh as a read of its own made when it was asked: the query that
// answers it starts after it was asked.
type reads struct {
	db DB

	mu      sync.Mutex
	pending []*readReq
	running bool
}

type readReq struct {
	endpoint, token string
	done            chan struct{}
	blocked         bool
	err             error
}

// blocked reports whether (endpoint, token) has a blocked_keys row.
func (r *reads) blocked(ctx context.Context, endpoint, token string) (bool, error) {
	q := &readReq{endpoint: endpoint, token: token, done: make(chan struct{})}
	r.mu.Lock()
	r.pending = append(r.pending, q)
	lead := !r.running
	r.running = true
	r.mu.Unlock()
	if lead {
		// This caller runs the queries until its own is answered; the
		// others only wait for theirs.
		r.run(q)
	}
	select {
	case <-q.done:
		return q.blocked, q.err
	case <-ctx.Done():
		return false, fmt.Errorf("read blocked key: %w", ctx.Err())
	}
}

// run reads batches until own (nil: every pending read) is answered, then
// leaves what has been asked since to a goroutine of its own.
func (r *reads) run(own *readReq) {
	for {
		r.mu.Lock()
		if own != nil && isDone(own) && len(r.pending) > 0 {
			r.mu.Unlock()
			go r.run(nil)
			return
		}
		batch := r.pending
		if len(batch) > maxBatch {
			batch = batch[:maxBatch:maxBatch]
			r.pending = r.pending[maxBatch:]
		} else {
			r.pending = nil
		}
		if len(batch) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		r.read(batch)
	}
}

func (r *reads) read(batch []*readReq) {
	defer func() {
		for _, q := range batch {
			close(q.done)
		}
	}()
	endpoints := make([]string, len(batch))
	tokens := make([]string, len(batch))
	for i, q := range batch {
		endpoints[i], tokens[i] = q.endpoint, q.token
	}
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	rows, err := r.db.Query(ctx, `
SELECT b.endpoint_id, b.key_token FROM blocked_keys b
JOIN unnest($1::text[], $2::text[]) AS k(endpoint_id, key_token)
  ON b.endpoint_id = k.endpoint_id AND b.key_token = k.key_token`, endpoints, tokens)
	if err != nil {
		setErr(batch, fmt.Errorf("read blocked keys: %w", err))
		return
	}
	type key struct{ endpoint, token string }
	blocked := map[key]bool{}
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.endpoint, &k.token); err != nil {
			rows.Close()
			setErr(batch, fmt.Errorf("read blocked keys: %w", err))
			return
		}
		blocked[k] = true
	}
	if err := rows.Err(); err != nil {
		setErr(batch, fmt.Errorf("read blocked keys: %w", err))
		return
	}
	for _, q := range batch {
		q.blocked = blocked[key{q.endpoint, q.token}]
	}
}

func isDone(q *readReq) bool {
	select {
	case <-q.done:
		return true
	default:
		return false
	}
}

func setErr(batch []*readReq, err error) {
	for _, q := range batch {
		q.err = err
	}
}
