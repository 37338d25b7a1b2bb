package ssrf

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestBlocked(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr    string
		blocked bool
	}{
		// IPv4
		{"93.184.216.34", false},
		{"8.8.8.8", false},
		{"1.1.1.1", false},
		{"100.63.255.255", false},
		{"100.128.0.0", false},
		{"172.15.255.255", false},
		{"172.32.0.0", false},
		{"223.255.255.254", false},
		{"127.0.0.1", true},
		{"127.255.255.254", true},
		{"10.0.0.1", true},
		{"10.255.255.255", true},
		{"172.16.0.1", true},
		{"172.31.255.255", true},
		{"192.168.1.1", true},
		{"169.254.169.254", true}, // cloud metadata
		{"100.64.0.1", true},      // CGNAT
		{"100.127.255.255", true},
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"255.255.255.255", true},
		{"240.0.0.1", true},
		{"224.0.0.1", true},
		{"239.255.255.250", true},
		{"192.0.2.10", true},
		{"198.51.100.1", true},
		{"203.0.113.7", true},
		{"198.18.0.1", true},
		{"192.0.0.8", true},
		// IPv6
		{"2606:4700::1", false},
		{"2a00:1450:4001:80b::200e", false},
		{"2001:4860:4860::8888", false},
		{"::1", true},
		{"::", true},
		{"fc00::1", true},
		{"fd12:3456:789a::1", true},
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"febf::1", true},
		{"ff02::1", true},
		{"ff05::1:3", true},
		{"2001:db8::1", true},
		{"2001::1", true}, // Teredo
		{"fec0::1", true},
		// IPv4 in IPv6
		{"::ffff:127.0.0.1", true},
		{"::ffff:10.1.2.3", true},
		{"::ffff:169.254.169.254", true},
		{"::ffff:93.184.216.34", false},
		{"::127.0.0.1", true},         // IPv4-compatible
		{"64:ff9b::7f00:1", true},     // NAT64 of 127.0.0.1
		{"64:ff9b::a9fe:a9fe", true},  // NAT64 of 169.254.169.254
		{"64:ff9b::5db8:d822", false}, // NAT64 of 93.184.216.34
		{"64:ff9b:1::1", true},        // local-use NAT64
		{"2002:7f00:1::1", true},      // 6to4 of 127.0.0.1
		{"2002:c0a8:101::1", true},    // 6to4 of 192.168.1.1
		{"2002:5db8:d822::1", false},  // 6to4 of 93.184.216.34
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			t.Parallel()
			ip := netip.MustParseAddr(tc.addr)
			if got := Blocked(ip); got != tc.blocked {
				t.Fatalf("Blocked(%s) = %v, want %v (reason %q)", tc.addr, got, tc.blocked, reason(ip))
			}
		})
	}
	if !Blocked(netip.Addr{}) {
		t.Error("Blocked(zero Addr) = false, want true")
	}
}

// fakeResolver answers from a map and counts lookups.
type fakeResolver struct {
	answers map[string][]string
	calls   atomic.Int32
}

func (f *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.calls.Add(1)
	a, ok := f.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]netip.Addr, len(a))
	for i, s := range a {
		out[i] = netip.MustParseAddr(s)
	}
	return out, nil
}

// noDNS is a resolver that reads /etc/hosts but never sends a DNS query.
func noDNS() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS in tests")
	}}
}

func TestDialerRefusesMixedAnswers(t *testing.T) {
	t.Parallel()
	r := &fakeResolver{answers: map[string][]string{
		"mixed.test":  {"93.184.216.34", "10.0.0.1"},
		"mixed6.test": {"2606:4700::1", "::ffff:127.0.0.1"},
		"meta.test":   {"169.254.169.254"},
		"nat64.test":  {"64:ff9b::a00:1"},
	}}
	d := NewDialer(false, time.Second)
	d.resolver = r
	for host := range r.answers {
		conn, err := d.DialContext(t.Context(), "tcp", host+":80")
		if !errors.Is(err, ErrBlocked) {
			if conn != nil {
				conn.Close()
			}
			t.Fatalf("DialContext(%s) = %v, want ErrBlocked", host, err)
		}
		if !strings.Contains(err.Error(), host) {
			t.Errorf("error %q does not name the host %s", err, host)
		}
	}
}

func TestDialerRefusesLoopback(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("request reached the loopback server")
	}))
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	d := NewDialer(false, time.Second)
	d.resolver = noDNS()
	for _, addr := range []string{
		srv.Listener.Addr().String(),
		net.JoinHostPort("localhost", strconv.Itoa(port)),
		net.JoinHostPort("::ffff:127.0.0.1", strconv.Itoa(port)),
		net.JoinHostPort("0.0.0.0", strconv.Itoa(port)),
	} {
		conn, err := d.DialContext(t.Context(), "tcp", addr)
		if !errors.Is(err, ErrBlocked) {
			if conn != nil {
				conn.Close()
			}
			t.Fatalf("DialContext(%s) = %v, want ErrBlocked", addr, err)
		}
		if !strings.Contains(err.Error(), "127.0.0.1") && !strings.Contains(err.Error(), "0.0.0.0") {
			t.Errorf("error %q does not name the address", err)
		}
	}

	// Through an http.Client, as the dispatcher uses it: still ErrBlocked.
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 2 * time.Second}
	resp, err := client.Get(srv.URL)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, ErrBlocked) {
		t.Fatalf("GET %s = %v, want ErrBlocked", srv.URL, err)
	}
}

func TestDialerAllowPrivateConnects(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "hello")
	}))
	t.Cleanup(srv.Close)
	port := strconv.Itoa(srv.Listener.Addr().(*net.TCPAddr).Port)

	r := &fakeResolver{answers: map[string][]string{"hook.test": {"127.0.0.1"}}}
	d := NewDialer(true, 2*time.Second)
	d.resolver = r
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}, Timeout: 2 * time.Second}
	for _, u := range []string{srv.URL, "http://hook.test:" + port + "/"} {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello" {
			t.Fatalf("GET %s body = %q", u, body)
		}
	}
	// hook.test exists only in the fake resolver, so the connection went to
	// the IP it returned, looked up exactly once (no second DNS answer).
	if n := r.calls.Load(); n != 1 {
		t.Fatalf("resolver called %d times, want 1", n)
	}
}

func TestDialerUnresolvableAndNetworks(t *testing.T) {
	t.Parallel()
	d := NewDialer(false, time.Second)
	d.resolver = &fakeResolver{answers: map[string][]string{"empty.test": {}}}
	for _, addr := range []string{"nowhere.test:80", "empty.test:80"} {
		if _, err := d.DialContext(t.Context(), "tcp", addr); err == nil || errors.Is(err, ErrBlocked) {
			t.Errorf("DialContext(%s) = %v, want a resolution error", addr, err)
		}
	}
	if _, err := d.DialContext(t.Context(), "udp", "127.0.0.1:53"); err == nil {
		t.Error("DialContext(udp) succeeded")
	}
	if _, err := d.DialContext(t.Context(), "tcp", "no-port"); err == nil {
		t.Error("DialContext without port succeeded")
	}
}

func TestControlBlocked(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr    string
		blocked bool
	}{
		{"127.0.0.1:80", true},
		{"[::1]:443", true},
		{"[fe80::1%lo]:80", true},
		{"93.184.216.34:443", false},
		{"garbage", true},
	} {
		err := controlBlocked(t.Context(), "tcp4", tc.addr, nil)
		if got := errors.Is(err, ErrBlocked); got != tc.blocked {
			t.Errorf("controlBlocked(%s) = %v, want blocked=%v", tc.addr, err, tc.blocked)
		}
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		url          string
		allowPrivate bool
		want         error
	}{
		{"public IPv4", "https://93.184.216.34/hook", false, nil},
		{"public IPv6", "https://[2606:4700::1]:8443/hook", false, nil},
		{"userinfo allowed", "https://user:pw@93.184.216.34/", false, nil},
		{"loopback", "http://127.0.0.1:8080/", false, ErrBlocked},
		{"loopback IPv6", "http://[::1]/", false, ErrBlocked},
		{"localhost", "http://localhost/", false, ErrBlocked},
		{"metadata", "http://169.254.169.254/latest/meta-data", false, ErrBlocked},
		{"private", "https://10.1.2.3/", false, ErrBlocked},
		{"mapped", "http://[::ffff:192.168.0.1]/", false, ErrBlocked},
		{"loopback allowed", "http://127.0.0.1:8080/", true, nil},
		{"localhost allowed", "http://localhost:9000/", true, nil},
		{"unresolvable", "https://does-not-exist.invalid/", false, ErrUnresolvable},
		{"unresolvable even when private allowed", "https://does-not-exist.invalid/", true, ErrUnresolvable},
		{"ftp", "ftp://93.184.216.34/", false, ErrInvalidURL},
		{"no scheme", "93.184.216.34/hook", false, ErrInvalidURL},
		{"javascript", "javascript:alert(1)", false, ErrInvalidURL},
		{"no host", "https:///path", false, ErrInvalidURL},
		{"bad port", "https://93.184.216.34:99999/", false, ErrInvalidURL},
		{"port zero", "https://93.184.216.34:0/", false, ErrInvalidURL},
		{"unparsable", "http://[::1/", false, ErrInvalidURL},
		{"empty", "", false, ErrInvalidURL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := CheckURL(t.Context(), tc.url, tc.allowPrivate, noDNS())
			if tc.want == nil {
				if err != nil {
					t.Fatalf("CheckURL(%q) = %v, want nil", tc.url, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("CheckURL(%q) = %v, want %v", tc.url, err, tc.want)
			}
		})
	}
}

func TestCheckHostMixedAnswers(t *testing.T) {
	t.Parallel()
	r := &fakeResolver{answers: map[string][]string{
		"public.test": {"93.184.216.34", "2606:4700::1"},
		"mixed.test":  {"93.184.216.34", "192.168.0.10"},
		"rebind.test": {"2606:4700::1", "fd00::1"},
	}}
	for _, tc := range []struct {
		host string
		want error
	}{
		{"public.test", nil},
		{"mixed.test", ErrBlocked},
		{"rebind.test", ErrBlocked},
		{"missing.test", ErrUnresolvable},
	} {
		err := checkHost(t.Context(), r, tc.host, false)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("checkHost(%s) = %v, want %v", tc.host, err, tc.want)
		}
	}
	if err := checkHost(t.Context(), r, "mixed.test", true); err != nil {
		t.Errorf("checkHost(mixed.test, allowPrivate) = %v", err)
	}
}
