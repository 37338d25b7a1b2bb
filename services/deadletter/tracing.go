package deadletter

import (
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"github.com/hookline/hookline/pkg/telemetry"
)

// traced starts each request's server span, continuing the caller's W3C
// traceparent, and names it after the route mux matches: "POST
// /v1/tenants/{tenant}/dead-letters/{id}/replay", or only the method when
// no route does. The span records no URL, path or query: they are unbounded
// and may carry ids a span name must not.
func traced(tracer trace.Tracer, mux *http.ServeMux, next http.Handler) http.Handler {
	return telemetry.ServerSpans(tracer, func(r *http.Request) string {
		_, pattern := mux.Handler(r)
		if pattern == "" || pattern == "/" {
			return ""
		}
		m, route, ok := strings.Cut(pattern, " ")
		if !ok {
			route = m // a pattern without a method (our 405 answers)
		}
		return route
	}, next)
}
