package dispatch

import (
	"sync"
	"time"
)

// workers run functions on goroutines kept for the next function instead of
// a new goroutine each: a delivery's goroutine grows its stack through the
// HTTP client, and a fresh one would grow (copy) it again every time. There
// is no bound: a function never waits for a free worker (the consumer's
// MaxAckPending bounds the deliveries in hand).
type workers struct {
	tasks chan func()
	quit  chan struct{}
	idle  time.Duration
	wg    sync.WaitGroup
	once  sync.Once
}

// newWorkers returns workers whose goroutines end after idle without work.
func newWorkers(idle time.Duration) *workers {
	return &workers{tasks: make(chan func()), quit: make(chan struct{}), idle: idle}
}

// Go runs f on an idle worker, or on a new one when none is idle. After
// Close, f still runs, on a goroutine Close no longer waits for.
func (w *workers) Go(f func()) {
	select {
	case w.tasks <- f:
	default:
		w.wg.Add(1)
		go w.run(f)
	}
}

func (w *workers) run(f func()) {
	defer w.wg.Done()
	t := time.NewTimer(w.idle)
	defer t.Stop()
	for {
		f()
		t.Reset(w.idle)
		select {
		case f = <-w.tasks:
		case <-t.C:
			return
		case <-w.quit:
			return
		}
	}
}

// Close ends the idle workers, and the busy ones once their function
// returns, and waits for them.
func (w *workers) Close() {
	w.once.Do(func() { close(w.quit) })
	w.wg.Wait()
}
