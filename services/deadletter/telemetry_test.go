package deadletter

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/telemetry"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// publishTracedDead publishes dl with traceparent in its headers.
func publishTracedDead(t *testing.T, js jetstream.JetStream, dl *hooklinev1.DeadLetter, traceparent string) {
	t.Helper()
	data, err := proto.Marshal(dl)
	if err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: bus.DeadSubject(dl.Delivery.TenantId, dl.Delivery.EndpointId), Data: data, Header: nats.Header{}}
	m.Header["traceparent"] = []string{traceparent}
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
}

func spansNamed(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func attr(s sdktrace.ReadOnlySpan, key string) attribute.Value {
	for _, a := range s.Attributes() {
		if string(a.Key) == key {
			return a.Value
		}
	}
	return attribute.Value{}
}

// TestTelemetry follows a dead letter from its store span to the trace of
// its replay, and checks what the counters count.
func TestTelemetry(t *testing.T) {
	t.Parallel()
	otel.SetTextMapPropagator(propagation.TraceContext{})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	b := setup(t)
	b.svc.tracer = tp.Tracer("test")
	srv := httptest.NewServer(b.svc.handler(adminToken)) // with the recording tracer
	t.Cleanup(srv.Close)
	b.srv = srv
	b.startConsumer(t)
	deliveries := b.deliveries(t)
	b.insertEvent(t, "acme", "evt_1", "order.created", `{"n":1}`, "")

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	deadAt := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	dl := &hooklinev1.DeadLetter{
		Delivery: &hooklinev1.Delivery{Id: "dlv_1", TenantId: "acme", EventId: "evt_1", EndpointId: "ep_1", EventType: "order.created", Attempts: 1},
		Reason:   "non_retryable_status", Attempts: 1, LastStatusCode: 400, LastError: "status 400", DeadAt: timestamppb.New(deadAt),
	}
	publishTracedDead(t, b.js, dl, "00-"+traceID+"-"+parentID+"-01")
	publishTracedDead(t, b.js, dl, "00-"+traceID+"-"+parentID+"-01") // a repeat: not a second dead letter
	waitFor(t, "both messages handled", func() bool { return len(spansNamed(rec, "store dead letter")) == 2 })

	created := b.svc.metrics.DeadLettersCreated
	if got := testutil.ToFloat64(created.WithLabelValues("non_retryable_status")); got != 1 {
		t.Fatalf("dead_letters_created_total{non_retryable_status} = %v, want 1 (the repeat is not counted)", got)
	}
	var storedSpan sdktrace.ReadOnlySpan
	for _, s := range spansNamed(rec, "store dead letter") {
		if s.SpanContext().TraceID().String() != traceID || s.Parent().SpanID().String() != parentID || s.SpanKind() != trace.SpanKindConsumer {
			t.Fatalf("store span: trace %s parent %s kind %v; want a consumer child of %s/%s",
				s.SpanContext().TraceID(), s.Parent().SpanID(), s.SpanKind(), traceID, parentID)
		}
		if attr(s, "hookline.event_id").AsString() != "evt_1" || attr(s, "hookline.delivery_id").AsString() != "dlv_1" {
			t.Fatalf("store span attributes %v", s.Attributes())
		}
		if attr(s, "hookline.stored").AsBool() {
			storedSpan = s
		}
	}
	if storedSpan == nil {
		t.Fatal("no store span recorded the dead letter as stored")
	}
	var dlID, stored string
	if err := b.pool.QueryRow(t.Context(), `SELECT id, traceparent FROM dead_letters WHERE delivery_id = 'dlv_1'`).Scan(&dlID, &stored); err != nil {
		t.Fatal(err)
	}
	if sc := telemetry.SpanContext(stored); sc.TraceID().String() != traceID || sc.SpanID() != storedSpan.SpanContext().SpanID() {
		t.Fatalf("stored traceparent %q, want the store span %s", stored, storedSpan.SpanContext().SpanID())
	}

	// The replay: a new trace linked to the store span, carried by the delivery.
	status, body := b.do(t, "POST", "/v1/tenants/acme/dead-letters/"+dlID+"/replay", adminToken, nil)
	if status != 202 {
		t.Fatalf("replay = %d %s", status, body)
	}
	batch, err := deliveries.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msg jetstream.Msg
	for m := range batch.Messages() {
		msg = m
	}
	if msg == nil {
		t.Fatal("no replayed delivery")
	}
	sent := trace.SpanContextFromContext(telemetry.Extract(t.Context(), msg.Headers()))
	waitFor(t, "replay span", func() bool { return len(spansNamed(rec, "replay dead letter")) == 1 })
	rs := spansNamed(rec, "replay dead letter")[0]
	if rs.SpanContext().TraceID() == storedSpan.SpanContext().TraceID() || rs.Parent().IsValid() {
		t.Fatalf("replay span: trace %s, parent %v; want the root of a new trace", rs.SpanContext().TraceID(), rs.Parent())
	}
	if links := rs.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != storedSpan.SpanContext().SpanID() ||
		links[0].SpanContext.TraceID().String() != traceID {
		t.Fatalf("replay span links %v, want the store span", links)
	}
	if sent.SpanID() != rs.SpanContext().SpanID() || sent.TraceID() != rs.SpanContext().TraceID() {
		t.Fatalf("the delivery carries %v, want the replay span %v", sent, rs.SpanContext())
	}
	var replayID string
	if err := json.Unmarshal(body, &struct {
		ReplayID *string `json:"replay_id"`
	}{&replayID}); err != nil {
		t.Fatal(err)
	}
	if attr(rs, "hookline.replay_id").AsString() != replayID || attr(rs, "hookline.dead_letter_id").AsString() != dlID {
		t.Fatalf("replay span attributes %v", rs.Attributes())
	}
	if got := testutil.ToFloat64(b.svc.metrics.ReplayItems.WithLabelValues("sent")); got != 1 {
		t.Fatalf("replay_items_total{sent} = %v, want 1", got)
	}

	// The HTTP server span is named after the route, without the path.
	var server sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindServer {
			server = s
		}
	}
	if server == nil || server.Name() != "POST /v1/tenants/{tenant}/dead-letters/{id}/replay" ||
		attr(server, "http.response.status_code").AsInt64() != 202 || attr(server, "http.route").AsString() != "/v1/tenants/{tenant}/dead-letters/{id}/replay" {
		t.Fatalf("server span %v", server)
	}
	for _, a := range server.Attributes() {
		if strings.HasPrefix(string(a.Key), "url.") {
			t.Fatalf("server span records %s", a.Key)
		}
	}

	// The replayed delivery dies again: counted once, repeat or not.
	var deliveryID string
	if err := b.pool.QueryRow(t.Context(), `SELECT delivery_id FROM replay_items WHERE replay_id = $1`, replayID).Scan(&deliveryID); err != nil {
		t.Fatal(err)
	}
	again := proto.Clone(dl).(*hooklinev1.DeadLetter)
	again.Delivery.Id, again.Delivery.ReplayId, again.Delivery.DeadLetterId = deliveryID, replayID, dlID
	again.Reason, again.DeadAt = "exhausted", timestamppb.New(deadAt.Add(time.Hour))
	publishTracedDead(t, b.js, again, telemetry.Traceparent(trace.ContextWithSpanContext(t.Context(), rs.SpanContext())))
	publishTracedDead(t, b.js, again, telemetry.Traceparent(trace.ContextWithSpanContext(t.Context(), rs.SpanContext())))
	waitFor(t, "re-dead handled", func() bool { return len(spansNamed(rec, "store dead letter")) == 4 })
	if got := testutil.ToFloat64(created.WithLabelValues("exhausted")); got != 1 {
		t.Fatalf("dead_letters_created_total{exhausted} = %v, want 1", got)
	}
	if n := b.count(t, `SELECT count(*) FROM dead_letters WHERE id = $1 AND traceparent LIKE $2`, dlID, "00-"+rs.SpanContext().TraceID().String()+"-%"); n != 1 {
		t.Fatal("a dead letter dead again does not keep the latest trace")
	}

	// Pending: neither resolved nor discarded.
	b.insertDL(t, dlRow{id: "dl_resolved", event: "evt_x", endpoint: "ep_1", typ: "t", reason: "exhausted", deadAt: deadAt, resolved: true})
	b.insertDL(t, dlRow{id: "dl_discarded", event: "evt_y", endpoint: "ep_1", typ: "t", reason: "exhausted", deadAt: deadAt, discarded: true})
	b.insertDL(t, dlRow{id: "dl_open", event: "evt_z", endpoint: "ep_1", typ: "t", reason: "exhausted", deadAt: deadAt})
	stop := background(t, func(ctx context.Context) { b.svc.samplePending(ctx, time.Hour) })
	waitFor(t, "pending sampled", func() bool { return testutil.ToFloat64(b.svc.metrics.DeadLettersPending) == 2 })
	stop()
}

func TestReasonLabel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"exhausted", "exhausted"},
		{"expired", "expired"},
		{"", "other"},
		{"something_new", "other"},
	} {
		if got := reasonLabel(tc.in); got != tc.want {
			t.Errorf("reasonLabel(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
