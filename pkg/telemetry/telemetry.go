// Package telemetry sets up OpenTelemetry tracing for a Hookline service from
// the standard OTEL_* environment variables, carries W3C trace context across
// NATS in message headers, and adds trace ids to log lines.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"

	"github.com/hookline/hookline/pkg/version"
)

// Start installs the global tracer provider and the W3C trace-context
// propagator (never baggage: it must not leak to endpoints) and returns a
// function that flushes and stops them.
//
// Spans are exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (or OTEL_TRACES_EXPORTER=otlp),
// with the protocol of OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: "grpc" or
// "http/protobuf" (the default). Without an exporter, spans are not recorded
// ([IDOnlyTracerProvider]) but still get ids, so trace context propagates and
// log lines carry trace ids. With one, the sampler follows
// OTEL_TRACES_SAMPLER; service.name defaults to serviceName unless
// OTEL_SERVICE_NAME is set.
func Start(ctx context.Context, serviceName string) (func(context.Context) error, error) {
	return StartWith(ctx, serviceName, os.Getenv)
}

// StartWith is [Start] with the environment read through getenv.
func StartWith(ctx context.Context, serviceName string, getenv func(string) string) (func(context.Context) error, error) {
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(serviceName),
		semconv.ServiceVersion(version.Version),
	))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, env); err == nil {
			res = merged
		}
	}
	exp, err := exporter(ctx, getenv)
	if err != nil {
		return nil, err
	}
	otel.SetTextMapPropagator(propagation.TraceContext{})
	if exp == nil {
		// Nothing would read the spans: give them ids only, which is all
		// propagation and log correlation need, and skip recording them.
		otel.SetTracerProvider(IDOnlyTracerProvider())
		return func(context.Context) error { return nil }, nil
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithBatcher(exp))
	otel.SetTracerProvider(tp)
	return func(ctx context.Context) error {
		return errors.Join(tp.ForceFlush(ctx), tp.Shutdown(ctx))
	}, nil
}

func exporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	kind := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	endpointSet := getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	switch {
	case kind == "none":
		return nil, nil
	case kind == "" && !endpointSet:
		return nil, nil
	case kind != "" && kind != "otlp":
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER: unsupported exporter %q (want otlp or none)", kind)
	}
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch strings.ToLower(strings.TrimSpace(protocol)) {
	case "grpc":
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTLP gRPC trace exporter: %w", err)
		}
		return exp, nil
	case "", "http/protobuf":
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTLP HTTP trace exporter: %w", err)
		}
		return exp, nil
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol %q (want grpc or http/protobuf)", protocol)
	}
}

// HeaderCarrier adapts nats.Header to propagation.TextMapCarrier without
// canonicalising keys: "traceparent" stays lower-case, as other NATS clients
// expect.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set replaces key's values with value.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

// Inject writes ctx's trace context into h.
func Inject(ctx context.Context, h nats.Header) {
	otel.GetTextMapPropagator().Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx carrying the trace context found in h.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, HeaderCarrier(h))
}
