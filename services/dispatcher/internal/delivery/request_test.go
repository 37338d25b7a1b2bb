package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/signature"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// referenceBody is the envelope as encoding/json and apitime write it.
func referenceBody(d *hooklinev1.Delivery) []byte {
	typ, _ := json.Marshal(d.GetEventType())
	data := d.GetData()
	if len(data) == 0 {
		data = []byte("null")
	}
	return []byte(`{"type":` + string(typ) + `,"timestamp":"` + apitime.Format(d.GetAcceptedAt().AsTime()) + `","data":` + string(data) + `}`)
}

func TestBodyMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{"order.created", "a_b-c.D9", `we"ird`, "back\\slash", "<html>&", "tab\there", "ünïcode", "\u2028"} {
		for _, at := range []*timestamppb.Timestamp{nil, timestamppb.New(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)),
			timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 6000, time.FixedZone("x", 3600)))} {
			for _, data := range [][]byte{nil, []byte(`{"a":1}`)} {
				d := &hooklinev1.Delivery{EventType: typ, AcceptedAt: at, Data: data}
				if got, want := Body(d), referenceBody(d); !bytes.Equal(got, want) {
					t.Errorf("Body = %s, want %s", got, want)
				}
			}
		}
	}
}

func TestRequestTraceparentMatchesPropagator(t *testing.T) {
	t.Parallel()
	for _, flags := range []trace.TraceFlags{0, trace.FlagsSampled, 0xff} {
		sc := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, SpanID: trace.SpanID{0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 1, 2},
			TraceFlags: flags,
		})
		ctx := trace.ContextWithSpanContext(context.Background(), sc)
		ep := &hooklinev1.Endpoint{Url: "http://example.com/", PropagateTrace: true, Secrets: []*hooklinev1.Secret{{Value: signature.NewSecret()}}}
		req, err := NewRequest(ctx, ep, &hooklinev1.Delivery{EventId: "evt_1"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		carrier := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, carrier)
		if got, want := req.Header.Values(headerTrace), carrier.Get(headerTrace); len(got) != 1 || got[0] != want {
			t.Errorf("traceparent %q, want %q", got, want)
		}
	}
}

func TestRequestSignatureErrors(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for name, ep := range map[string]*hooklinev1.Endpoint{
		"no secret":     {Url: "http://example.com/"},
		"all expired":   {Url: "http://example.com/", Secrets: []*hooklinev1.Secret{{Value: signature.NewSecret(), ExpiresAt: timestamppb.New(now.Add(-time.Second))}}},
		"undecodable":   {Url: "http://example.com/", Secrets: []*hooklinev1.Secret{{Value: "whsec_!!"}}},
		"malformed url": {Url: "http://[::1/", Secrets: []*hooklinev1.Secret{{Value: signature.NewSecret()}}},
	} {
		if _, err := NewRequest(t.Context(), ep, &hooklinev1.Delivery{EventId: "evt_1"}, now); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// An expired undecodable secret does not matter.
	ep := &hooklinev1.Endpoint{Url: "http://example.com/", Secrets: []*hooklinev1.Secret{
		{Value: signature.NewSecret()}, {Value: "whsec_!!", ExpiresAt: timestamppb.New(now.Add(-time.Second))}}}
	if _, err := NewRequest(t.Context(), ep, &hooklinev1.Delivery{EventId: "evt_1"}, now); err != nil {
		t.Error(err)
	}
}

// TestSenderWire checks what an endpoint receives from a Sender: the exact
// body, headers and a verifying signature, on a reused connection, with
// credentials in the URL sent as basic auth and no redirect followed; and
// that a changed configuration is used at once.
func TestSenderWire(t *testing.T) {
	t.Parallel()
	type got struct {
		h    http.Header
		body []byte
		user string
		pass string
		host string
	}
	reqs := make(chan got, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u, p, _ := r.BasicAuth()
		reqs <- got{r.Header.Clone(), b, u, p, r.Host}
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	dials := 0
	s := NewSender(func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials++
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	})
	secret := signature.NewSecret()
	ep := &hooklinev1.Endpoint{Id: "ep_1", Url: srv.URL + "/hook", Secrets: []*hooklinev1.Secret{{Value: secret}},
		Headers: map[string]string{"x-team": "payments"}}
	d := &hooklinev1.Delivery{EventId: "evt_1", EventType: "order.created", Data: []byte(`{"a":1}`),
		AcceptedAt: timestamppb.New(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))}
	for range 3 {
		now := time.Now()
		res := s.Send(t.Context(), ep, d, now)
		if res.Err != nil || res.Response.StatusCode != 200 || string(res.Body) != "ok" {
			t.Fatalf("send: %+v", res)
		}
		g := <-reqs
		if want := referenceBody(d); !bytes.Equal(g.body, want) {
			t.Errorf("body %s, want %s", g.body, want)
		}
		if g.h.Get("Content-Type") != "application/json" || g.h.Get("User-Agent") == "" || g.h.Get("X-Team") != "payments" ||
			g.h.Get(HeaderID) != "evt_1" || g.user != "" {
			t.Errorf("headers %v", g.h)
		}
		if err := signature.Verify([]string{secret}, "evt_1", g.h.Get(HeaderTimestamp), g.h.Get(HeaderSignature), g.body, now); err != nil {
			t.Error(err)
		}
	}
	if dials != 1 {
		t.Errorf("%d dials for 3 attempts, want 1 (connection reuse)", dials)
	}

	// A new configuration: credentials in the URL, a redirecting path.
	u := srv.URL[:len("http://")] + "user:pa%20ss@" + srv.URL[len("http://"):] + "/redirect"
	ep2 := &hooklinev1.Endpoint{Id: "ep_1", Url: u, Secrets: []*hooklinev1.Secret{{Value: secret}}}
	res := s.Send(t.Context(), ep2, d, time.Now())
	if res.Err != nil || res.Response.StatusCode != http.StatusFound {
		t.Fatalf("redirect: %+v", res)
	}
	g := <-reqs
	if g.user != "user" || g.pass != "pa ss" || g.h.Get("X-Team") != "" {
		t.Errorf("new configuration not used: user %q pass %q headers %v", g.user, g.pass, g.h)
	}
	select {
	case g := <-reqs:
		t.Errorf("redirect followed: %v", g.h)
	default:
	}
}

// BenchmarkSenderRequest builds the signed request of a 1 KiB event from a
// prepared endpoint configuration, as the Sender does per attempt.
func BenchmarkSenderRequest(b *testing.B) {
	ep, d := benchDelivery()
	p := prepare(ep)
	now := time.Now()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.request(ctx, d, now); err != nil {
			b.Fatal(err)
		}
	}
}
