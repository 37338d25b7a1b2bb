package fanout

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Querier reads rows; *pgxpool.Pool implements it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// OpenCircuits knows which endpoints' circuit breakers are not closed, from
// the endpoint_circuits table the dispatchers share. Fan-out parks a new
// keyless delivery to such an endpoint straight in delivery_retries as held
// for the circuit, instead of sending it through JetStream to a dispatcher
// that would only park it there: an endpoint that fails everything then
// costs one row per delivery, not a publish, a consume, a park and an ack.
// The dispatchers' schedulers release one held row as the probe when the
// circuit may be probed, and all of them once it closed (see the
// dispatcher's retry package).
//
// What it knows may be a poll interval old. A delivery it holds after the
// circuit closed is released by the next sweep of a scheduler; one it does
// not know held yet is sent as usual, and the dispatcher holds it.
type OpenCircuits struct {
	mu   sync.RWMutex
	open map[string]struct{} // endpoint ids
}

// NewOpenCircuits returns an empty set: every circuit closed.
func NewOpenCircuits() *OpenCircuits {
	return &OpenCircuits{open: map[string]struct{}{}}
}

// Holds reports whether endpoint's circuit holds its deliveries.
func (c *OpenCircuits) Holds(endpoint string) bool {
	c.mu.RLock()
	_, ok := c.open[endpoint]
	c.mu.RUnlock()
	return ok
}

// openCircuitsSQL reads the circuits that are not closed: open (even past
// the cool-down: the probe comes from the held rows) or half-open (a probe
// is out).
const openCircuitsSQL = `SELECT endpoint_id FROM endpoint_circuits WHERE circuit <> 'closed'`

// Refresh reads the open circuits once.
func (c *OpenCircuits) Refresh(ctx context.Context, db Querier) error {
	rows, err := db.Query(ctx, openCircuitsSQL)
	if err != nil {
		return fmt.Errorf("read open circuits: %w", err)
	}
	open := map[string]struct{}{}
	var id string
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error {
		open[id] = struct{}{}
		return nil
	}); err != nil {
		return fmt.Errorf("read open circuits: %w", err)
	}
	c.mu.Lock()
	c.open = open
	c.mu.Unlock()
	return nil
}

// Run refreshes the set every interval until ctx ends. While the database
// cannot be read, it forgets what it knew after a minute (the deliveries
// then go through JetStream, as without it).
func (c *OpenCircuits) Run(ctx context.Context, db Querier, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	lastOK := time.Now()
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := c.Refresh(qctx, db)
		cancel()
		switch {
		case err == nil:
			lastOK = time.Now()
		case ctx.Err() != nil:
			return
		default:
			log.Debug("refresh open circuits", "err", err)
			if time.Since(lastOK) > time.Minute {
				c.mu.Lock()
				clear(c.open)
				c.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
