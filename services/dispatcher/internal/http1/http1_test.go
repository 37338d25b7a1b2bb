package http1

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// counting dials like the dispatcher does and counts the dials.
type counting struct{ n atomic.Int64 }

func (c *counting) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.n.Add(1)
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func post(host, path, body string) []byte {
	return []byte("POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

func target(addr string) Target { return Target{Addr: addr} }

func do(t *testing.T, c *Client, tg Target, req []byte) Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, tg, req, 4<<10, 64<<10)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	return resp
}

// TestDoOverNetHTTPServer sends to a net/http server: the request arrives
// whole, the answer is read, and the connection is reused, whatever the
// server's framing of the answer.
func TestDoOverNetHTTPServer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.RequestURI() != "/hook?a=1" || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Echo", string(b))
		_, _ = w.Write([]byte("got " + string(b)))
		if f, ok := w.(http.Flusher); ok && len(b) > 5 {
			f.Flush() // a chunked answer
			_, _ = w.Write([]byte(" more"))
		}
	}))
	defer srv.Close()
	var d counting
	c := New(d.dial)
	tg := target(srv.Listener.Addr().String())
	for i, body := range []string{`{"i":1}`, `{}`, `{"i":3}`} {
		resp := do(t, c, tg, post(tg.Addr, "/hook?a=1", body))
		want := "got " + body
		if len(body) > 5 {
			want += " more"
		}
		if resp.StatusCode != 200 || string(resp.Body) != want || resp.Header.Get("X-Echo") != body {
			t.Fatalf("attempt %d: %d %q %v", i, resp.StatusCode, resp.Body, resp.Header)
		}
	}
	if n := d.n.Load(); n != 1 {
		t.Errorf("%d dials for 3 requests, want 1", n)
	}
}

// rawServer answers every request on a connection with the next of
// answers, written as given, and closes the connection after an answer
// ending in "\x00close", or resets it after one ending in "\x00reset".
func rawServer(t *testing.T, answers ...string) (addr string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	conns = new(atomic.Int64)
	var next atomic.Int64
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer func() { _ = nc.Close() }()
				br := bufio.NewReader(nc)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					a := answers[int(next.Add(1)-1)%len(answers)]
					a, closing := strings.CutSuffix(a, "\x00close")
					a, resetting := strings.CutSuffix(a, "\x00reset")
					if resetting {
						_ = nc.(*net.TCPConn).SetLinger(0)
					}
					if _, err := io.WriteString(nc, a); err != nil || closing || resetting {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), conns
}

func TestDoReusesOnlyCleanConnections(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 100)
	cases := []struct {
		name   string
		answer string
		status int
		body   string
		reused bool
	}{
		{"content length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "ok", true},
		{"chunked", "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 201, "ok", true},
		{"informational first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 204, "", true},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 200, "ok", false},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "ok", false},
		{"until close", "HTTP/1.1 500 Internal Server Error\r\n\r\nbroken\x00close", 500, "broken", false},
		{"body beyond what is drained", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + long, 200, long[:10], false},
		{"bytes after the answer", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", 200, "ok", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, conns := rawServer(t, tc.answer)
			c := New((&net.Dialer{}).DialContext)
			tg := target(addr)
			for i := range 2 {
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				resp, err := c.Do(ctx, tg, post(addr, "/", "{}"), 10, 50)
				cancel()
				if err != nil {
					t.Fatalf("attempt %d: %v", i, err)
				}
				if resp.StatusCode != tc.status || string(resp.Body) != tc.body {
					t.Fatalf("attempt %d: %d %q, want %d %q", i, resp.StatusCode, resp.Body, tc.status, tc.body)
				}
			}
			want := int64(2)
			if tc.reused {
				want = 1
			}
			if n := conns.Load(); n != want {
				t.Errorf("%d connections for 2 requests, want %d", n, want)
			}
		})
	}
}

// TestDoChecksIdleConnections: a connection the server closed while it
// idled is not written to; the request goes on a new one.
func TestDoChecksIdleConnections(t *testing.T) {
	t.Parallel()
	addr, conns := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\x00close")
	c := New((&net.Dialer{}).DialContext)
	c.checkAfter = 0 // check on every reuse
	tg := target(addr)
	for i := range 3 {
		resp := do(t, c, tg, post(addr, "/", "{}"))
		if resp.StatusCode != 200 {
			t.Fatalf("attempt %d: %d", i, resp.StatusCode)
		}
		// The server's close reaches the client's socket before the next
		// request (the close has no "Connection: close" to announce it).
		deadline := time.Now().Add(5 * time.Second)
		for c.idleConns(tg) == 1 && alive(c.idle[tg][0].nc) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

// TestDoRetriesAWriteOnAClosedConnection: when writing on a reused
// connection fails (the server reset it), the request is written once more
// on a new connection.
func TestDoRetriesAWriteOnAClosedConnection(t *testing.T) {
	t.Parallel()
	addr, conns := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\x00reset")
	c := New((&net.Dialer{}).DialContext)
	c.checkAfter = time.Hour // never checked: the write finds the reset
	tg := target(addr)
	do(t, c, tg, post(addr, "/", "{}"))
	deadline := time.Now().Add(5 * time.Second)
	for alive(c.idle[tg][0].nc) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if resp := do(t, c, tg, post(addr, "/", "{}")); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestDoDropsConnectionsIdleTooLong: connections past the idle timeout are
// closed instead of reused, on the next get and by the sweeper.
func TestDoDropsConnectionsIdleTooLong(t *testing.T) {
	t.Parallel()
	addr, conns := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	c := New((&net.Dialer{}).DialContext)
	tg := target(addr)
	do(t, c, tg, post(addr, "/", "{}"))
	c.idle[tg][0].idleAt = time.Now().Add(-2 * c.idleTimeout)
	do(t, c, tg, post(addr, "/", "{}"))
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: the stale one was reused", n)
	}

	// Another target's idle connection, stale, goes at the next sweep,
	// and the sweeper stays armed while a connection is idle.
	addr2, _ := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	other := target(addr2)
	do(t, c, other, post(addr2, "/", "{}"))
	c.mu.Lock()
	c.idle[other][0].idleAt = time.Now().Add(-2 * c.idleTimeout)
	armed := c.sweeper != nil
	c.mu.Unlock()
	if !armed {
		t.Fatal("no sweeper armed while connections idle")
	}
	c.sweep()
	if n := c.idleConns(other); n != 0 {
		t.Errorf("%d idle connections of a stale target after a sweep, want 0", n)
	}
	if n := c.idleConns(tg); n != 1 {
		t.Errorf("%d idle connections of the target in use, want 1", n)
	}
	c.mu.Lock()
	c.idle[tg][0].idleAt = time.Now().Add(-2 * c.idleTimeout)
	c.mu.Unlock()
	c.sweep()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.idle) != 0 || c.sweeper != nil {
		t.Errorf("after the last idle connection went: %d targets idle, sweeper %v", len(c.idle), c.sweeper)
	}
}

func (c *Client) idleConns(t Target) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.idle[t])
}

// TestDoTimeoutAndCancel: a server that never answers costs the attempt its
// deadline and no more, and a cancelled context ends the attempt at once;
// neither connection is reused.
func TestDoTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, nc) }() // reads, never answers
		}
	}()
	// Dials are counted on the client's side: the server's accept loop
	// may not have run yet when Do returns.
	var d counting
	c := New(d.dial)
	tg := target(ln.Addr().String())

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	_, err = c.Do(ctx, tg, post(tg.Addr, "/", "{}"), 10, 10)
	cancel()
	var ne net.Error
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("timeout: %v, want a deadline exceeded", err)
	}

	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = c.Do(ctx, tg, post(tg.Addr, "/", "{}"), 10, 10)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancel: %v, want context.Canceled", err)
	}
	if n := c.idleConns(tg); n != 0 {
		t.Errorf("%d idle connections after interrupted exchanges, want 0", n)
	}
	if n := d.n.Load(); n != 2 {
		t.Errorf("%d dials, want 2: an interrupted connection was reused", n)
	}
}

// TestDoTLS: https targets get a verified TLS connection, reused, and a
// certificate for another name is refused.
func TestDoTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.Proto))
	}))
	defer srv.Close()
	var d counting
	c := New(d.dial)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c.tls = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	// httptest's certificate names example.com and 127.0.0.1.
	tg := Target{Addr: srv.Listener.Addr().String(), TLS: true, ServerName: "example.com"}
	for range 2 {
		resp := do(t, c, tg, post("example.com:"+port, "/", "{}"))
		if resp.StatusCode != 200 || string(resp.Body) != "HTTP/1.1" {
			t.Fatalf("%d %q", resp.StatusCode, resp.Body)
		}
	}
	if n := d.n.Load(); n != 1 {
		t.Errorf("%d dials, want 1", n)
	}
	bad := tg
	bad.ServerName = "hookline.invalid"
	_, err := c.Do(t.Context(), bad, post("hookline.invalid", "/", "{}"), 10, 10)
	var hostErr x509.HostnameError
	if !errors.As(err, &hostErr) {
		t.Errorf("wrong name: %v, want a hostname error", err)
	}
}

// TestDoDialError: the dialer's error is returned as it is, for the
// dispatcher to classify (a refused destination is dead at once).
func TestDoDialError(t *testing.T) {
	t.Parallel()
	c := New(func(context.Context, string, string) (net.Conn, error) { return nil, os.ErrPermission })
	if _, err := c.Do(t.Context(), target("127.0.0.1:1"), post("x", "/", "{}"), 10, 10); !errors.Is(err, os.ErrPermission) {
		t.Errorf("err %v", err)
	}
}

// TestDoBoundsWhatIsRead: headers without end fail the attempt once they
// pass MaxResponseHeaderBytes, instead of filling memory until the timeout.
func TestDoBoundsWhatIsRead(t *testing.T) {
	t.Parallel()
	addr, _ := rawServer(t, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 2*MaxResponseHeaderBytes)+"\r\nContent-Length: 0\r\n\r\n")
	c := New((&net.Dialer{}).DialContext)
	_, err := c.Do(t.Context(), target(addr), post(addr, "/", "{}"), 10, 10)
	if !errors.Is(err, errTooLarge) {
		t.Errorf("err %v, want %v", err, errTooLarge)
	}
}

// TestDoEarlyAnswer: a server that answers before reading the whole request
// and closes (a 413 for a body too large) has its answer returned, not the
// failed write.
func TestDoEarlyAnswer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		br := bufio.NewReader(nc)
		if _, err := http.ReadRequest(br); err != nil { // headers only
			_ = nc.Close()
			return
		}
		_, _ = io.WriteString(nc, "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big!")
		_ = nc.Close() // unread body: the kernel resets the connection
	}()
	addr := ln.Addr().String()
	c := New((&net.Dialer{}).DialContext)
	resp, err := c.Do(t.Context(), target(addr), post(addr, "/", strings.Repeat("x", 16<<20)), 10, 10)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge || string(resp.Body) != "too big!" {
		t.Errorf("%d %q", resp.StatusCode, resp.Body)
	}
}
