package workpool

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPoolRunEverythingWithoutWaiting runs more functions at once than
// there are idle workers (each blocks until all have started: none may wait
// for another to finish), then reuses the workers, and Close ends them all.
func TestPoolRunEverythingWithoutWaiting(t *testing.T) {
	t.Parallel()
	w := New(time.Minute)
	const n = 50
	for round := range 3 {
		var started, done sync.WaitGroup
		started.Add(n)
		done.Add(n)
		release := make(chan struct{})
		var ran atomic.Int32
		for range n {
			w.Go(func() {
				defer done.Done()
				started.Done()
				<-release
				ran.Add(1)
			})
		}
		started.Wait()
		close(release)
		done.Wait()
		if ran.Load() != n {
			t.Fatalf("round %d: %d ran, want %d", round, ran.Load(), n)
		}
	}
	w.Close()
}

// TestPoolEndWhenIdle: a worker without work ends by itself.
func TestPoolEndWhenIdle(t *testing.T) {
	t.Parallel()
	w := New(time.Millisecond)
	ran := make(chan struct{})
	w.Go(func() { close(ran) })
	<-ran
	ended := make(chan struct{})
	go func() { w.wg.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("idle worker did not end")
	}
}
