package dispatch

import (
	"context"
	"sync"
)

// Limits bound the attempts in flight: in total, and per endpoint, so that
// one slow endpoint cannot take every worker. A delivery for a saturated
// endpoint waits for a slot of that endpoint only, holding no global slot.
type Limits struct {
	global      chan struct{}
	perEndpoint int

	mu        sync.Mutex
	endpoints map[string]*slots
}

type slots struct {
	ch    chan struct{}
	users int // holders and waiters; the entry is dropped at 0
}

// NewLimits allows total attempts in flight, at most perEndpoint of them to
// one endpoint.
func NewLimits(total, perEndpoint int) *Limits {
	return &Limits{global: make(chan struct{}, total), perEndpoint: perEndpoint, endpoints: map[string]*slots{}}
}

// Acquire waits for a slot of endpoint, then a global slot. It returns a
// release function, or false when ctx ended first.
func (l *Limits) Acquire(ctx context.Context, endpoint string) (release func(), ok bool) {
	s := l.ref(endpoint)
	select {
	case s.ch <- struct{}{}:
	case <-ctx.Done():
		l.unref(endpoint, s)
		return nil, false
	}
	select {
	case l.global <- struct{}{}:
	case <-ctx.Done():
		<-s.ch
		l.unref(endpoint, s)
		return nil, false
	}
	return func() {
		<-l.global
		<-s.ch
		l.unref(endpoint, s)
	}, true
}

func (l *Limits) ref(endpoint string) *slots {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.endpoints[endpoint]
	if !ok {
		s = &slots{ch: make(chan struct{}, l.perEndpoint)}
		l.endpoints[endpoint] = s
	}
	s.users++
	return s
}

func (l *Limits) unref(endpoint string, s *slots) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.users--
	if s.users == 0 {
		delete(l.endpoints, endpoint)
	}
}
