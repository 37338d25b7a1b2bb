package delivery

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/dispatcher/internal/http1"
)

// Limits of one attempt.
const (
	// MaxTimeout caps an endpoint's timeout_ms (the API refuses more).
	MaxTimeout = 60 * time.Second
	// DefaultTimeout applies when an endpoint has none.
	DefaultTimeout = 15 * time.Second
	// MaxResponseBody is how much of a response is kept for the attempt log.
	MaxResponseBody = 4 << 10
	// maxDiscard is how much more is read (so the connection can be reused)
	// before the body is closed.
	maxDiscard = 64 << 10
)

// DialContext dials a destination; the SSRF-safe dialer implements it.
type DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

// Sender makes attempts over one shared pool of HTTP/1.1 connections.
type Sender struct {
	client *http1.Client
	bufs   sync.Pool // of *buffers

	mu       sync.RWMutex
	prepared map[string]*prepared // by endpoint id, for the configuration in ep
}

// NewSender returns a Sender whose connections are dialled by dial. It
// follows no redirects (CONTRACT 3.2: a 3xx is the answer) and uses no
// proxy. Requests are written out in full before they are sent, over
// keep-alive HTTP/1.1 connections (TLS for https, verified against the
// system's roots), and the answer is read on the attempt's goroutine (see
// package http1 for why not net/http's Transport). Many endpoints may share
// a host: up to 1,024 idle connections are kept per host and port, for 90
// seconds.
func NewSender(dial DialContext) *Sender {
	return &Sender{
		client:   http1.New(http1.Dial(dial)),
		bufs:     sync.Pool{New: func() any { return new(buffers) }},
		prepared: map[string]*prepared{},
	}
}

// prepare returns the prepared requests of ep's configuration, building them
// once per configuration: the endpoint cache hands out a new *Endpoint, with
// a new version, for every change.
func (s *Sender) prepare(ep *hooklinev1.Endpoint) *prepared {
	id := ep.GetId()
	s.mu.RLock()
	p := s.prepared[id]
	s.mu.RUnlock()
	if p != nil && p.ep == ep && p.version == ep.GetVersion() {
		return p
	}
	p = prepare(ep)
	s.mu.Lock()
	s.prepared[id] = p
	s.mu.Unlock()
	return p
}

// Timeout is ep's per-attempt timeout, capped at [MaxTimeout].
func Timeout(ep *hooklinev1.Endpoint) time.Duration {
	t := time.Duration(ep.GetTimeoutMs()) * time.Millisecond
	if t <= 0 {
		return DefaultTimeout
	}
	return min(t, MaxTimeout)
}

// Result is what one attempt produced.
type Result struct {
	StartedAt time.Time
	Duration  time.Duration
	// Response is nil when Err is set; its body is already read and closed.
	Response *http.Response
	// Body holds at most [MaxResponseBody] bytes of the response.
	Body []byte
	Err  error
}

// Send makes one attempt of d to ep, signed at now, within ep's timeout,
// which bounds the whole exchange, the dial and the body included.
func (s *Sender) Send(ctx context.Context, ep *hooklinev1.Endpoint, d *hooklinev1.Delivery, now time.Time) Result {
	ctx, cancel := context.WithTimeout(ctx, Timeout(ep))
	defer cancel()
	res := Result{StartedAt: now}
	p := s.prepare(ep)
	bufs := s.bufs.Get().(*buffers)
	defer func() {
		if cap(bufs.wire) <= maxPooled && cap(bufs.body) <= maxPooled {
			s.bufs.Put(bufs)
		}
	}()
	req, err := p.wire(ctx, bufs, d, now)
	if err != nil {
		res.Err = &RequestError{Err: err}
		return res
	}
	start := time.Now()
	resp, err := s.client.Do(ctx, p.target, req, MaxResponseBody, maxDiscard)
	res.Duration = time.Since(start)
	if err != nil {
		res.Err = err
		return res
	}
	res.Response, res.Body = resp.Response, resp.Body
	return res
}

// RequestError reports that the request could not be built (no usable
// secret, a malformed URL): the endpoint's configuration is at fault.
type RequestError struct{ Err error }

func (e *RequestError) Error() string { return "build request: " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *RequestError) Unwrap() error { return e.Err }
