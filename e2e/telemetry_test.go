package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/freeport"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
)

// span is one span the collector received, ids in hex.
type span struct {
	service, name           string
	traceID, spanID, parent string
	kind                    tracepb.Span_SpanKind
	attrs                   map[string]string
	links                   []string // "traceID/spanID"
	statusCode              tracepb.Status_StatusCode
}

// collector is an OTLP/HTTP trace receiver.
type collector struct {
	mu    sync.Mutex
	spans []span
	URL   string
}

func newCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.add(&req)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	c.URL = srv.URL
	return c
}

func (c *collector) add(req *coltracepb.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := span{
					service: service, name: s.GetName(), kind: s.GetKind(),
					traceID: hex.EncodeToString(s.GetTraceId()), spanID: hex.EncodeToString(s.GetSpanId()),
					parent: hex.EncodeToString(s.GetParentSpanId()), attrs: map[string]string{},
					statusCode: s.GetStatus().GetCode(),
				}
				for _, a := range s.GetAttributes() {
					v := a.GetValue()
					switch {
					case v.GetStringValue() != "":
						sp.attrs[a.GetKey()] = v.GetStringValue()
					default:
						sp.attrs[a.GetKey()] = strconv.FormatInt(v.GetIntValue(), 10)
					}
				}
				for _, l := range s.GetLinks() {
					sp.links = append(sp.links, hex.EncodeToString(l.GetTraceId())+"/"+hex.EncodeToString(l.GetSpanId()))
				}
				c.spans = append(c.spans, sp)
			}
		}
	}
}

func (c *collector) all() []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]span(nil), c.spans...)
}

// find returns the spans of trace with service and name.
func (c *collector) find(trace, service, name string) []span {
	var out []span
	for _, s := range c.all() {
		if s.traceID == trace && s.service == service && s.name == name {
			out = append(out, s)
		}
	}
	return out
}

func (c *collector) dump(trace string) string {
	var b strings.Builder
	for _, s := range c.all() {
		if trace == "" || s.traceID == trace {
			fmt.Fprintf(&b, "  %s %s %q span=%s parent=%s links=%v\n", s.traceID, s.service, s.name, s.spanID, s.parent, s.links)
		}
	}
	return b.String()
}

// tracedPipeline is startPipeline with every service exporting spans to col;
// ops holds each service's ops address.
func startTracedPipeline(t *testing.T, col *collector) (*pipeline, map[string]string) {
	t.Helper()
	srv := natstest.Start(t)
	dbURL := pgtest.NewDatabase(t)
	const admin = "e2e-admin-token-0123456789"
	p := &pipeline{natsURL: srv.URL()}
	ops := map[string]string{}
	ingestHTTP, deadHTTP := freeport.Addr(t), freeport.Addr(t)
	for _, svc := range []struct{ name, http string }{
		{"hookline-ingest", ingestHTTP},
		{"hookline-fanout", ""},
		{"hookline-dispatcher", ""},
		{"hookline-deadletter", deadHTTP},
	} {
		ops[svc.name] = freeport.Addr(t)
		env := map[string]string{
			"HOOKLINE_NATS_URL":                   srv.URL(),
			"HOOKLINE_DATABASE_URL":               dbURL,
			"HOOKLINE_ADMIN_TOKEN":                admin,
			"HOOKLINE_ALLOW_PRIVATE_DESTINATIONS": "true",
			"HOOKLINE_LOG_LEVEL":                  "debug",
			"HOOKLINE_SHUTDOWN_TIMEOUT":           "10s",
			"HOOKLINE_OPS_ADDR":                   ops[svc.name],
			"HOOKLINE_HTTP_ADDR":                  svc.http,
			"OTEL_EXPORTER_OTLP_ENDPOINT":         col.URL,
			"OTEL_EXPORTER_OTLP_PROTOCOL":         "http/protobuf",
			"OTEL_BSP_SCHEDULE_DELAY":             "100",
		}
		if svc.http == "" {
			env["HOOKLINE_HTTP_ADDR"] = "off"
		}
		pr := start(t, svc.name, env)
		p.procs = append(p.procs, pr)
		waitReady(t, pr, ops[svc.name])
	}
	p.ingest = api{base: "http://" + ingestHTTP, token: admin}
	p.dead = api{base: "http://" + deadHTTP, token: admin}
	return p, ops
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// scrape returns the value of the first series of name whose labels include
// every one of labels (`k="v"`), or -1.
func scrape(t *testing.T, opsAddr, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + opsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", opsAddr, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		return v
	}
	return -1
}

// TestTraceAcrossServices runs ingest, fan-out and the dispatcher as
// separate processes exporting OTLP to a collector, and follows one event
// over HTTP, one over NATS and one retried delivery through their traces.
func TestTraceAcrossServices(t *testing.T) {
	col := newCollector(t)
	p, ops := startTracedPipeline(t, col)
	ok := newReceiver(t, func() int { return http.StatusOK })
	var flakyCalls sync.Mutex
	calls := 0
	flaky := newReceiver(t, func() int {
		flakyCalls.Lock()
		defer flakyCalls.Unlock()
		calls++
		if calls == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})

	p.ingest.must(t, "POST", "/v1/tenants", map[string]any{"id": "acme", "name": "Acme Inc"}, http.StatusCreated, nil)
	good := p.createEndpoint(t, "acme", map[string]any{"url": ok.URL, "event_types": []string{"order.*"}})
	retried := p.createEndpoint(t, "acme", map[string]any{"url": flaky.URL, "event_types": []string{"payment.*"}, "retry_schedule": []string{"200ms"}})
	// Endpoint changes reach fan-out and the dispatcher within 2 s (CONTRACT 2.2).
	time.Sleep(2 * time.Second)

	post := func(typ, traceparent string) string {
		t.Helper()
		body := fmt.Sprintf(`{"type":%q,"data":{"n":1}}`, typ)
		req, err := http.NewRequestWithContext(t.Context(), "POST", p.ingest.base+"/v1/tenants/acme/events", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+p.ingest.token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("traceparent", traceparent)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST event = %d: %s", resp.StatusCode, b)
		}
		_, rest, _ := strings.Cut(string(b), `"id":"`)
		id, _, _ := strings.Cut(rest, `"`)
		return id
	}

	// 1. Over HTTP, with the producer's traceparent.
	traceHTTP, producerHTTP := randomHex(t, 16), randomHex(t, 8)
	httpID := post("order.created", "00-"+traceHTTP+"-"+producerHTTP+"-01")

	// 2. Over NATS, with a traceparent header.
	traceNATS, producerNATS := randomHex(t, 16), randomHex(t, 8)
	nc, err := nats.Connect(p.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg("hookline.publish.acme.order.shipped")
	msg.Header.Set("Nats-Msg-Id", "nats-traced-1")
	msg.Header["traceparent"] = []string{"00-" + traceNATS + "-" + producerNATS + "-01"}
	msg.Data = []byte(`{"carrier":"ups"}`)
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatalf("publish: %v", err)
	}

	// 3. Over HTTP, failing once: the retry starts a new, linked trace.
	traceRetry, producerRetry := randomHex(t, 16), randomHex(t, 8)
	retryID := post("payment.created", "00-"+traceRetry+"-"+producerRetry+"-01")

	receiptOf := func(rc *receiver, id string, n int) []receipt {
		t.Helper()
		eventually(t, 20*time.Second, "delivery of "+id, func() error {
			if got := len(rc.byID(id)); got < n {
				return fmt.Errorf("%d receipts", got)
			}
			return nil
		})
		return rc.byID(id)
	}
	// traceparent sent to the endpoint: 00-<trace>-<parent span>-<flags>.
	sentParent := func(r receipt, trace string) string {
		t.Helper()
		parts := strings.Split(r.header.Get("traceparent"), "-")
		if len(parts) != 4 || parts[1] != trace {
			t.Fatalf("the endpoint got traceparent %q, want trace %s", r.header.Get("traceparent"), trace)
		}
		if r.header.Get("baggage") != "" {
			t.Fatalf("baggage sent to the endpoint: %q", r.header.Get("baggage"))
		}
		return parts[2]
	}

	// waitSpan polls until trace holds exactly one span service/name and
	// returns it.
	waitSpan := func(trace, service, name string) span {
		t.Helper()
		var got []span
		deadline := time.Now().Add(20 * time.Second)
		for {
			got = col.find(trace, service, name)
			if len(got) > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if len(got) != 1 {
			t.Fatalf("trace %s: %d spans %s %q, want 1; spans:\n%s", trace, len(got), service, name, col.dump(""))
		}
		return got[0]
	}
	childOf := func(child, parent span) {
		t.Helper()
		if child.parent != parent.spanID {
			t.Fatalf("%s %q: parent %s, want %s %q (%s)", child.service, child.name, child.parent, parent.service, parent.name, parent.spanID)
		}
	}
	// deliveryChain checks fan-out → dispatcher → HTTP under acceptSpan and
	// returns the outgoing HTTP span.
	deliveryChain := func(trace string, accept span, endpointID string) span {
		t.Helper()
		fan := waitSpan(trace, "hookline-fanout", "fanout event")
		childOf(fan, accept)
		fd := waitSpan(trace, "hookline-fanout", "fanout delivery")
		childOf(fd, fan)
		if fd.attrs["hookline.endpoint_id"] != endpointID {
			t.Fatalf("fanout delivery span attributes %v", fd.attrs)
		}
		deliver := waitSpan(trace, "hookline-dispatcher", "deliver")
		childOf(deliver, fd)
		out := waitSpan(trace, "hookline-dispatcher", "POST")
		childOf(out, deliver)
		if out.kind != tracepb.Span_SPAN_KIND_CLIENT || out.attrs["server.address"] != "127.0.0.1" || out.attrs["hookline.endpoint_id"] != endpointID {
			t.Fatalf("outgoing HTTP span: kind %v, attributes %v", out.kind, out.attrs)
		}
		for k := range out.attrs {
			if strings.HasPrefix(k, "url.") || k == "http.url" {
				t.Fatalf("outgoing HTTP span records the URL: %v", out.attrs)
			}
		}
		return out
	}

	t.Run("HTTP event", func(t *testing.T) {
		r := receiptOf(ok, httpID, 1)[0]
		server := waitSpan(traceHTTP, "hookline-ingest", "POST /v1/tenants/{tenant}/events")
		if server.parent != producerHTTP || server.kind != tracepb.Span_SPAN_KIND_SERVER || server.attrs["http.response.status_code"] != "202" {
			t.Fatalf("ingest server span: parent %s (producer %s), kind %v, attributes %v", server.parent, producerHTTP, server.kind, server.attrs)
		}
		accept := waitSpan(traceHTTP, "hookline-ingest", "accept event")
		childOf(accept, server)
		if accept.attrs["hookline.event_id"] != httpID {
			t.Fatalf("accept span attributes %v", accept.attrs)
		}
		out := deliveryChain(traceHTTP, accept, good.ID)
		if got := sentParent(r, traceHTTP); got != out.spanID {
			t.Fatalf("the endpoint's traceparent names span %s, want the outgoing HTTP span %s", got, out.spanID)
		}
		// PostgreSQL statements of the accept are traced inside it.
		eventually(t, 10*time.Second, "database spans", func() error {
			for _, s := range col.all() {
				if s.traceID == traceHTTP && s.service == "hookline-ingest" && s.attrs["db.system.name"] == "postgresql" && s.parent == accept.spanID {
					return nil
				}
			}
			return fmt.Errorf("no PostgreSQL span under the accept span")
		})
		// The attempt-log writer's batch span links to the attempt.
		eventually(t, 10*time.Second, "attempt log span", func() error {
			for _, s := range col.all() {
				if s.service == "hookline-dispatcher" && s.name == "write attempt log" && slices.Contains(s.links, traceHTTP+"/"+out.parent) {
					return nil
				}
			}
			return fmt.Errorf("no attempt-log span linked to the attempt %s", out.parent)
		})
		t.Logf("trace of the HTTP event:\n%s", col.dump(traceHTTP))
	})

	t.Run("NATS event", func(t *testing.T) {
		r := receiptOf(ok, "nats-traced-1", 1)[0]
		recv := waitSpan(traceNATS, "hookline-ingest", "receive HOOKLINE_INTAKE")
		if recv.parent != producerNATS || recv.kind != tracepb.Span_SPAN_KIND_CONSUMER {
			t.Fatalf("intake span: parent %s (producer %s), kind %v", recv.parent, producerNATS, recv.kind)
		}
		accept := waitSpan(traceNATS, "hookline-ingest", "accept event")
		childOf(accept, recv)
		out := deliveryChain(traceNATS, accept, good.ID)
		if got := sentParent(r, traceNATS); got != out.spanID {
			t.Fatalf("the endpoint's traceparent names span %s, want %s", got, out.spanID)
		}
	})

	t.Run("retry is a new trace linked to the first", func(t *testing.T) {
		rs := receiptOf(flaky, retryID, 2)
		accept := waitSpan(traceRetry, "hookline-ingest", "accept event")
		first := deliveryChain(traceRetry, accept, retried.ID)
		if got := sentParent(rs[0], traceRetry); got != first.spanID {
			t.Fatalf("first attempt's traceparent names span %s, want %s", got, first.spanID)
		}
		deliver1 := waitSpan(traceRetry, "hookline-dispatcher", "deliver")
		if deliver1.attrs["hookline.outcome"] != "retry" || deliver1.statusCode != tracepb.Status_STATUS_CODE_ERROR {
			t.Fatalf("first attempt span: attributes %v, status %v", deliver1.attrs, deliver1.statusCode)
		}
		// The second attempt's trace: the scheduler's republish span (a
		// root, linked to the first attempt), the attempt, its request.
		parts := strings.Split(rs[1].header.Get("traceparent"), "-")
		if len(parts) != 4 || parts[1] == traceRetry {
			t.Fatalf("retry traceparent %q: want a new trace", rs[1].header.Get("traceparent"))
		}
		trace2 := parts[1]
		repub := waitSpan(trace2, "hookline-dispatcher", "republish retry")
		if repub.parent != "" || len(repub.links) != 1 || repub.links[0] != traceRetry+"/"+deliver1.spanID {
			t.Fatalf("republish span: parent %q, links %v; want a root linked to %s/%s", repub.parent, repub.links, traceRetry, deliver1.spanID)
		}
		deliver2 := waitSpan(trace2, "hookline-dispatcher", "deliver")
		childOf(deliver2, repub)
		if deliver2.attrs["hookline.attempt"] != "2" || deliver2.attrs["hookline.outcome"] != "succeeded" {
			t.Fatalf("second attempt span attributes %v", deliver2.attrs)
		}
		out2 := waitSpan(trace2, "hookline-dispatcher", "POST")
		childOf(out2, deliver2)
		if parts[2] != out2.spanID {
			t.Fatalf("retry's traceparent names span %s, want %s", parts[2], out2.spanID)
		}
		t.Logf("trace of the retry:\n%s", col.dump(trace2))
	})

	t.Run("metrics count the workload", func(t *testing.T) {
		type want struct {
			svc, name string
			labels    []string
			value     float64
		}
		for _, w := range []want{
			{"hookline-ingest", "hookline_events_accepted_total", []string{`source="http"`}, 2},
			{"hookline-ingest", "hookline_events_accepted_total", []string{`source="nats"`}, 1},
			{"hookline-ingest", "hookline_ready", nil, 1},
			{"hookline-fanout", "hookline_deliveries_created_total", nil, 3},
			{"hookline-dispatcher", "hookline_delivery_attempts_total", []string{`outcome="succeeded"`}, 3},
			{"hookline-dispatcher", "hookline_delivery_attempts_total", []string{`outcome="retry"`}, 1},
			{"hookline-dispatcher", "hookline_retries_scheduled_total", nil, 1},
			{"hookline-dispatcher", "hookline_delivery_latency_seconds_count", nil, 3},
			{"hookline-dispatcher", "hookline_delivery_attempt_duration_seconds_count", []string{`outcome="succeeded"`}, 3},
		} {
			eventually(t, 15*time.Second, w.svc+" "+w.name+fmt.Sprint(w.labels), func() error {
				if got := scrape(t, ops[w.svc], w.name, w.labels...); got != w.value {
					return fmt.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
				}
				return nil
			})
		}
		// Backlog gauges are sampled every 10 s from start: present by now.
		eventually(t, 15*time.Second, "consumer backlog gauges", func() error {
			for svc, ref := range map[string]string{
				"hookline-ingest":     `consumer="ingest"`,
				"hookline-fanout":     `consumer="fanout"`,
				"hookline-dispatcher": `consumer="attempt-log"`,
			} {
				if got := scrape(t, ops[svc], "hookline_consumer_pending_messages", ref); got < 0 {
					return fmt.Errorf("%s has no backlog gauge for %s", svc, ref)
				}
			}
			return nil
		})
	})

	// Log lines written inside a span carry its trace id.
	t.Run("logs join traces", func(t *testing.T) {
		for _, pr := range p.procs {
			if pr.name != "hookline-dispatcher" {
				continue
			}
			eventually(t, 5*time.Second, "a dispatcher log line with the trace id", func() error {
				if !bytes.Contains([]byte(pr.log.String()), []byte(`"trace_id":"`+traceHTTP+`"`)) {
					return fmt.Errorf("no line with trace_id %s", traceHTTP)
				}
				return nil
			})
		}
	})
}
