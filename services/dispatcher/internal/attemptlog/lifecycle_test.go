package attemptlog

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

func TestStreaks(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	at := func(m int) *time.Time { x := base.Add(time.Duration(m) * time.Minute); return &x }
	o := func(ep string, m int, ok bool) *hooklinev1.AttemptOutcome {
		return &hooklinev1.AttemptOutcome{EndpointId: ep, TenantId: "acme", StartedAt: timestamppb.New(*at(m)), Succeeded: ok}
	}
	cases := []struct {
		name                     string
		outs                     []*hooklinev1.AttemptOutcome
		since, success, lastFail *time.Time
	}{
		{"only failures", []*hooklinev1.AttemptOutcome{o("ep", 5, false), o("ep", 2, false)}, at(2), nil, at(5)},
		{"only successes", []*hooklinev1.AttemptOutcome{o("ep", 5, true), o("ep", 2, true)}, nil, at(5), nil},
		{"failures after the last success", []*hooklinev1.AttemptOutcome{o("ep", 1, false), o("ep", 3, true), o("ep", 7, false), o("ep", 4, false)}, at(4), at(3), at(7)},
		{"success after failures", []*hooklinev1.AttemptOutcome{o("ep", 1, false), o("ep", 9, true)}, nil, at(9), at(1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ss := streaks(tc.outs)
			if len(ss) != 1 {
				t.Fatalf("%d streaks", len(ss))
			}
			s := ss[0]
			eq := func(a, b *time.Time) bool { return (a == nil) == (b == nil) && (a == nil || a.Equal(*b)) }
			if !eq(s.failingSince, tc.since) || !eq(s.lastSuccess, tc.success) || !eq(s.lastFailure, tc.lastFail) {
				t.Fatalf("failing since %v, last success %v, last failure %v; want %v, %v, %v",
					s.failingSince, s.lastSuccess, s.lastFailure, tc.since, tc.success, tc.lastFail)
			}
		})
	}
}

// TestEndpointHealthAcrossBatches feeds outcomes in several batches, some
// late, and checks the stored streak.
func TestEndpointHealthAcrossBatches(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := t.Context()
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	n := 0
	o := func(m int, ok bool) *hooklinev1.AttemptOutcome {
		n++
		return &hooklinev1.AttemptOutcome{
			DeliveryId: fmt.Sprintf("dlv_%d", n), Attempt: 1, EndpointId: "ep_1", TenantId: "acme", EventId: "evt",
			StartedAt: timestamppb.New(base.Add(time.Duration(m) * time.Minute)), Succeeded: ok,
		}
	}
	since := func() *time.Time {
		t.Helper()
		var s *time.Time
		if err := pool.QueryRow(ctx, `SELECT failing_since FROM endpoint_health WHERE endpoint_id = 'ep_1'`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	steps := []struct {
		name  string
		batch []*hooklinev1.AttemptOutcome
		want  *int // minutes after base; nil: not failing
	}{
		{"first failures", []*hooklinev1.AttemptOutcome{o(10, false), o(12, false)}, ptr(10)},
		{"more failures keep the start", []*hooklinev1.AttemptOutcome{o(20, false)}, ptr(10)},
		{"a late, older failure moves the start back", []*hooklinev1.AttemptOutcome{o(5, false)}, ptr(5)},
		{"a success ends the streak", []*hooklinev1.AttemptOutcome{o(25, true)}, nil},
		{"a late failure before that success changes nothing", []*hooklinev1.AttemptOutcome{o(24, false)}, nil},
		{"a new failure starts a new streak", []*hooklinev1.AttemptOutcome{o(30, false), o(31, false)}, ptr(30)},
		{"a late success older than the streak changes nothing", []*hooklinev1.AttemptOutcome{o(28, true)}, ptr(30)},
		{"success and failure in one batch", []*hooklinev1.AttemptOutcome{o(40, false), o(41, true), o(42, false)}, ptr(42)},
	}
	for _, s := range steps {
		if err := Store(ctx, pool, s.batch); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := since()
		switch {
		case s.want == nil && got != nil:
			t.Fatalf("%s: failing since %v, want not failing", s.name, got)
		case s.want != nil && (got == nil || !got.Equal(base.Add(time.Duration(*s.want)*time.Minute))):
			t.Fatalf("%s: failing since %v, want %d minutes after %v", s.name, got, *s.want, base)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestAutoDisable runs the writer on a real JetStream consumer with a tiny
// auto-disable period: the endpoint failing for longer is disabled in the
// database and in KV, with the reason; the others are not.
func TestAutoDisable(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := t.Context()
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	if err := bus.EnsureStreams(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	kv, err := bus.EnsureEndpointsBucket(ctx, js, bus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := bus.EnsureConsumer(ctx, js, bus.StreamAttempts, bus.Consumer(bus.ConsumerAttemptLog, 30*time.Second, 1000))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO tenants (id, name) VALUES ('acme', 'Acme')`,
		// Created long ago, so only the failures count.
		`INSERT INTO endpoints (id, tenant_id, url, secret, retry_schedule, updated_at) VALUES
			('ep_failing', 'acme', 'http://a/', 'whsec_x', '{1s}', now() - interval '1 day'),
			('ep_recovered', 'acme', 'http://b/', 'whsec_x', '{1s}', now() - interval '1 day'),
			('ep_young', 'acme', 'http://c/', 'whsec_x', '{1s}', now() - interval '1 day'),
			-- Re-enabled a moment ago: the streak restarts from that change.
			('ep_reenabled', 'acme', 'http://d/', 'whsec_x', '{1s}', now())`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"ep_failing", "ep_recovered", "ep_young", "ep_reenabled"} {
		if err := endpoints.Sync(ctx, pool, kv, id); err != nil {
			t.Fatal(err)
		}
	}

	w := New(pool, cons, slog.New(slog.DiscardHandler))
	w.AutoDisableAfter = 30 * time.Second
	w.SyncEndpoint = func(ctx context.Context, id string) error { return endpoints.Sync(ctx, pool, kv, id) }
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(wctx) }()
	t.Cleanup(func() { stop(); <-done })

	now := time.Now()
	longAgo := now.Add(-10 * time.Minute).Truncate(time.Second)
	n := 0
	publish := func(ep string, at time.Time, ok bool) {
		t.Helper()
		n++
		o := &hooklinev1.AttemptOutcome{
			DeliveryId: fmt.Sprintf("dlv_%d", n), TenantId: "acme", EventId: fmt.Sprintf("evt_%d", n), EndpointId: ep,
			Attempt: 1, StartedAt: timestamppb.New(at), Succeeded: ok, StatusCode: 503, Error: "status 503",
			Status: hooklinev1.DeliveryStatus_DELIVERY_STATUS_PENDING,
		}
		if ok {
			o.StatusCode, o.Error, o.Status = 200, "", hooklinev1.DeliveryStatus_DELIVERY_STATUS_SUCCEEDED
		}
		b, err := proto.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, bus.NewMsg(bus.AttemptSubject("acme", ep), bus.AttemptMsgID(o.GetDeliveryId(), 1), b)); err != nil {
			t.Fatal(err)
		}
	}
	publish("ep_failing", longAgo, false)
	publish("ep_failing", now.Add(-time.Minute), false)
	publish("ep_failing", now, false)
	publish("ep_recovered", longAgo, false)
	publish("ep_recovered", now.Add(-time.Second), true)
	publish("ep_young", now, false)
	publish("ep_reenabled", longAgo, false)
	publish("ep_reenabled", now, false)

	type state struct {
		disabled bool
		reason   *string
		version  int64
	}
	read := func(id string) state {
		t.Helper()
		var s state
		if err := pool.QueryRow(ctx, `SELECT disabled, disabled_reason, version FROM endpoints WHERE id = $1`, id).
			Scan(&s.disabled, &s.reason, &s.version); err != nil {
			t.Fatal(err)
		}
		return s
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var logged int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM attempts`).Scan(&logged); err != nil {
			t.Fatal(err)
		}
		if logged == n && read("ep_failing").disabled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: %d of %d attempts logged, ep_failing %+v", logged, n, read("ep_failing"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := read("ep_failing")
	wantReason := "failing continuously since " + apitime.Format(longAgo)
	if s.reason == nil || *s.reason != wantReason || s.version != 2 {
		t.Fatalf("ep_failing: reason %v version %d, want %q version 2", s.reason, s.version, wantReason)
	}
	// The change reaches every replica through KV.
	deadline = time.Now().Add(10 * time.Second)
	for {
		e, err := kv.Get(ctx, "ep_failing")
		if err != nil {
			t.Fatal(err)
		}
		var ep hooklinev1.Endpoint
		if err := proto.Unmarshal(e.Value(), &ep); err != nil {
			t.Fatal(err)
		}
		if ep.GetDisabled() && ep.GetVersion() == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("KV still shows %v", &ep)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, id := range []string{"ep_recovered", "ep_young", "ep_reenabled"} {
		if s := read(id); s.disabled || s.reason != nil {
			t.Errorf("%s disabled: %+v", id, s)
		}
	}
}
