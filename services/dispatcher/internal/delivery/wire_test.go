package delivery

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/signature"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// TestWireMatchesRequest checks that what the Sender writes is the request
// NewRequest builds: read back by net/http's server-side parser, it has the
// same method, target, Host, headers and body, and it goes where net/http
// would dial.
func TestWireMatchesRequest(t *testing.T) {
	t.Parallel()
	secret, old := signature.NewSecret(), signature.NewSecret()
	now := time.Unix(1_800_000_000, 0)
	d := &hooklinev1.Delivery{EventId: "evt_1", EventType: "order.created", Data: []byte(`{"a":[1,2]}`),
		AcceptedAt: timestamppb.New(time.Date(2026, 11, 22, 10, 0, 0, 123000, time.UTC))}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	cases := []struct {
		url, addr, serverName string
		tls                   bool
		headers               map[string]string
		trace                 bool
	}{
		{url: "http://127.0.0.1:8080/hook", addr: "127.0.0.1:8080"},
		{url: "https://hooks.example.com/in?x=1&y=a%20b", addr: "hooks.example.com:443", serverName: "hooks.example.com", tls: true, trace: true},
		{url: "http://user:pa%20ss@example.com:", addr: "example.com:80",
			headers: map[string]string{"x-team": "payments", "X-Multi": " padded\t", "Transfer-Encoding": "chunked", "Connection": "close", "Webhook-Id": "spoofed"}},
		{url: "https://[2001:db8::1]:8443/a/b%2Fc", addr: "[2001:db8::1]:8443", serverName: "2001:db8::1", tls: true},
		{url: "http://example.com/x", addr: "example.com:80", headers: map[string]string{"Authorization": "Bearer t"}},
	}
	// A query written with a space and non-ASCII letters is sent escaped.
	ep := &hooklinev1.Endpoint{Id: "q", Url: "http://example.com/p?name=a b&city=Zürich",
		Secrets: []*hooklinev1.Secret{{Value: secret}}}
	w, err := prepare(ep).wire(ctx, new(buffers), d, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(w))); err != nil ||
		got.URL.Query().Get("name") != "a b" || got.URL.Query().Get("city") != "Zürich" {
		t.Errorf("escaped query: %v %v", got, err)
	}
	for _, tc := range cases {
		ep := &hooklinev1.Endpoint{Id: "ep_1", Url: tc.url, Headers: tc.headers, PropagateTrace: tc.trace,
			Secrets: []*hooklinev1.Secret{{Value: secret}, {Value: old, ExpiresAt: timestamppb.New(now.Add(time.Hour))}}}
		p := prepare(ep)
		want, err := p.request(ctx, d, now)
		if err != nil {
			t.Fatalf("%s: request: %v", tc.url, err)
		}
		wire, err := p.wire(ctx, new(buffers), d, now)
		if err != nil {
			t.Fatalf("%s: wire: %v", tc.url, err)
		}
		got, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(wire)))
		if err != nil {
			t.Fatalf("%s: the wire form does not parse: %v\n%s", tc.url, err, wire)
		}
		gotBody, _ := io.ReadAll(got.Body)
		wantBody, _ := io.ReadAll(want.Body)
		if got.Method != want.Method || got.RequestURI != want.URL.RequestURI() || got.Host != want.Host ||
			!bytes.Equal(gotBody, wantBody) || got.ContentLength != int64(len(wantBody)) {
			t.Errorf("%s: got %s %s Host %s (%d) %s, want %s %s Host %s %s", tc.url, got.Method, got.RequestURI, got.Host,
				got.ContentLength, gotBody, want.Method, want.URL.RequestURI(), want.Host, wantBody)
		}
		got.Header.Del("Content-Length")
		if !equalHeaders(got.Header, want.Header) {
			t.Errorf("%s: headers\n got %v\nwant %v", tc.url, got.Header, want.Header)
		}
		for _, name := range []string{"Transfer-Encoding", "Connection"} {
			if _, ok := got.Header[name]; ok || len(got.TransferEncoding) > 0 || got.Close {
				t.Errorf("%s: an endpoint header set %s", tc.url, name)
			}
		}
		if tc.trace != (got.Header.Get("Traceparent") != "") {
			t.Errorf("%s: traceparent %q with propagate_trace %v", tc.url, got.Header.Get("Traceparent"), tc.trace)
		}
		if err := signature.Verify([]string{old}, "evt_1", got.Header.Get(HeaderTimestamp), got.Header.Get(HeaderSignature), gotBody, now); err != nil {
			t.Errorf("%s: %v", tc.url, err)
		}
		if p.target.Addr != tc.addr || p.target.TLS != tc.tls || (tc.tls && p.target.ServerName != tc.serverName) {
			t.Errorf("%s: target %+v, want %s tls=%v %s", tc.url, p.target, tc.addr, tc.tls, tc.serverName)
		}
		if host, port, _ := net.SplitHostPort(p.target.Addr); host == "" || port == "" {
			t.Errorf("%s: target address %q", tc.url, p.target.Addr)
		}
	}
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w := b[k]
		if len(v) != len(w) {
			return false
		}
		for i := range v {
			if strings.TrimSpace(v[i]) != strings.TrimSpace(w[i]) {
				return false
			}
		}
	}
	return true
}

// TestWireRefusesWhatCannotBeSent: a configuration or an event id that
// would break the request's framing is an error of the request, found
// before anything is dialled.
func TestWireRefusesWhatCannotBeSent(t *testing.T) {
	t.Parallel()
	secret := signature.NewSecret()
	d := &hooklinev1.Delivery{EventId: "evt_1", EventType: "a", Data: []byte(`1`), AcceptedAt: timestamppb.Now()}
	dials := 0
	s := NewSender(func(context.Context, string, string) (net.Conn, error) {
		dials++
		return nil, errors.New("dialled")
	})
	cases := []struct {
		name string
		ep   *hooklinev1.Endpoint
		d    *hooklinev1.Delivery
	}{
		{"header value with CRLF", &hooklinev1.Endpoint{Id: "a", Url: "http://example.com/", Headers: map[string]string{"X-A": "1\r\nX-B: 2"}}, d},
		{"header name not a token", &hooklinev1.Endpoint{Id: "b", Url: "http://example.com/", Headers: map[string]string{"X A": "1"}}, d},
		{"scheme", &hooklinev1.Endpoint{Id: "c", Url: "ftp://example.com/"}, d},
		{"non-ASCII host", &hooklinev1.Endpoint{Id: "d", Url: "http://bücher.example/"}, d},
		{"no host", &hooklinev1.Endpoint{Id: "e", Url: "http:///x"}, d},
		{"event id with CRLF", &hooklinev1.Endpoint{Id: "f", Url: "http://example.com/"},
			&hooklinev1.Delivery{EventId: "evt\r\nX: 1", EventType: "a", Data: []byte(`1`), AcceptedAt: timestamppb.Now()}},
	}
	for _, tc := range cases {
		tc.ep.Secrets = []*hooklinev1.Secret{{Value: secret}}
		res := s.Send(t.Context(), tc.ep, tc.d, time.Now())
		var reqErr *RequestError
		if !errors.As(res.Err, &reqErr) {
			t.Errorf("%s: %v, want a RequestError", tc.name, res.Err)
		}
	}
	if dials != 0 {
		t.Errorf("%d dials", dials)
	}
}

// BenchmarkSenderWire builds the signed wire form of a 1 KiB event from a
// prepared endpoint configuration, as the Sender does per attempt.
func BenchmarkSenderWire(b *testing.B) {
	ep, d := benchDelivery()
	p := prepare(ep)
	now := time.Now()
	ctx := context.Background()
	bufs := new(buffers)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.wire(ctx, bufs, d, now); err != nil {
			b.Fatal(err)
		}
	}
}
