// Package ops serves a service's operational endpoints: /healthz (the process
// is alive), /readyz (it is connected to what its work needs and consuming)
// and /metrics.
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Health collects readiness conditions. A service is ready when every
// condition it registered is true.
type Health struct {
	mu     sync.Mutex
	checks map[string]func() bool
	flags  map[string]bool
}

// NewHealth returns a Health with no conditions (ready).
func NewHealth() *Health {
	return &Health{checks: map[string]func() bool{}, flags: map[string]bool{}}
}

// Check registers a condition evaluated on every /readyz request.
func (h *Health) Check(name string, ok func() bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = ok
}

// Set sets a flag condition, such as "consuming" or "stopping".
func (h *Health) Set(name string, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.flags[name] = ok
}

// Failing lists the conditions that are false, sorted.
func (h *Health) Failing() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for name, ok := range h.flags {
		if !ok {
			out = append(out, name)
		}
	}
	for name, ok := range h.checks {
		if !ok() {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// Handler serves /healthz, /readyz and /metrics.
func Handler(h *Health, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if failing := h.Failing(); len(failing) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %s\n", strings.Join(failing, ", "))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	if PprofEnabled(os.Getenv) {
		RegisterPprof(mux)
	}
	return mux
}

// EnvPprof switches on the Go profiler under /debug/pprof/ on the ops
// address (never on a public API address) when set to "true".
const EnvPprof = "HOOKLINE_PPROF"

// PprofEnabled reports whether [EnvPprof] is "true" in getenv.
func PprofEnabled(getenv func(string) string) bool {
	return getenv(EnvPprof) == "true"
}

// RegisterPprof adds the net/http/pprof handlers under /debug/pprof/ to mux.
func RegisterPprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// Serve runs the ops server on addr until ctx ends; addr "" disables it.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	if addr == "" {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on ops address %s: %w", addr, err)
	}
	return ServeListener(ctx, ln, h, log)
}

// ServeListener serves h on ln until ctx ends, then shuts down within 5 s.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down %s: %w", ln.Addr(), err)
	}
	return nil
}
