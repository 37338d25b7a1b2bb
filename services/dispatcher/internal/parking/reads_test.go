package parking

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/pgtest"
)

// TestConcurrentBlockedReads asks about many keys at once, a third of them
// blocked: every answer is that key's own, however the reads were batched.
func TestConcurrentBlockedReads(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := New(pool)
	ctx := t.Context()
	const n = 300
	for i := 0; i < n; i += 3 {
		d := dlv(i)
		if err := s.Block(ctx, d, fmt.Sprint("tok", i), uint64(i+1), time.Now().Add(time.Hour)); err != nil { //nolint:gosec // small
			t.Fatal(err)
		}
	}
	for round := range 2 {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				blocked, err := s.reads.blocked(ctx, "ep_1", fmt.Sprint("tok", i))
				if err != nil {
					t.Error(err)
					return
				}
				if want := i%3 == 0; blocked != want {
					t.Errorf("round %d: key %d blocked %v, want %v", round, i, blocked, want)
				}
			})
		}
		wg.Wait()
	}
	// The last batch's goroutine may still be on its way out.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s.reads.mu.Lock()
		running, pending := s.reads.running, len(s.reads.pending)
		s.reads.mu.Unlock()
		if !running && pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("reads left running %v, pending %d", running, pending)
		}
	}
}
