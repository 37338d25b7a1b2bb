package events

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/ops"
)

func (b *bundle) publishKeyed(t *testing.T, id, key string, n int) {
	t.Helper()
	msg := &nats.Msg{Subject: "hookline.publish.acme.order.updated", Data: fmt.Appendf(nil, `{"n":%d}`, n), Header: nats.Header{}}
	msg.Header.Set(bus.HeaderMsgID, id)
	msg.Header.Set(bus.HeaderOrderingKey, key)
	if _, err := b.js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatalf("publish %s: %v", id, err)
	}
}

// checkEventOrder fails t unless the events stream holds want messages and,
// per ordering key, their ids ascend.
func (b *bundle) checkEventOrder(t *testing.T, want int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d events published", want), func() bool { return len(streamEvents(t, b.eventMsgs(t))) == want })
	last := map[string]string{}
	for _, ev := range streamEvents(t, b.eventMsgs(t)) {
		if prev := last[ev.GetOrderingKey()]; prev >= ev.GetId() {
			t.Errorf("key %s: %s after %s", ev.GetOrderingKey(), ev.GetId(), prev)
		}
		last[ev.GetOrderingKey()] = ev.GetId()
	}
}

func (b *bundle) intakeOwner(t *testing.T) string {
	t.Helper()
	kv, err := b.js.KeyValue(t.Context(), bus.LeasesBucket)
	if err != nil {
		return ""
	}
	e, err := kv.Get(t.Context(), bus.LeaseIntake)
	if err != nil {
		return ""
	}
	return string(e.Value())
}

// startIntake runs svc's intake until the returned stop is called (or the
// test ends) and returns its health.
func startIntake(t *testing.T, svc *Service) (*ops.Health, func()) {
	t.Helper()
	health := ops.NewHealth()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.RunIntake(ctx, health) }()
	var stopped bool
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunIntake: %v", err)
		}
	}
	t.Cleanup(stop)
	return health, stop
}

// TestIntakeLeaderHandover: of two services sharing NATS, only the lease
// holder consumes; both are ready; when the leader stops, it releases the
// lease and the other takes over at once, and order holds throughout.
func TestIntakeLeaderHandover(t *testing.T) {
	t.Parallel()
	b := setup(t)
	health1, stop1 := startIntake(t, b.svc)
	eventually(t, "a leader", func() bool { return b.intakeOwner(t) != "" && len(health1.Failing()) == 0 })
	leader := b.intakeOwner(t)

	other := New(b.pool, b.js, b.svc.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	other.publishTimeout, other.nakDelay = b.svc.publishTimeout, b.svc.nakDelay
	health2, _ := startIntake(t, other)
	eventually(t, "the follower ready", func() bool { return len(health2.Failing()) == 0 })

	for i := range 30 {
		b.publishKeyed(t, fmt.Sprintf("h-%03d", i), fmt.Sprintf("k%d", i%3), i)
	}
	b.checkEventOrder(t, 30)
	if got := b.intakeOwner(t); got != leader {
		t.Fatalf("lease moved from %s to %s while its holder ran", leader, got)
	}

	stop1()
	if len(health1.Failing()) == 0 {
		t.Error("stopped intake still ready")
	}
	// Released, not expired: the follower takes over at its next poll
	// (2 s), well before the 10 s TTL.
	began := time.Now()
	eventually(t, "the follower takes over", func() bool {
		o := b.intakeOwner(t)
		return o != "" && o != leader
	})
	if d := time.Since(began); d > bus.LeaseTTL/2 {
		t.Errorf("takeover after a graceful stop took %s", d)
	}
	for i := 30; i < 60; i++ {
		b.publishKeyed(t, fmt.Sprintf("h-%03d", i), fmt.Sprintf("k%d", i%3), i)
	}
	b.checkEventOrder(t, 60)
	if len(health2.Failing()) != 0 {
		t.Errorf("new leader not ready: %v", health2.Failing())
	}
}

// TestIntakeRetriesInPlace: while events cannot be published (the stream
// is gone), the lane retries its key's first message and does not move on
// to the next one; once the stream is back, the key's events go out in
// order.
func TestIntakeRetriesInPlace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, _ = startIntake(t, b.svc)
	eventually(t, "a leader", func() bool { return b.intakeOwner(t) != "" })
	if err := b.js.DeleteStream(t.Context(), bus.StreamEvents); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		b.publishKeyed(t, fmt.Sprintf("r-%03d", i), "rk", i)
	}
	eventually(t, "the head stored", func() bool {
		return b.count(t, `SELECT count(*) FROM events WHERE id = 'r-000'`) == 1
	})
	// Several retries of the head (backoff up to nakDelay, 100 ms here).
	time.Sleep(time.Second)
	if n := b.count(t, `SELECT count(*) FROM events WHERE ordering_key = 'rk'`); n != 1 {
		t.Fatalf("%d events of the key stored while its head could not be published, want 1 (the lane moved on)", n)
	}
	if err := bus.EnsureStreams(t.Context(), b.js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	b.checkEventOrder(t, 3)
}
