package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestIDOnlyTracer(t *testing.T) {
	tr := IDOnlyTracerProvider().Tracer("test")

	// A root: a new sampled trace, not recording.
	ctx, root := tr.Start(t.Context(), "root", trace.WithAttributes())
	rsc := root.SpanContext()
	if !rsc.IsValid() || !rsc.IsSampled() || root.IsRecording() {
		t.Fatalf("root span context %v, recording %v", rsc, root.IsRecording())
	}
	// A child keeps the trace id and gets a new span id.
	_, child := tr.Start(ctx, "child")
	if csc := child.SpanContext(); csc.TraceID() != rsc.TraceID() || csc.SpanID() == rsc.SpanID() || !csc.IsValid() {
		t.Fatalf("child %v of root %v", csc, rsc)
	}
	// WithNewRoot starts a new trace.
	_, other := tr.Start(ctx, "new root", trace.WithNewRoot())
	if other.SpanContext().TraceID() == rsc.TraceID() {
		t.Fatal("WithNewRoot kept the parent's trace id")
	}
	// An unsampled remote parent stays unsampled, as the SDK's default
	// sampler would keep it.
	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: rsc.TraceID(), SpanID: rsc.SpanID(), Remote: true})
	_, s := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), remote), "child of unsampled")
	if s.SpanContext().IsSampled() || s.SpanContext().TraceID() != rsc.TraceID() {
		t.Fatalf("child of an unsampled parent: %v", s.SpanContext())
	}
	// The traceparent propagates.
	if tp := Traceparent(ctx); tp != "00-"+rsc.TraceID().String()+"-"+rsc.SpanID().String()+"-01" {
		t.Fatalf("traceparent %q", tp)
	}
}

func BenchmarkIDOnlySpan(b *testing.B) {
	tr := IDOnlyTracerProvider().Tracer("bench")
	ctx, _ := tr.Start(context.Background(), "root")
	b.ReportAllocs()
	for b.Loop() {
		_, s := tr.Start(ctx, "child")
		s.End()
	}
}
