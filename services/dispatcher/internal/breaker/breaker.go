// Package breaker is the per-endpoint circuit breaker (CONTRACT 3.3). Each
// replica keeps one local gobreaker breaker per endpoint that trips after
// consecutive retryable failures; the circuit's state is shared through the
// endpoint_circuits table, so every replica stops sending while it is open,
// and the probe after the cool-down is single-flight cluster-wide: the
// replica whose UPDATE claims it sends one real delivery, whose success
// closes the circuit everywhere.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sony/gobreaker/v2"
)

// Circuit states as shown in GET /endpoints/{id} health.circuit.
const (
	Closed   = "closed"
	Open     = "open"
	HalfOpen = "half_open"
)

// DB is what the shared state needs; *pgxpool.Pool implements it.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Config tunes the breakers.
type Config struct {
	// Failures is how many consecutive retryable failures open a circuit.
	Failures uint32
	// Deliveries is how many different deliveries those failures must come
	// from: one delivery working through its own retry schedule is that
	// delivery's business, not a sign the endpoint is down for everyone.
	Deliveries int
	// Cooldown is how long a circuit stays open the first time; each
	// failed probe doubles it, up to MaxCooldown.
	Cooldown    time.Duration
	MaxCooldown time.Duration
	// ProbeTimeout bounds a probe: past it another replica may probe.
	ProbeTimeout time.Duration
	// Refresh is how often the shared state is read.
	Refresh time.Duration
}

func (c *Config) setDefaults() {
	if c.Failures == 0 {
		c.Failures = 5
	}
	if c.Deliveries <= 0 {
		c.Deliveries = 2
	}
	if c.Cooldown <= 0 {
		c.Cooldown = 5 * time.Second
	}
	if c.MaxCooldown < c.Cooldown {
		c.MaxCooldown = max(5*time.Minute, c.Cooldown)
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = 90 * time.Second
	}
	if c.Refresh <= 0 {
		c.Refresh = 500 * time.Millisecond
	}
}

// Result is what became of an admitted attempt.
type Result int

// Results.
const (
	// Success: the endpoint answered (2xx, or a status not worth retrying).
	Success Result = iota + 1
	// Failure: a retryable failure (5xx, 429, timeout, connection error).
	Failure
	// Abandoned: no attempt was made after all (shutdown).
	Abandoned
)

// Done reports an admitted attempt's result.
type Done func(Result)

// streak counts the deliveries among an endpoint's consecutive failures
// (changes of delivery, which is at least the number of distinct ones).
type streak struct {
	last       string
	deliveries int
}

type shared struct {
	circuit    string
	openUntil  time.Time
	probeOwner string
	probeUntil time.Time
}

// Circuits are the breakers of every endpoint, for one replica.
type Circuits struct {
	db    DB
	owner string
	cfg   Config
	log   *slog.Logger

	mu      sync.Mutex
	streaks map[string]streak // failing deliveries since the last success, per endpoint
	local   map[string]*gobreaker.TwoStepCircuitBreaker[struct{}]
	shared  map[string]shared // endpoints whose circuit is not closed
	probing map[string]bool   // probes this replica is making
}

// New returns the Circuits of replica owner.
func New(db DB, owner string, cfg Config, log *slog.Logger) *Circuits {
	cfg.setDefaults()
	return &Circuits{db: db, owner: owner, cfg: cfg, log: log,
		streaks: map[string]streak{}, local: map[string]*gobreaker.TwoStepCircuitBreaker[struct{}]{}, shared: map[string]shared{}, probing: map[string]bool{}}
}

var errFailed = errors.New("retryable failure")

func (c *Circuits) newLocal(id string) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	n := c.cfg.Failures
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        id,
		MaxRequests: 1,
		Timeout:     c.cfg.Cooldown,
		ReadyToTrip: func(counts gobreaker.Counts) bool {
			return counts.ConsecutiveFailures >= n && c.streakDeliveries(id) >= c.cfg.Deliveries
		},
	})
}

func (c *Circuits) streakDeliveries(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streaks[id].deliveries
}

// noteResult updates endpoint id's failure streak with delivery's result.
func (c *Circuits) noteResult(id, delivery string, r Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch r {
	case Success:
		delete(c.streaks, id)
	case Failure:
		s := c.streaks[id]
		if s.last != delivery {
			s.last, s.deliveries = delivery, s.deliveries+1
		}
		c.streaks[id] = s
	}
}

// Allow asks whether endpoint id may be attempted now for delivery. It returns done, to
// be called with the attempt's result, or, when the circuit holds the
// endpoint, the time until which its deliveries should wait (no attempt).
func (c *Circuits) Allow(ctx context.Context, id, delivery string) (Done, time.Time) {
	now := time.Now()
	c.mu.Lock()
	s, notClosed := c.shared[id]
	if notClosed {
		probing := c.probing[id]
		c.mu.Unlock()
		switch {
		case probing:
			return nil, now.Add(min(c.cfg.ProbeTimeout, 2*time.Second))
		case s.circuit == Open && now.Before(s.openUntil):
			return nil, s.openUntil
		case s.circuit == HalfOpen && now.Before(s.probeUntil):
			return nil, now.Add(min(s.probeUntil.Sub(now), 2*time.Second))
		}
		ok, err := c.claimProbe(ctx, id)
		if err != nil {
			c.log.Warn("claim circuit probe", "endpoint_id", id, "err", err)
			return nil, now.Add(time.Second)
		}
		if !ok {
			return nil, now.Add(2 * time.Second)
		}
		c.mu.Lock()
		c.probing[id] = true
		c.shared[id] = shared{circuit: HalfOpen, probeOwner: c.owner, probeUntil: now.Add(c.cfg.ProbeTimeout)}
		c.mu.Unlock()
		c.log.Info("circuit half-open, probing", "endpoint_id", id)
		return c.probeDone(id), time.Time{}
	}
	cb, ok := c.local[id]
	if !ok {
		cb = c.newLocal(id)
		c.local[id] = cb
	}
	c.mu.Unlock()
	localDone, err := cb.Allow()
	if err != nil {
		// Open here, or its local probe is out: wait a cool-down.
		return nil, now.Add(c.cfg.Cooldown)
	}
	return func(r Result) {
		c.noteResult(id, delivery, r)
		switch r {
		case Failure:
			localDone(errFailed)
			if cb.State() == gobreaker.StateOpen {
				c.trip(id)
			}
		case Success:
			localDone(nil)
		case Abandoned:
			localDone(nil) // gobreaker has no "never mind"; no attempt is no failure
		}
	}, time.Time{}
}

// Phase is what an endpoint's shared circuit means, at one moment, for the
// deliveries it holds.
type Phase int

// Phases.
const (
	// PhaseClosed: the circuit holds nothing (closed, or not known open).
	PhaseClosed Phase = iota
	// PhaseHeld: open, or its probe is out; [Circuits.Allow] holds
	// deliveries without an attempt.
	PhaseHeld
	// PhaseProbe: open past its cool-down and no probe claimed: the next
	// delivery [Circuits.Allow] sees may claim the probe.
	PhaseProbe
)

// Phase reports endpoint id's shared circuit phase at now, and, when held,
// until when [Circuits.Allow] would hold a delivery. It has no side effect:
// it claims no probe. A circuit only this replica's local breaker holds is
// PhaseClosed: nothing shared records it.
func (c *Circuits) Phase(id string, now time.Time) (Phase, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, notClosed := c.shared[id]
	if !notClosed {
		return PhaseClosed, time.Time{}
	}
	switch {
	case c.probing[id]:
		return PhaseHeld, now.Add(min(c.cfg.ProbeTimeout, 2*time.Second))
	case s.circuit == Open && now.Before(s.openUntil):
		return PhaseHeld, s.openUntil
	case s.circuit == HalfOpen && now.Before(s.probeUntil):
		return PhaseHeld, now.Add(min(s.probeUntil.Sub(now), 2*time.Second))
	}
	return PhaseProbe, time.Time{}
}

// trip opens id's shared circuit (from closed).
func (c *Circuits) trip(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	until := time.Now().Add(c.cfg.Cooldown)
	tag, err := c.db.Exec(ctx, `
INSERT INTO endpoint_circuits (endpoint_id, circuit, changed_at, open_until, opens)
VALUES ($1, 'open', now(), now() + $2::interval, 1)
ON CONFLICT (endpoint_id) DO UPDATE
SET circuit = 'open', changed_at = now(), open_until = EXCLUDED.open_until, opens = 1, probe_owner = NULL, probe_until = NULL
WHERE endpoint_circuits.circuit = 'closed'`, id, c.cfg.Cooldown)
	if err != nil {
		// The local breaker still holds this replica back.
		c.log.Warn("record open circuit", "endpoint_id", id, "err", err)
		return
	}
	c.mu.Lock()
	if _, ok := c.shared[id]; !ok {
		c.shared[id] = shared{circuit: Open, openUntil: until}
	}
	c.mu.Unlock()
	if tag.RowsAffected() == 1 {
		c.log.Warn("circuit opened", "endpoint_id", id, "failures", c.cfg.Failures)
	}
}

func (c *Circuits) claimProbe(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tag, err := c.db.Exec(ctx, `
UPDATE endpoint_circuits
SET circuit = 'half_open', changed_at = CASE WHEN circuit = 'half_open' THEN changed_at ELSE now() END,
    probe_owner = $2, probe_until = now() + $3::interval
WHERE endpoint_id = $1 AND circuit <> 'closed' AND open_until <= now()
  AND (probe_until IS NULL OR probe_until < now())`, id, c.owner, c.cfg.ProbeTimeout)
	if err != nil {
		return false, fmt.Errorf("claim probe of %s: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

func (c *Circuits) probeDone(id string) Done {
	return func(r Result) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		switch r {
		case Success:
			_, err = c.db.Exec(ctx, `
UPDATE endpoint_circuits SET circuit = 'closed', changed_at = now(), opens = 0, open_until = NULL,
    probe_owner = NULL, probe_until = NULL
WHERE endpoint_id = $1 AND probe_owner = $2`, id, c.owner)
			if err == nil {
				c.log.Info("circuit closed", "endpoint_id", id)
			}
		case Failure:
			_, err = c.db.Exec(ctx, `
UPDATE endpoint_circuits SET circuit = 'open', changed_at = now(), opens = opens + 1,
    open_until = now() + LEAST($3::interval, $4::interval * power(2, opens)),
    probe_owner = NULL, probe_until = NULL
WHERE endpoint_id = $1 AND probe_owner = $2`, id, c.owner, c.cfg.MaxCooldown, c.cfg.Cooldown)
			if err == nil {
				c.log.Warn("circuit probe failed, open again", "endpoint_id", id)
			}
		case Abandoned:
			_, err = c.db.Exec(ctx, `
UPDATE endpoint_circuits SET probe_owner = NULL, probe_until = NULL WHERE endpoint_id = $1 AND probe_owner = $2`, id, c.owner)
		}
		if err != nil {
			c.log.Warn("record circuit probe result", "endpoint_id", id, "err", err)
		}
		c.mu.Lock()
		delete(c.probing, id)
		if r == Success {
			delete(c.shared, id)
			c.local[id] = c.newLocal(id)
		} else {
			c.shared[id] = shared{circuit: Open, openUntil: time.Now().Add(c.cfg.Cooldown)}
		}
		c.mu.Unlock()
		if err := c.refresh(ctx); err != nil {
			c.log.Warn("read circuits", "err", err)
		}
	}
}

// Load reads the shared state once; call it before the first Allow, so a
// replica that starts while a circuit is open does not send through it.
func (c *Circuits) Load(ctx context.Context) error { return c.refresh(ctx) }

// Run keeps the shared state fresh until ctx ends.
func (c *Circuits) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.Refresh)
	defer t.Stop()
	for {
		if err := c.refresh(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("read circuits", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Circuits) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rows, err := c.db.Query(ctx, `
SELECT endpoint_id, circuit, coalesce(open_until, now()), coalesce(probe_owner, ''), coalesce(probe_until, now())
FROM endpoint_circuits WHERE circuit <> 'closed'`)
	if err != nil {
		return fmt.Errorf("read circuits: %w", err)
	}
	next := map[string]shared{}
	for rows.Next() {
		var (
			id string
			s  shared
		)
		if err := rows.Scan(&id, &s.circuit, &s.openUntil, &s.probeOwner, &s.probeUntil); err != nil {
			rows.Close()
			return fmt.Errorf("scan circuit: %w", err)
		}
		next[id] = s
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read circuits: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.shared {
		if _, still := next[id]; !still {
			// Closed elsewhere by a successful probe: start afresh here too.
			c.local[id] = c.newLocal(id)
		}
	}
	c.shared = next
	return nil
}

// State is endpoint id's circuit as this replica sees it.
func (c *Circuits) State(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.shared[id]; ok {
		return s.circuit
	}
	if cb, ok := c.local[id]; ok && cb.State() != gobreaker.StateClosed {
		return Open
	}
	return Closed
}

// OpenCount is how many endpoints' circuits this replica sees as open or
// half-open (the circuit_breakers_open gauge).
func (c *Circuits) OpenCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for id, s := range c.shared {
		if s.circuit != Closed {
			n++
		} else if cb, ok := c.local[id]; ok && cb.State() != gobreaker.StateClosed {
			n++
		}
	}
	for id, cb := range c.local {
		if _, ok := c.shared[id]; !ok && cb.State() != gobreaker.StateClosed {
			n++
		}
	}
	return n
}
