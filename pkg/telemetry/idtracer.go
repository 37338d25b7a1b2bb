package telemetry

import (
	"context"
	"encoding/binary"
	"math/rand/v2"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// IDOnlyTracerProvider returns a tracer provider for a process that exports
// no spans: its spans record nothing (no attributes, events or timings are
// kept, and statement tracing skips them) but still get trace and span ids,
// following the parent's trace id and flags as the SDK's default sampler
// would, so trace context propagates across NATS and to endpoints and log
// lines carry trace ids. It costs a fraction of an SDK span.
func IDOnlyTracerProvider() trace.TracerProvider { return idProvider{} }

type idProvider struct{ embedded.TracerProvider }

func (idProvider) Tracer(string, ...trace.TracerOption) trace.Tracer { return idTracer{} }

type idTracer struct{ embedded.Tracer }

// Start returns ctx carrying a new, non-recording span: a child of ctx's
// span context (same trace id, flags and state) or, without a valid parent
// or with [trace.WithNewRoot], the root of a new sampled trace.
func (idTracer) Start(ctx context.Context, _ string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	parent := trace.SpanContextFromContext(ctx)
	newRoot := false
	if len(opts) > 0 {
		c := trace.NewSpanStartConfig(opts...)
		newRoot = c.NewRoot()
	}
	cfg := trace.SpanContextConfig{SpanID: newSpanID(), TraceFlags: trace.FlagsSampled}
	if parent.IsValid() && !newRoot {
		cfg.TraceID, cfg.TraceFlags, cfg.TraceState = parent.TraceID(), parent.TraceFlags(), parent.TraceState()
	} else {
		cfg.TraceID = newTraceID()
	}
	ctx = trace.ContextWithSpanContext(ctx, trace.NewSpanContext(cfg))
	return ctx, trace.SpanFromContext(ctx)
}

func newTraceID() trace.TraceID {
	var id trace.TraceID
	for id == (trace.TraceID{}) {
		binary.NativeEndian.PutUint64(id[:8], rand.Uint64()) //nolint:gosec // ids, not secrets
		binary.NativeEndian.PutUint64(id[8:], rand.Uint64()) //nolint:gosec // ids, not secrets
	}
	return id
}

func newSpanID() trace.SpanID {
	var id trace.SpanID
	for id == (trace.SpanID{}) {
		binary.NativeEndian.PutUint64(id[:], rand.Uint64()) //nolint:gosec // ids, not secrets
	}
	return id
}
