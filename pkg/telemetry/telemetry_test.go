package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestHeaderRoundTripKeepsLowerCase(t *testing.T) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder()))
	ctx, span := tp.Tracer("t").Start(context.Background(), "publish")
	defer span.End()

	h := nats.Header{}
	Inject(ctx, h)
	if _, ok := h["traceparent"]; !ok {
		t.Fatalf("traceparent not set under its lower-case key: %v", h)
	}
	got := trace.SpanContextFromContext(Extract(context.Background(), h))
	if got.TraceID() != span.SpanContext().TraceID() || !got.IsRemote() {
		t.Fatalf("extracted %v, want trace %s", got, span.SpanContext().TraceID())
	}
	if Extract(context.Background(), nil) == nil {
		t.Fatal("Extract(nil headers) must return the context")
	}
}

func TestLogHandlerAddsTraceIDs(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "work")
	defer span.End()
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "x")
	log.InfoContext(ctx, "inside")
	log.Info("outside")
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	var in, out map[string]any
	_ = json.Unmarshal(lines[0], &in)
	_ = json.Unmarshal(lines[1], &out)
	if in["trace_id"] != span.SpanContext().TraceID().String() || in["span_id"] == nil || in["service"] != "x" {
		t.Fatalf("line inside a span: %s", lines[0])
	}
	if _, ok := out["trace_id"]; ok {
		t.Fatalf("line outside a span has a trace id: %s", lines[1])
	}
}

func TestExporterChoice(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		want    bool
		wantErr bool
	}{
		{"nothing set", nil, false, false},
		{"none", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, false, false},
		{"endpoint set", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true, false},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true, false},
		{"bad protocol", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, false, true},
		{"bad exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			exp, err := exporter(context.Background(), func(k string) string { return tc.env[k] })
			if (err != nil) != tc.wantErr || (exp != nil) != tc.want {
				t.Fatalf("exporter = %v, %v", exp, err)
			}
			if exp != nil {
				_ = exp.Shutdown(context.Background())
			}
		})
	}
}

func TestTraceparentRoundTrip(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "work")
	defer span.End()
	tp1 := Traceparent(ctx)
	if tp1 == "" {
		t.Fatal("no traceparent for a span")
	}
	if got := SpanContext(tp1); got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("SpanContext(%q) = %v", tp1, got)
	}
	if Traceparent(context.Background()) != "" || SpanContext("garbage").IsValid() || LinkTo("") != nil || len(LinkTo(tp1)) != 1 {
		t.Fatal("empty or malformed trace context must yield nothing")
	}
}
