// Package ratelimit holds each endpoint to its rate_limit (requests per
// second) across dispatcher replicas: every replica runs a token bucket per
// endpoint at rate/N, N being the number of live replicas, which each
// replica learns from heartbeats in the KV bucket hookline_dispatchers.
// Excess requests wait; they neither fail nor spend attempts. Tolerance: see
// docs/design/ordering.md.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// Limiters are the token buckets of one replica.
type Limiters struct {
	replicas func() int

	mu sync.Mutex
	m  map[string]*bucket
}

type bucket struct {
	lim      *rate.Limiter
	perSec   uint32
	replicas int
}

// New returns Limiters that divide each endpoint's rate by replicas().
func New(replicas func() int) *Limiters {
	return &Limiters{replicas: replicas, m: map[string]*bucket{}}
}

// Wait waits until ep may get another request from this replica, or ctx
// ends. An endpoint without a rate limit never waits.
func (l *Limiters) Wait(ctx context.Context, ep *hooklinev1.Endpoint) error {
	r := ep.GetRateLimit()
	if r == 0 {
		return nil
	}
	n := max(1, l.replicas())
	l.mu.Lock()
	b, ok := l.m[ep.GetId()]
	if !ok || b.perSec != r || b.replicas != n {
		limit := rate.Limit(float64(r) / float64(n))
		if !ok {
			b = &bucket{lim: rate.NewLimiter(limit, 1)}
			l.m[ep.GetId()] = b
		} else {
			b.lim.SetLimit(limit)
		}
		b.perSec, b.replicas = r, n
	}
	l.mu.Unlock()
	if err := b.lim.Wait(ctx); err != nil {
		return fmt.Errorf("wait for rate limit: %w", err)
	}
	return nil
}

// Bucket is the KV bucket of replica heartbeats.
const Bucket = "hookline_dispatchers"

// Heartbeat timing: a replica puts its key every Beat; the bucket forgets a
// key TTL after its last put.
const (
	Beat = 2 * time.Second
	TTL  = 6 * time.Second
)

// Members counts the live dispatcher replicas.
type Members struct {
	kv    jetstream.KeyValue
	owner string
	log   *slog.Logger
	n     atomic.Int64
	// seen is when each replica's key was last listed (used by beat only).
	// A listing that runs while another replica re-puts its key can miss
	// that key (its previous revision is gone, the new one not yet
	// listed), so a replica counts until TTL after it was last seen, not
	// only when the latest listing held it.
	seen map[string]time.Time
}

// EnsureMembers creates or opens the heartbeat bucket and checks that the
// server kept its TTL (servers that ignore it would count the dead forever).
func EnsureMembers(ctx context.Context, js jetstream.JetStream, owner string, log *slog.Logger) (*Members, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "dispatcher replica heartbeats (rate-limit sharing)",
		History:     1,
		TTL:         TTL,
		Storage:     jetstream.MemoryStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("create or update KV bucket %s: %w", Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("read KV bucket %s: %w", Bucket, err)
	}
	if st.TTL() != TTL {
		return nil, fmt.Errorf("KV bucket %s: server kept TTL %s, want %s", Bucket, st.TTL(), TTL)
	}
	m := &Members{kv: kv, owner: owner, log: log, seen: map[string]time.Time{}}
	m.n.Store(1)
	return m, nil
}

// Count is the number of live replicas last seen (at least 1).
func (m *Members) Count() int { return int(max(1, m.n.Load())) }

// Run beats and counts until ctx ends, then removes this replica's key.
func (m *Members) Run(ctx context.Context) {
	t := time.NewTicker(Beat)
	defer t.Stop()
	for {
		m.beat(ctx)
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = m.kv.Delete(dctx, m.owner)
			cancel()
			return
		case <-t.C:
		}
	}
}

func (m *Members) beat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := m.kv.Put(ctx, m.owner, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		if ctx.Err() == nil {
			m.log.Warn("dispatcher heartbeat", "err", err)
		}
		return
	}
	keys, err := m.kv.ListKeys(ctx)
	if err != nil {
		m.log.Warn("count dispatcher replicas", "err", err)
		return
	}
	now := time.Now()
	for k := range keys.Keys() {
		m.seen[k] = now
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return
	}
	m.seen[m.owner] = now // its own put just succeeded
	for k, at := range m.seen {
		if now.Sub(at) >= TTL {
			delete(m.seen, k)
		}
	}
	m.n.Store(int64(len(m.seen)))
}
