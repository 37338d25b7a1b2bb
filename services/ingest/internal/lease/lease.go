// Package lease elects at most one holder of a named lease through a
// JetStream KV bucket whose TTL bounds how long a silent holder keeps it.
//
// [Lease.Acquire] takes the key with kv.Create (only one contender can
// create it); [Lease.Renew] rewrites it with kv.Update at the revision last
// written, so a renew fails once anybody else wrote the key or the bucket
// forgot it. A holder that cannot renew must stop acting as the holder at
// once: after the TTL another contender takes the key. [Lease.Held] also
// answers false, without a round trip, once the holder's last confirmed
// renew is older than the TTL minus a margin, so a holder paused past its
// TTL (GC, SIGSTOP) stops before doing anything new, even before its next
// renew fails.
//
// The bucket's TTL is used rather than a per-key TTL: kv.Update drops a
// per-key TTL (RESEARCH.md).
package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrLost is returned by [Lease.Renew] when the lease can no longer be
// proved held: another owner took it, the bucket forgot it, or the renew
// could not be confirmed.
var ErrLost = errors.New("lease lost")

// Lease is one contender's handle on a key of a lease bucket. It is safe for
// concurrent use.
type Lease struct {
	kv    jetstream.KeyValue
	key   string
	owner string
	ttl   time.Duration

	mu    sync.Mutex
	rev   uint64    // revision last written by us; 0 when not held
	until time.Time // held until then, by our clock
}

// New returns a handle on key in kv for owner, which must be unique to this
// process incarnation. ttl is the bucket's TTL.
func New(kv jetstream.KeyValue, key, owner string, ttl time.Duration) *Lease {
	return &Lease{kv: kv, key: key, owner: owner, ttl: ttl}
}

// Owner is the id this handle writes into the key.
func (l *Lease) Owner() string { return l.owner }

// margin is how much sooner than the bucket forgets a renew the holder
// considers the lease gone: clock rate differences, the server's expiry
// timer firing early, and a pause between [Lease.Held] and the work it
// guards.
func (l *Lease) margin() time.Duration { return l.ttl / 5 }

// Acquire tries once to take the lease. It answers false and no error when
// another owner holds it. A key that still names this owner (a renew whose
// answer was lost) is taken back.
func (l *Lease) Acquire(ctx context.Context) (bool, error) {
	start := time.Now()
	rev, err := l.kv.Create(ctx, l.key, []byte(l.owner))
	if err == nil {
		l.held(rev, start)
		return true, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return false, fmt.Errorf("create lease %s: %w", l.key, err)
	}
	e, err := l.kv.Get(ctx, l.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil // expired just now: the next attempt may create it
	case err != nil:
		return false, fmt.Errorf("read lease %s: %w", l.key, err)
	case string(e.Value()) != l.owner:
		return false, nil
	}
	rev, err = l.kv.Update(ctx, l.key, []byte(l.owner), e.Revision())
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil // rewritten or expired in between
		}
		return false, fmt.Errorf("take back lease %s: %w", l.key, err)
	}
	l.held(rev, start)
	return true, nil
}

// Renew extends the lease. Any failure, a transient one included, answers
// [ErrLost] and drops the lease: the holder cannot prove it still holds it.
func (l *Lease) Renew(ctx context.Context) error {
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	if rev == 0 {
		return fmt.Errorf("renew lease %s: %w: not held", l.key, ErrLost)
	}
	start := time.Now()
	next, err := l.kv.Update(ctx, l.key, []byte(l.owner), rev)
	if err != nil {
		l.drop()
		return fmt.Errorf("renew lease %s: %w: %w", l.key, ErrLost, err)
	}
	l.held(next, start)
	return nil
}

// Held reports whether the lease was confirmed recently enough that nobody
// else can hold it yet.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev != 0 && time.Now().Before(l.until)
}

// Keep renews the lease every interval until ctx ends (it returns nil) or a
// renew fails (it returns the [ErrLost] error). Each renew waits at most
// interval.
func (l *Lease) Keep(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, interval)
		err := l.Renew(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// Release gives the lease up at once, if this handle still holds it, so
// another contender need not wait for the TTL.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	if rev == 0 {
		return nil
	}
	l.drop()
	if err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("release lease %s: %w", l.key, err)
	}
	return nil
}

func (l *Lease) held(rev uint64, start time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rev, l.until = rev, start.Add(l.ttl-l.margin())
}

func (l *Lease) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rev, l.until = 0, time.Time{}
}
