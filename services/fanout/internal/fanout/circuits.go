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

// OpenCircuits knows which endpoints' circuit breakers are open, and until
// when, from the endpoint_circuits table the dispatchers share. Fan-out
// parks a new keyless delivery to such an endpoint straight in
// delivery_retries, due when the circuit may be probed, instead of sending
// it through JetStream to a dispatcher that would only park it there: an
// endpoint that fails everything then costs one row per delivery, not a
// publish, a consume, a park and an ack.
//
// What it knows may be a poll interval old. A circuit it still thinks open
// after it closed holds a delivery until the open_until it read (the
// dispatcher would have held it until then too, had it seen it open); one
// it does not know open yet is sent as usual, and the dispatcher holds it.
type OpenCircuits struct {
	mu   sync.RWMutex
	open map[string]time.Time // endpoint id → open until
}

// NewOpenCircuits returns an empty set: every circuit closed.
func NewOpenCircuits() *OpenCircuits {
	return &OpenCircuits{open: map[string]time.Time{}}
}

// Until reports whether endpoint's circuit is open at now, and until when.
func (c *OpenCircuits) Until(endpoint string, now time.Time) (time.Time, bool) {
	c.mu.RLock()
	until, ok := c.open[endpoint]
	c.mu.RUnlock()
	if !ok || !now.Before(until) {
		return time.Time{}, false
	}
	return until, true
}

// openCircuitsSQL reads the circuits that are open. A half-open one is
// being probed by a dispatcher, which holds the deliveries that come
// meanwhile.
const openCircuitsSQL = `
SELECT endpoint_id, open_until FROM endpoint_circuits
WHERE circuit = 'open' AND open_until > now()`

// Refresh reads the open circuits once.
func (c *OpenCircuits) Refresh(ctx context.Context, db Querier) error {
	rows, err := db.Query(ctx, openCircuitsSQL)
	if err != nil {
		return fmt.Errorf("read open circuits: %w", err)
	}
	open := map[string]time.Time{}
	var id string
	var until time.Time
	if _, err := pgx.ForEachRow(rows, []any{&id, &until}, func() error {
		open[id] = until
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

// parkSQL stores deliveries held for an open circuit where the dispatchers'
// retry schedulers look for due deliveries (see the dispatcher's retry
// package): the payload is the Delivery, attempts not counted. A row that
// is there already (a dispatcher parked the delivery after an attempt) is
// kept.
const parkSQL = `
INSERT INTO delivery_retries (delivery_id, tenant_id, endpoint_id, due_at, payload, traceparent)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bytea[], $6::text[])
ON CONFLICT (delivery_id) DO NOTHING`

// held are the deliveries of one event parked for open circuits: the
// arguments of parkSQL.
type held struct {
	ids, tenants, endpoints []string
	due                     []time.Time
	payloads                [][]byte
	traceparents            []*string
}

func (p *held) add(id, tenant, endpoint string, due time.Time, payload []byte, traceparent string) {
	p.ids = append(p.ids, id)
	p.tenants = append(p.tenants, tenant)
	p.endpoints = append(p.endpoints, endpoint)
	p.due = append(p.due, due)
	p.payloads = append(p.payloads, payload)
	var tp *string
	if traceparent != "" {
		tp = &traceparent
	}
	p.traceparents = append(p.traceparents, tp)
}

func (p *held) args() []any {
	return []any{p.ids, p.tenants, p.endpoints, p.due, p.payloads, p.traceparents}
}
