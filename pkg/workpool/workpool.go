// Package workpool runs functions on goroutines kept for the next function
// instead of a new goroutine each. A goroutine that runs deep call chains
// (an HTTP client, a fan-out's publishes and statements) grows its stack
// by copying it, and a fresh goroutine starts small and grows (copies) it
// again every time; a kept one has grown it once.
package workpool

import (
	"sync"
	"time"
)

// Pool runs functions on kept goroutines. There is no bound: a function
// never waits for a free worker (callers bound their own work).
type Pool struct {
	tasks chan func()
	quit  chan struct{}
	idle  time.Duration
	wg    sync.WaitGroup
	once  sync.Once
}

// New returns a Pool whose goroutines end after idle without work.
func New(idle time.Duration) *Pool {
	return &Pool{tasks: make(chan func()), quit: make(chan struct{}), idle: idle}
}

// Go runs f on an idle worker, or on a new one when none is idle. After
// Close, f still runs, on a goroutine Close no longer waits for.
func (p *Pool) Go(f func()) {
	select {
	case p.tasks <- f:
	default:
		p.wg.Add(1)
		go p.run(f)
	}
}

func (p *Pool) run(f func()) {
	defer p.wg.Done()
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		f()
		t.Reset(p.idle)
		select {
		case f = <-p.tasks:
		case <-t.C:
			return
		case <-p.quit:
			return
		}
	}
}

// Close ends the idle workers, and the busy ones once their function
// returns, and waits for them.
func (p *Pool) Close() {
	p.once.Do(func() { close(p.quit) })
	p.wg.Wait()
}
