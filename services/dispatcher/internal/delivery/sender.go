package delivery

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
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

// Sender makes attempts over one shared HTTP transport.
type Sender struct {
	transport http.RoundTripper

	mu       sync.RWMutex
	prepared map[string]*prepared // by endpoint id, for the configuration in ep
}

// NewSender returns a Sender whose connections are dialled by dial. It
// follows no redirects and uses no proxy.
func NewSender(dial DialContext) *Sender {
	tr := &http.Transport{
		Proxy:             nil,
		DialContext:       dial,
		ForceAttemptHTTP2: true,
		MaxIdleConns:      1024,
		// Many endpoints may share a host (and port): their connections
		// must all stay open between attempts, or every attempt beyond the
		// per-host idle limit closes its connection and dials a new one.
		MaxIdleConnsPerHost:   1024,
		MaxConnsPerHost:       0,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: MaxTimeout,
	}
	// Requests go to the transport directly, not through an http.Client,
	// which would only add a second deadline (a context and a timer per
	// attempt) and redirect handling: a transport returns a 3xx as it is
	// (CONTRACT 3.2: redirects are not followed). Each attempt's context
	// deadline (at most MaxTimeout) bounds the whole exchange, body
	// included; the basic auth the client derives from a URL's user info
	// is added by prepare.
	return &Sender{transport: tr, prepared: map[string]*prepared{}}
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

// Send makes one attempt of d to ep, signed at now, within ep's timeout.
func (s *Sender) Send(ctx context.Context, ep *hooklinev1.Endpoint, d *hooklinev1.Delivery, now time.Time) Result {
	ctx, cancel := context.WithTimeout(ctx, Timeout(ep))
	defer cancel()
	res := Result{StartedAt: now}
	req, err := s.prepare(ep).request(ctx, d, now)
	if err != nil {
		res.Err = &RequestError{Err: err}
		return res
	}
	start := time.Now()
	resp, err := s.transport.RoundTrip(req)
	if err != nil {
		res.Duration = time.Since(start)
		res.Err = err
		return res
	}
	res.Body, _ = io.ReadAll(io.LimitReader(resp.Body, MaxResponseBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDiscard))
	_ = resp.Body.Close()
	res.Duration = time.Since(start)
	res.Response = resp
	return res
}

// RequestError reports that the request could not be built (no usable
// secret, a malformed URL): the endpoint's configuration is at fault.
type RequestError struct{ Err error }

func (e *RequestError) Error() string { return "build request: " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *RequestError) Unwrap() error { return e.Err }
