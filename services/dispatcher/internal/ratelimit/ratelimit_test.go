package ratelimit

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/natstest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// TestMembersCountEachOther: two replicas see each other within two beats,
// and steadily so.
func TestMembersCountEachOther(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var ms []*Members
	for _, owner := range []string{"a", "b"} {
		m, err := EnsureMembers(t.Context(), js, owner, log)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
		go m.Run(ctx)
	}
	// Two beats each normally; a loaded machine may delay a beat (a put or a
	// key listing past its 2 s timeout changes nothing), so wait for it.
	deadline := time.Now().Add(5 * TTL)
	for ms[0].Count() != 2 || ms[1].Count() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("replicas count %d and %d after %s, want 2 and 2", ms[0].Count(), ms[1].Count(), 5*TTL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Steadily: a count falls only when a key expires (TTL, three beats).
	for range 20 {
		for i, m := range ms {
			if n := m.Count(); n != 2 {
				t.Fatalf("replica %d counts %d", i, n)
			}
		}
		time.Sleep(150 * time.Millisecond)
	}
}

func TestLimitersDivideByReplicas(t *testing.T) {
	t.Parallel()
	n := 1
	l := New(func() int { return n })
	ep := &hooklinev1.Endpoint{Id: "ep", RateLimit: 10}
	start := time.Now()
	for range 6 {
		if err := l.Wait(t.Context(), ep); err != nil {
			t.Fatal(err)
		}
	}
	// A burst of 1 and then 10/s: 6 requests take at least 0.5 s.
	if d := time.Since(start); d < 450*time.Millisecond {
		t.Errorf("6 requests at 10/s in %s", d)
	}
	if err := l.Wait(t.Context(), &hooklinev1.Endpoint{Id: "free"}); err != nil {
		t.Error(err)
	}
}
