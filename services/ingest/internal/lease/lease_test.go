package lease

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/natstest"
)

const testTTL = 2 * time.Second

func bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	return bucketTTL(t, testTTL)
}

// bucketTTL is a leases bucket whose keys expire ttl after their last write.
func bucketTTL(t *testing.T, ttl time.Duration) jetstream.KeyValue {
	t.Helper()
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "leases_test", History: 1, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// eventually polls f until it answers true or within passes.
func eventually(t *testing.T, within time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAcquireRenewRelease(t *testing.T) {
	t.Parallel()
	kv := bucket(t)
	ctx := t.Context()
	a, b := New(kv, "intake", "a", testTTL), New(kv, "intake", "b", testTTL)

	if ok, err := a.Acquire(ctx); err != nil || !ok {
		t.Fatalf("a acquire: %v %v", ok, err)
	}
	if !a.Held() {
		t.Fatal("a does not hold the lease it acquired")
	}
	if ok, err := b.Acquire(ctx); err != nil || ok {
		t.Fatalf("b acquired a held lease: %v %v", ok, err)
	}
	if b.Held() {
		t.Fatal("b holds a lease it did not acquire")
	}
	if err := b.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("b renewed a lease it never held: %v", err)
	}
	// Renewing keeps it past several TTLs.
	for range 4 {
		time.Sleep(testTTL / 2)
		if err := a.Renew(ctx); err != nil {
			t.Fatalf("renew: %v", err)
		}
		if ok, _ := b.Acquire(ctx); ok {
			t.Fatal("b took a lease a keeps renewing")
		}
	}
	e, err := kv.Get(ctx, "intake")
	if err != nil || string(e.Value()) != "a" {
		t.Fatalf("key %v %v", e, err)
	}
	// Released: b takes it at once.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Held() {
		t.Fatal("a still holds a released lease")
	}
	if ok, err := b.Acquire(ctx); err != nil || !ok {
		t.Fatalf("b acquire after release: %v %v", ok, err)
	}
}

// TestExpiryAndTakeover: a holder that stops renewing (killed, paused)
// loses the lease after the TTL; a second contender takes it; the old
// holder's late renew fails and its Held answered false before that.
func TestExpiryAndTakeover(t *testing.T) {
	t.Parallel()
	kv := bucket(t)
	ctx := t.Context()
	a, b := New(kv, "intake", "a", testTTL), New(kv, "intake", "b", testTTL)
	if ok, err := a.Acquire(ctx); err != nil || !ok {
		t.Fatalf("a acquire: %v %v", ok, err)
	}
	began := time.Now()
	// a "pauses": no renew. Held turns false before anyone can take over.
	eventually(t, testTTL, "a's Held turns false", func() bool { return !a.Held() })
	// b may only get it once the TTL has passed since a's write (before
	// began): on a loaded machine this try can come that late.
	if ok, _ := b.Acquire(ctx); ok && time.Since(began) < testTTL {
		t.Fatalf("b took the lease %s after a's write, before the TTL passed, while a's Held had just turned false", time.Since(began).Round(time.Millisecond))
	}
	eventually(t, 3*testTTL, "b takes over", func() bool {
		ok, err := b.Acquire(ctx)
		if err != nil {
			t.Fatalf("b acquire: %v", err)
		}
		return ok
	})
	if d := time.Since(began); d < testTTL-testTTL/10 {
		t.Errorf("b took over after %s, before the TTL (%s)", d, testTTL)
	}
	t.Logf("b took over %s after a's last write (TTL %s)", time.Since(began).Round(time.Millisecond), testTTL)
	// a wakes up: its renew fails, it does not hold the lease, and it
	// cannot take it back.
	if err := a.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("zombie renew: %v", err)
	}
	if a.Held() {
		t.Fatal("zombie still holds the lease")
	}
	if ok, err := a.Acquire(ctx); err != nil || ok {
		t.Fatalf("zombie acquire: %v %v", ok, err)
	}
	if err := b.Renew(ctx); err != nil {
		t.Fatalf("b renew: %v", err)
	}
	// The zombie's release must not delete b's lease.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "intake"); err != nil || string(e.Value()) != "b" {
		t.Fatalf("key after zombie release %v %v", e, err)
	}
}

// TestTakeBackOwnKey: a renew whose answer was lost drops the lease
// locally; the same owner takes its key back without waiting for the TTL.
func TestTakeBackOwnKey(t *testing.T) {
	t.Parallel()
	kv := bucket(t)
	ctx := t.Context()
	a := New(kv, "intake", "a", testTTL)
	if ok, err := a.Acquire(ctx); err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Renew(cctx); !errors.Is(err, ErrLost) {
		t.Fatalf("renew with a dead context: %v", err)
	}
	if a.Held() {
		t.Fatal("held after a failed renew")
	}
	if ok, err := a.Acquire(ctx); err != nil || !ok {
		t.Fatalf("take back: %v %v", ok, err)
	}
	if err := a.Renew(ctx); err != nil {
		t.Fatalf("renew after take back: %v", err)
	}
}

// TestKeep renews until its context ends, and reports a lost lease.
func TestKeep(t *testing.T) {
	t.Parallel()
	// A longer TTL than the other tests': each renew may take up to Keep's
	// interval, and a loaded machine can make one KV update take half a
	// second.
	const ttl = 3 * testTTL
	kv := bucketTTL(t, ttl)
	ctx := t.Context()
	a := New(kv, "intake", "a", ttl)
	if ok, err := a.Acquire(ctx); err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	kctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Keep(kctx, ttl/4) }()
	time.Sleep(ttl + ttl/2)
	if !a.Held() {
		t.Fatal("Keep let the lease lapse")
	}
	// Someone overwrites the key (an operator, a split brain): Keep notices.
	if _, err := kv.Put(ctx, "intake", []byte("intruder")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrLost) {
			t.Fatalf("Keep returned %v, want ErrLost", err)
		}
	case <-time.After(2 * ttl):
		t.Fatal("Keep did not notice the overwritten key")
	}
	stop()
	if a.Held() {
		t.Fatal("held after Keep reported the loss")
	}
}

// TestBucket checks the declared intake bucket keeps its TTL.
func TestBucket(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	kv, err := bus.EnsureLeasesBucket(t.Context(), js, bus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureLeasesBucket(t.Context(), js, bus.Options{}); err != nil {
		t.Fatalf("ensure twice: %v", err)
	}
	l := New(kv, bus.LeaseIntake, "a", bus.LeaseTTL)
	if ok, err := l.Acquire(t.Context()); err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
}
