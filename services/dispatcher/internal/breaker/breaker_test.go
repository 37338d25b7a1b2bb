package breaker

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// fakeDB records the statements the breaker runs; the shared state itself is
// covered by the dispatcher's integration tests on a real PostgreSQL.
type fakeDB struct {
	mu    sync.Mutex
	execs []string
}

func (f *fakeDB) Exec(_ context.Context, sql string, _ ...any) (pgconn.CommandTag, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.execs = append(f.execs, sql)
	return pgconn.NewCommandTag("UPDATE 1"), nil
}

func (f *fakeDB) Query(context.Context, string, ...any) (pgx.Rows, error) { return nil, pgx.ErrNoRows }

func (f *fakeDB) opened() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.execs {
		if strings.Contains(s, "INSERT INTO endpoint_circuits") {
			return true
		}
	}
	return false
}

func TestTripNeedsFailuresFromSeveralDeliveries(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		deliveries []string // the delivery of each consecutive failed attempt
		wantOpen   bool
	}{
		{"one delivery retrying many times", []string{"a", "a", "a", "a", "a", "a", "a", "a", "a"}, false},
		{"fewer failures than the threshold", []string{"a", "b", "c", "d"}, false},
		{"five failures across two deliveries", []string{"a", "a", "a", "a", "b"}, true},
		{"five failures across five deliveries", []string{"a", "b", "c", "d", "e"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := &fakeDB{}
			c := New(db, "replica-1", Config{Cooldown: time.Hour}, slog.New(slog.DiscardHandler))
			for i, d := range tc.deliveries {
				done, until := c.Allow(t.Context(), "ep_1", d)
				if done == nil {
					t.Fatalf("attempt %d held until %s before the circuit should have opened", i+1, until)
				}
				done(Failure)
			}
			if db.opened() != tc.wantOpen {
				t.Fatalf("circuit opened = %v, want %v", db.opened(), tc.wantOpen)
			}
			done, _ := c.Allow(t.Context(), "ep_1", "z")
			if (done == nil) != tc.wantOpen {
				t.Fatalf("next attempt admitted = %v with the circuit open = %v", done != nil, tc.wantOpen)
			}
		})
	}
}

func TestSuccessResetsTheStreak(t *testing.T) {
	t.Parallel()
	db := &fakeDB{}
	c := New(db, "replica-1", Config{Cooldown: time.Hour}, slog.New(slog.DiscardHandler))
	fail := func(d string) {
		done, _ := c.Allow(t.Context(), "ep_1", d)
		done(Failure)
	}
	fail("a")
	fail("b")
	fail("c")
	done, _ := c.Allow(t.Context(), "ep_1", "d")
	done(Success)
	for _, d := range []string{"e", "e", "e", "e"} {
		fail(d)
	}
	if db.opened() {
		t.Fatal("failures before a success counted towards opening the circuit")
	}
}

// TestPhaseAgreesWithAllow: Phase answers held exactly when Allow holds for
// the shared circuit, with the same time, says when a probe is due, and
// claims nothing.
func TestPhaseAgreesWithAllow(t *testing.T) {
	t.Parallel()
	db := &fakeDB{}
	c := New(db, "replica-1", Config{Cooldown: time.Hour}, slog.New(slog.DiscardHandler))
	now := time.Now()
	if p, _ := c.Phase("ep_1", now); p != PhaseClosed {
		t.Fatalf("closed circuit in phase %d", p)
	}
	for _, d := range []string{"a", "b", "c", "d", "e"} {
		done, _ := c.Allow(t.Context(), "ep_1", d)
		done(Failure)
	}
	p, until := c.Phase("ep_1", time.Now())
	if p != PhaseHeld {
		t.Fatalf("open circuit in phase %d, want held", p)
	}
	done, allowUntil := c.Allow(t.Context(), "ep_1", "f")
	if done != nil || !allowUntil.Equal(until) {
		t.Fatalf("Allow: admitted %v until %s; Phase: until %s", done != nil, allowUntil, until)
	}
	// Past the cool-down a probe is due (it is Allow's to claim), and
	// asking runs no statement.
	before := len(db.execs)
	if p, _ := c.Phase("ep_1", until.Add(time.Second)); p != PhaseProbe {
		t.Errorf("past the cool-down: phase %d, want probe", p)
	}
	if len(db.execs) != before {
		t.Error("Phase ran a statement")
	}
	c.mu.Lock()
	c.probing["ep_1"] = true
	c.mu.Unlock()
	if p, u := c.Phase("ep_1", until.Add(time.Second)); p != PhaseHeld || !u.Equal(until.Add(3*time.Second)) {
		t.Errorf("while probing: phase %d until %s", p, u)
	}
}
