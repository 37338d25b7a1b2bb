package store_test

import (
	"log/slog"
	"testing"

	"github.com/exaring/otelpgx"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/hookline/hookline/pkg/pgtest"
	"github.com/hookline/hookline/pkg/store"
)

func TestStatementsInsideASpanAreTraced(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	pool, err := store.Open(t.Context(), pgtest.NewDatabase(t), store.Options{
		Name:   "test",
		Tracer: otelpgx.NewTracer(otelpgx.WithTracerProvider(tp), otelpgx.WithDisableAcquireTracer()),
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	var n int
	if err := pool.QueryRow(t.Context(), "SELECT 1").Scan(&n); err != nil { // no span: not traced
		t.Fatal(err)
	}
	ctx, parent := tp.Tracer("t").Start(t.Context(), "work")
	if err := pool.QueryRow(ctx, "SELECT $1::int", 2).Scan(&n); err != nil {
		t.Fatal(err)
	}
	parent.End()

	var children int
	for _, s := range rec.Ended() {
		if s.Parent().SpanID() == parent.SpanContext().SpanID() {
			children++
			for _, a := range s.Attributes() {
				if a.Key == "pgx.query.parameters" {
					t.Errorf("statement span records its parameters: %v", a.Value.String())
				}
			}
		}
	}
	if children == 0 {
		t.Fatalf("no statement span under the caller's span; spans: %d", len(rec.Ended()))
	}
	for _, s := range rec.Ended() {
		if !s.Parent().IsValid() && s.Name() != "work" && s.Name() != "connect" {
			t.Errorf("span %q without a parent: a statement outside a span is traced", s.Name())
		}
	}
}
