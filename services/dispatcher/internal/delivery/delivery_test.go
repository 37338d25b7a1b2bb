package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/signature"
	"github.com/hookline/hookline/pkg/ssrf"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	resp := func(code int, retryAfter string) *http.Response {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &http.Response{StatusCode: code, Header: h}
	}
	tests := []struct {
		name string
		resp *http.Response
		err  error
		want Outcome
	}{
		{"200", resp(200, ""), nil, Outcome{Kind: Succeeded, StatusCode: 200}},
		{"204", resp(204, ""), nil, Outcome{Kind: Succeeded, StatusCode: 204}},
		{"101", resp(101, ""), nil, Outcome{Kind: Retry, StatusCode: 101, Error: "status 101"}},
		{"301", resp(301, ""), nil, Outcome{Kind: Dead, StatusCode: 301, Error: "status 301", Reason: ReasonNonRetryableStatus}},
		{"400", resp(400, ""), nil, Outcome{Kind: Dead, StatusCode: 400, Error: "status 400", Reason: ReasonNonRetryableStatus}},
		{"403", resp(403, ""), nil, Outcome{Kind: Dead, StatusCode: 403, Error: "status 403", Reason: ReasonNonRetryableStatus}},
		{"408", resp(408, ""), nil, Outcome{Kind: Retry, StatusCode: 408, Error: "status 408"}},
		{"410", resp(410, ""), nil, Outcome{Kind: Dead, StatusCode: 410, Error: "status 410", Reason: ReasonNonRetryableStatus, DisableEndpoint: true}},
		{"425", resp(425, ""), nil, Outcome{Kind: Retry, StatusCode: 425, Error: "status 425"}},
		{"429 retry-after", resp(429, "7"), nil, Outcome{Kind: Retry, StatusCode: 429, Error: "status 429", RetryAfter: 7 * time.Second}},
		{"500 ignores retry-after", resp(500, "7"), nil, Outcome{Kind: Retry, StatusCode: 500, Error: "status 500"}},
		{"503 date", resp(503, now.Add(time.Minute).Format(http.TimeFormat)), nil, Outcome{Kind: Retry, StatusCode: 503, Error: "status 503", RetryAfter: time.Minute}},
		{"timeout", nil, fmt.Errorf("post: %w", context.DeadlineExceeded), Outcome{Kind: Retry, Error: "timeout"}},
		{"refused", nil, &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, Outcome{Kind: Retry, Error: "connection refused"}},
		{"dns", nil, &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}, Outcome{Kind: Retry, Error: "dns: no such host"}},
		{"blocked", nil, fmt.Errorf("dial: %w", ssrf.ErrBlocked), Outcome{Kind: Dead, Error: "destination blocked", Reason: ReasonDestinationBlocked}},
		{"other", nil, errors.New("boom"), Outcome{Kind: Retry, Error: "connection error"}},
		{"bad config", nil, &RequestError{Err: errors.New("no signing secret")}, Outcome{Kind: Retry, Error: "invalid endpoint configuration"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Classify(tc.resp, tc.err, now); got != tc.want {
				t.Errorf("Classify = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{" 5 ", 5 * time.Second, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{"99999999999", MaxRetryAfter, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"Sun, 22 Nov 2026 10:00:30 GMT", 30 * time.Second, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, ok := ParseRetryAfter(tc.in, now)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestNextDelay(t *testing.T) {
	t.Parallel()
	sched := []time.Duration{time.Second, time.Minute}
	tests := []struct {
		name    string
		n       int
		minimum time.Duration
		factor  float64
		want    time.Duration
		wantOK  bool
	}{
		{"first, lowest jitter", 1, 0, 0, 900 * time.Millisecond, true},
		{"first, middle", 1, 0, 0.5, time.Second, true},
		{"first, highest jitter", 1, 0, 0.999999, 1099999999 * time.Nanosecond, true},
		{"second", 2, 0, 0.5, time.Minute, true},
		{"retry-after above jitter", 1, 5 * time.Second, 0, 5 * time.Second, true},
		{"retry-after below jitter", 2, 5 * time.Second, 0, 54 * time.Second, true},
		{"exhausted", 3, 0, 0.5, 0, false},
		{"no schedule", 1, 0, 0.5, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := sched
			if tc.name == "no schedule" {
				s = nil
			}
			got, ok := NextDelay(s, tc.n, tc.minimum, tc.factor)
			if ok != tc.wantOK || (got-tc.want).Abs() > time.Microsecond {
				t.Errorf("NextDelay = %s, %v; want %s, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestNewRequest(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	accepted := time.Date(2026, 11, 22, 10, 0, 0, 123000, time.UTC)
	cur, old, expired := signature.NewSecret(), signature.NewSecret(), signature.NewSecret()
	ep := &hooklinev1.Endpoint{
		Url: "https://example.com/hook",
		Secrets: []*hooklinev1.Secret{
			{Value: cur},
			{Value: old, ExpiresAt: timestamppb.New(now.Add(time.Hour))},
			{Value: expired, ExpiresAt: timestamppb.New(now.Add(-time.Second))},
		},
		Headers:        map[string]string{"X-Team": "payments", "Webhook-Id": "spoofed", "User-Agent": "spoofed"},
		PropagateTrace: false,
	}
	d := &hooklinev1.Delivery{EventId: "evt_1", EventType: "order.created", Data: []byte(`{"a":[1,2]}`), AcceptedAt: timestamppb.New(accepted)}
	req, err := NewRequest(t.Context(), ep, d, now)
	if err != nil {
		t.Fatal(err)
	}
	body := Body(d)
	if want := `{"type":"order.created","timestamp":"2026-11-22T10:00:00.000123Z","data":{"a":[1,2]}}`; string(body) != want {
		t.Errorf("body %s, want %s", body, want)
	}
	if req.Method != http.MethodPost || req.Header.Get("Webhook-Id") != "evt_1" || req.Header.Get("Webhook-Timestamp") != "1800000000" ||
		req.Header.Get("X-Team") != "payments" || req.Header.Get("User-Agent") == "spoofed" {
		t.Errorf("request headers %v", req.Header)
	}
	if hasHeaderFold(req.Header, "traceparent") {
		t.Error("traceparent sent although propagate_trace is false")
	}
	sig := req.Header.Get("Webhook-Signature")
	for _, s := range []string{cur, old} {
		if err := signature.Verify([]string{s}, "evt_1", "1800000000", sig, body, now); err != nil {
			t.Errorf("does not verify with an active secret: %v", err)
		}
	}
	if err := signature.Verify([]string{expired}, "evt_1", "1800000000", sig, body, now); err == nil {
		t.Error("signed with an expired secret")
	}
}

// hasHeaderFold reports whether h has name in any letter case (the request
// sets traceparent under its lower-case key, outside Go's canonical form).
func hasHeaderFold(h http.Header, name string) bool {
	for k := range h {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}
