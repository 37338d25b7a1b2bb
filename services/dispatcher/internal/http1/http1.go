// Package http1 sends requests that are already written out in HTTP/1.1 wire
// form over pooled keep-alive connections, and reads their responses, on the
// caller's goroutine.
//
// It exists for the dispatcher's hot path. net/http's Transport hands every
// request to a write goroutine and every response to a read goroutine of
// its connection, and builds a Request and its header map on the way in. A
// webhook attempt is one POST whose bytes are known before it is sent, so
// this client writes them with one call and parses the answer with
// [http.ReadResponse] where it was sent: about half the client's CPU per
// attempt (measured with 1 KiB bodies over loopback). It speaks HTTP/1.1
// only, over TCP or TLS, and follows nothing (no redirects, no proxies).
//
// A connection is reused only when its response was read to the end, the
// server did not ask to close it, and the attempt's context was not done. An
// idle connection unused for a while is checked for a close from the server
// before it is reused (where the platform allows a non-blocking peek), since
// a request written into a connection the server already closed fails
// without an answer.
package http1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Dial opens a connection to addr; the SSRF-safe dialer implements it.
type Dial func(ctx context.Context, network, addr string) (net.Conn, error)

// Target is where a request goes. Requests to equal targets share a pool
// of connections.
type Target struct {
	// Addr is the host:port dialled.
	Addr string
	// TLS says whether the connection is wrapped in TLS, verified against
	// ServerName.
	TLS        bool
	ServerName string
}

// Defaults of a Client.
const (
	// DefaultMaxIdlePerTarget is how many idle connections are kept per
	// target: many endpoints may share a host, and an attempt beyond the
	// idle limit closes its connection.
	DefaultMaxIdlePerTarget = 1024
	// DefaultIdleTimeout is how long an idle connection is kept.
	DefaultIdleTimeout = 90 * time.Second
	// TLSHandshakeTimeout bounds a TLS handshake, within the attempt's own
	// deadline.
	TLSHandshakeTimeout = 10 * time.Second
	// defaultCheckAfter is how long a connection may idle before it is
	// checked for a close from the server. Servers close idle connections
	// after seconds (Node.js after 5, nginx after 75); under load a
	// connection is reused within milliseconds and never needs the extra
	// system call.
	defaultCheckAfter = 500 * time.Millisecond
	// sweepEvery is how often idle connections of every target are checked
	// against the idle timeout while any is idle (the target in use is also
	// checked on every put).
	sweepEvery = 30 * time.Second
	// max1xx is how many informational responses are skipped before the
	// final one, as net/http does.
	max1xx = 5
	// readBufferSize is the size of a connection's read buffer.
	readBufferSize = 4 << 10
)

// Client sends requests over pooled connections. The zero value is not
// usable; make one with [New].
type Client struct {
	dial Dial
	// tls is cloned for every TLS connection; tests set RootCAs in it.
	tls *tls.Config

	maxIdle     int
	idleTimeout time.Duration
	checkAfter  time.Duration

	mu   sync.Mutex
	idle map[Target][]*conn // most recently used last
	// sweeper closes connections idle past the timeout, every sweepEvery
	// while any connection is idle; nil when none is.
	sweeper *time.Timer
}

// New returns a Client that dials with dial.
func New(dial Dial) *Client {
	return &Client{
		dial:        dial,
		tls:         &tls.Config{MinVersion: tls.VersionTLS12},
		maxIdle:     DefaultMaxIdlePerTarget,
		idleTimeout: DefaultIdleTimeout,
		checkAfter:  defaultCheckAfter,
		idle:        map[Target][]*conn{},
	}
}

// conn is one pooled connection.
type conn struct {
	target Target
	nc     net.Conn
	br     *bufio.Reader // reads from budget
	budget budget
	idleAt time.Time
}

// MaxResponseHeaderBytes bounds a response's status line and headers.
const MaxResponseHeaderBytes = 1 << 20

// budget reads from a connection until its allowance is spent: a response
// is read with an allowance for its headers and what is kept or discarded
// of its body, so an endpoint that sends without end costs a bounded amount
// of memory and reading, not its whole timeout's worth.
type budget struct {
	r io.Reader
	n int64
}

// errTooLarge: the response exceeded its budget.
var errTooLarge = errors.New("response too large")

func (b *budget) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	return n, err
}

// Response is what Do read: the status and headers, with at most the first
// keep bytes of the body.
type Response struct {
	*http.Response // its Body is already read and closed
	Body           []byte
}

// writeError reports that the request could not be written: the server
// received none of it, or not all of it.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write request: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// postRequest tells http.ReadResponse what the response answers (a POST, so
// a body may follow).
var postRequest = &http.Request{Method: http.MethodPost}

// Do writes req, a complete HTTP/1.1 request, to t and reads the answer:
// the status, the headers and up to keep bytes of the body, and discards up
// to discard more so that the connection can be reused. ctx bounds
// everything, the dial included. A failure to write on a connection that was
// reused is retried once on a new connection: the server had closed it.
func (c *Client) Do(ctx context.Context, t Target, req []byte, keep, discard int) (Response, error) {
	for try := 0; ; try++ {
		cn, reused, err := c.get(ctx, t)
		if err != nil {
			return Response{}, err
		}
		resp, reusable, err := cn.exchange(ctx, req, keep, discard)
		if reusable {
			c.put(cn)
		} else {
			_ = cn.nc.Close()
		}
		var we *writeError
		if err != nil && reused && try == 0 && errors.As(err, &we) && ctx.Err() == nil {
			continue
		}
		return resp, err
	}
}

// get returns an idle connection to t, or dials one.
func (c *Client) get(ctx context.Context, t Target) (cn *conn, reused bool, err error) {
	for {
		now := time.Now()
		c.mu.Lock()
		list := c.idle[t]
		if len(list) == 0 {
			c.mu.Unlock()
			break
		}
		cn = list[len(list)-1]
		list[len(list)-1] = nil
		c.idle[t] = list[:len(list)-1]
		c.mu.Unlock()
		idle := now.Sub(cn.idleAt)
		if idle > c.idleTimeout || (idle >= c.checkAfter && !alive(cn.nc)) {
			_ = cn.nc.Close()
			continue
		}
		return cn, true, nil
	}
	cn, err = c.connect(ctx, t)
	return cn, false, err
}

// connect dials t, and shakes hands when it is TLS.
func (c *Client) connect(ctx context.Context, t Target) (*conn, error) {
	nc, err := c.dial(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, err
	}
	if t.TLS {
		cfg := c.tls.Clone()
		cfg.ServerName = t.ServerName
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(nc, cfg)
		hctx, cancel := context.WithTimeout(ctx, TLSHandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", t.Addr, err)
		}
		nc = tc
	}
	cn := &conn{target: t, nc: nc}
	cn.budget.r = nc
	cn.br = bufio.NewReaderSize(&cn.budget, readBufferSize)
	return cn, nil
}

// put returns cn to the idle connections of its target, closing those of
// that target that idled too long, and makes sure the sweeper runs.
func (c *Client) put(cn *conn) {
	now := time.Now()
	cn.idleAt = now
	var stale []*conn
	c.mu.Lock()
	list := c.idle[cn.target]
	// The oldest are first: drop those past the idle timeout.
	n := 0
	for n < len(list) && now.Sub(list[n].idleAt) > c.idleTimeout {
		n++
	}
	if n > 0 {
		stale = append(stale, list[:n]...)
		kept := append(list[:0], list[n:]...)
		clear(list[len(kept):])
		list = kept
	}
	if len(list) < c.maxIdle {
		list = append(list, cn)
	} else {
		stale = append(stale, cn)
	}
	c.idle[cn.target] = list
	if c.sweeper == nil {
		c.sweeper = time.AfterFunc(sweepEvery, c.sweep)
	}
	c.mu.Unlock()
	for _, s := range stale {
		_ = s.nc.Close()
	}
}

// sweep closes the connections of every target that idled past the timeout
// (those of a target no longer sent to are never taken again), and runs
// again later while any connection is idle.
func (c *Client) sweep() {
	now := time.Now()
	var stale []*conn
	c.mu.Lock()
	for t, list := range c.idle {
		kept := list[:0]
		for _, cn := range list {
			if now.Sub(cn.idleAt) > c.idleTimeout {
				stale = append(stale, cn)
			} else {
				kept = append(kept, cn)
			}
		}
		clear(list[len(kept):])
		if len(kept) == 0 {
			delete(c.idle, t)
		} else {
			c.idle[t] = kept
		}
	}
	switch {
	case len(c.idle) == 0:
		c.sweeper = nil
	case c.sweeper == nil:
		c.sweeper = time.AfterFunc(sweepEvery, c.sweep)
	default:
		c.sweeper.Reset(sweepEvery)
	}
	c.mu.Unlock()
	for _, s := range stale {
		_ = s.nc.Close()
	}
}

// aLongTimeAgo is a deadline that has passed: setting it interrupts a
// blocked read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// exchange writes req and reads the response. reusable reports whether the
// connection may carry another request.
func (cn *conn) exchange(ctx context.Context, req []byte, keep, discard int) (resp Response, reusable bool, err error) {
	if dl, ok := ctx.Deadline(); ok {
		if err := cn.nc.SetDeadline(dl); err != nil {
			return Response{}, false, &writeError{err}
		}
	}
	// A context cancelled before its deadline interrupts the exchange.
	stop := context.AfterFunc(ctx, func() { _ = cn.nc.SetDeadline(aLongTimeAgo) })
	defer func() {
		if !stop() {
			// The deadline was moved into the past: the connection is
			// interrupted, whatever it read.
			reusable = false
		}
		if err != nil {
			// The connection's deadline is the context's: when it passed,
			// say so as net/http does, even if the context's own timer has
			// not fired yet.
			if cerr := ctx.Err(); cerr != nil {
				err = fmt.Errorf("%w: %w", cerr, err)
			} else if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
				err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
			}
		}
		if reusable {
			// An idle connection has no deadline.
			reusable = cn.nc.SetDeadline(time.Time{}) == nil
		}
	}()

	// Chunk sizes and trailers come on top of the body's bytes.
	cn.budget.n = MaxResponseHeaderBytes + int64(keep) + int64(discard) + 64<<10
	if _, werr := cn.nc.Write(req); werr != nil {
		// A server may answer before it has read the whole request (a 413
		// for a body too large) and close: that answer is the attempt's,
		// as net/http's Transport returns it too.
		if r, rerr := http.ReadResponse(cn.br, postRequest); rerr == nil && r.StatusCode >= 200 {
			body, _ := readAtMost(r.Body, keep)
			_ = r.Body.Close()
			r.Body = http.NoBody
			return Response{Response: r, Body: body}, false, nil
		}
		return Response{}, false, &writeError{werr}
	}
	var r *http.Response
	for n := 0; ; n++ {
		r, err = http.ReadResponse(cn.br, postRequest)
		if err != nil {
			return Response{}, false, fmt.Errorf("read response: %w", err)
		}
		// Informational answers (100 Continue, 103 Early Hints) precede the
		// final one; 101 is final: the server switched protocols.
		if r.StatusCode >= 200 || r.StatusCode == http.StatusSwitchingProtocols || n == max1xx {
			break
		}
	}
	body, rerr := readAtMost(r.Body, keep)
	complete := rerr == nil && drain(r.Body, discard)
	_ = r.Body.Close()
	r.Body = http.NoBody
	// Bytes after the response answer nothing that was asked.
	reusable = complete && !r.Close && r.StatusCode >= 200 && cn.br.Buffered() == 0
	return Response{Response: r, Body: body}, reusable, nil
}

// readAtMost reads up to n bytes of r.
func readAtMost(r io.Reader, n int) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, int64(n)))
}

// drain reads and discards up to n bytes of r and reports whether r ended.
func drain(r io.Reader, n int) bool {
	if _, err := io.Copy(io.Discard, io.LimitReader(r, int64(n))); err != nil {
		return false
	}
	var one [1]byte
	m, err := r.Read(one[:])
	return m == 0 && errors.Is(err, io.EOF)
}
