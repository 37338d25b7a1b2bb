package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Traceparent returns the W3C traceparent of ctx's span, or "" when ctx has
// no valid span context. Work parked for later (a retry hours away) stores it
// so the later work can link back to the trace it came from.
func Traceparent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// SpanContext parses a W3C traceparent; the result is invalid when
// traceparent is empty or malformed.
func SpanContext(traceparent string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": traceparent})
	return trace.SpanContextFromContext(ctx)
}

// LinkTo returns span-start options that link a new span to the span whose
// traceparent is given: nothing when it is empty or malformed.
func LinkTo(traceparent string) []trace.SpanStartOption {
	sc := SpanContext(traceparent)
	if !sc.IsValid() {
		return nil
	}
	return []trace.SpanStartOption{trace.WithLinks(trace.Link{SpanContext: sc})}
}
