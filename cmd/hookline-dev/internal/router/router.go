// Package router serves the whole /v1 API on one address, as an ingress does
// in production: dead-letter and replay routes go to the deadletter service,
// everything else to ingest (CONTRACT 1).
package router

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"

	"github.com/hookline/hookline/pkg/httpapi"
)

// New returns a handler that proxies to ingest and deadletter.
func New(ingest, deadletter *url.URL) http.Handler {
	toIngest := httputil.NewSingleHostReverseProxy(ingest)
	toDead := httputil.NewSingleHostReverseProxy(deadletter)
	// While a service is still starting (or stopping) the proxy cannot reach
	// it: answer as the service itself would when unavailable.
	unavailable := func(w http.ResponseWriter, _ *http.Request, _ error) {
		httpapi.WriteProblem(w, httpapi.Unavailable("the service behind this route is not reachable yet; retry shortly", 1))
	}
	toIngest.ErrorHandler = unavailable
	toDead.ErrorHandler = unavailable
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if IsDeadletterPath(r.URL.Path) {
			toDead.ServeHTTP(w, r)
			return
		}
		toIngest.ServeHTTP(w, r)
	})
}

// IsDeadletterPath reports whether path belongs to the deadletter service:
// /v1/tenants/{tenant}/dead-letters… and /v1/tenants/{tenant}/replays….
func IsDeadletterPath(path string) bool {
	rest, ok := strings.CutPrefix(path, "/v1/tenants/")
	if !ok {
		return false
	}
	_, rest, ok = strings.Cut(rest, "/")
	if !ok {
		return false
	}
	section, _, _ := strings.Cut(rest, "/")
	return section == "dead-letters" || section == "replays"
}
