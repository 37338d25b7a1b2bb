// Package ingest is Hookline's front door: it serves the public API (except
// dead letters and replays), accepts events over HTTP and NATS, makes them
// durable in PostgreSQL and publishes them to HOOKLINE_EVENTS, and keeps the
// endpoint KV bucket in step with the database.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/hookline/hookline/pkg/auth"
	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/metrics"
	"github.com/hookline/hookline/pkg/natsconn"
	"github.com/hookline/hookline/pkg/ops"
	"github.com/hookline/hookline/pkg/store"
	"github.com/hookline/hookline/pkg/telemetry"
	"github.com/hookline/hookline/services/ingest/internal/controlplane"
	"github.com/hookline/hookline/services/ingest/internal/events"
	"github.com/hookline/hookline/services/ingest/internal/openapi"
	"github.com/hookline/hookline/services/ingest/internal/sources"
)

// ServiceName is the ingest service's name in logs, NATS and PostgreSQL.
const ServiceName = "hookline-ingest"

// Run serves ingest until ctx ends, then shuts down gracefully and returns
// nil. It waits for PostgreSQL and NATS rather than failing when they are not
// up yet. A non-nil error means ingest could not run (a bad listen address,
// a worker crash).
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	if cfg.EncryptionKeys.Enabled() {
		log.Info("endpoint signing secrets are encrypted at rest", "key_id", cfg.EncryptionKeys.PrimaryID())
	} else {
		log.Warn(config.EnvEncryptionKeys + " is not set: endpoint signing secrets are stored in clear")
	}
	m := metrics.New(ServiceName)
	health := ops.NewHealth()
	health.Set("started", false)
	m.SetReadiness(func() bool { return len(health.Failing()) == 0 })
	health.Set("stopping", true) // true means "not stopping"; turned false on shutdown

	// Liveness and readiness answer while we wait for our dependencies.
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	opsDone := make(chan struct{})
	var opsErr error
	go func() {
		defer close(opsDone)
		opsErr = ops.Serve(opsCtx, cfg.OpsAddr, ops.Handler(health, m.Handler()), log)
	}()
	defer func() { stopOps(); <-opsDone }()

	pool, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: cfg.DatabaseMaxConns, Name: ServiceName}, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting
		}
		return err
	}
	defer pool.Close()

	nc, js, err := natsconn.Connect(ctx, cfg.NATSURL, ServiceName, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer nc.Close()
	health.Check("nats_connected", nc.IsConnected)

	opts := bus.Options{DedupeWindow: cfg.DedupeWindow, Replicas: cfg.StreamReplicas}
	if err := bus.EnsureStreams(ctx, js, opts); err != nil {
		return stopped(ctx, err)
	}
	kv, err := bus.EnsureEndpointsBucket(ctx, js, opts)
	if err != nil {
		return stopped(ctx, err)
	}
	if err := endpoints.SyncAll(ctx, pool, kv); err != nil {
		return stopped(ctx, fmt.Errorf("sync endpoints to KV: %w", err))
	}

	ev := events.New(pool, js, cfg, log)
	ev.SetMetrics(m)
	handler, _ := newHandler(cfg, pool, kv, ev, nc, log)

	var ln net.Listener
	if cfg.HTTPAddr != "" {
		ln, err = net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("listen on %s %s: %w", config.EnvHTTPAddr, cfg.HTTPAddr, err)
		}
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	// Workers run on workCtx: it ends with ctx, or when one of them crashes.
	workCtx, cancelWork := context.WithCancelCause(ctx)
	defer cancelWork(nil)
	var wg sync.WaitGroup
	var crashOnce sync.Once
	var crash error
	worker := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(workCtx); err != nil && workCtx.Err() == nil {
				crashOnce.Do(func() { crash = fmt.Errorf("%s: %w", name, err) })
				cancelWork(err)
			}
		})
	}
	worker("intake", func(ctx context.Context) error { return ev.RunIntake(ctx, health) })
	worker("outbox relay", ev.RunRelay)
	worker("endpoint resync", func(ctx context.Context) error { return resyncLoop(ctx, pool, kv, log) })
	worker("consumer metrics", func(ctx context.Context) error {
		m.WatchConsumers(ctx, js, []metrics.ConsumerRef{{Stream: bus.StreamIntake, Consumer: bus.ConsumerIngest}}, metricsInterval, log)
		return nil
	})
	if ln != nil {
		worker("http", func(context.Context) error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve %s: %w", ln.Addr(), err)
			}
			return nil
		})
		log.Info("ingest API listening", "addr", ln.Addr().String())
	}
	health.Set("started", true)

	select {
	case <-workCtx.Done():
	case <-opsDone:
		if opsErr != nil {
			crashOnce.Do(func() { crash = opsErr })
		}
	}

	// Fail readiness first so load balancers stop sending, then stop taking
	// requests and let those in flight finish.
	health.Set("stopping", false)
	log.Info("ingest stopping")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if ln != nil {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			log.Warn("HTTP shutdown incomplete", "err", err)
			_ = srv.Close()
		}
	}
	cancelWork(nil)
	wg.Wait()
	if err := ev.Flush(shutdownCtx); err != nil {
		log.Warn("outbox rows left for the relay", "err", err)
	}
	if err := nc.Drain(); err != nil {
		log.Warn("NATS drain", "err", err)
	}
	if crash != nil {
		return crash
	}
	log.Info("ingest stopped")
	return nil
}

// stopped returns nil when err is only the consequence of ctx ending.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// metricsInterval is how often the intake consumer's backlog is sampled.
const metricsInterval = 10 * time.Second

// resyncInterval is how often ingest re-copies every endpoint to KV, healing
// a change whose sync was lost (a crash between commit and KV put).
const resyncInterval = 5 * time.Minute

func resyncLoop(ctx context.Context, pool *pgxpool.Pool, kv jetstream.KeyValue, log *slog.Logger) error {
	t := time.NewTicker(resyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := endpoints.SyncAll(ctx, pool, kv); err != nil && ctx.Err() == nil {
				log.Warn("endpoint resync", "err", err)
			}
		}
	}
}

// NewHandler returns ingest's public API: the control plane and the events
// routes on one mux, behind authentication and a body size limit. Unknown
// routes and wrong methods answer problem+json. GET /v1/openapi.json needs
// no token.
//
// Verified API keys are cached for [apiKeyCacheTTL]; a revocation through
// this handler drops the cache at once. Run also passes its NATS connection,
// so that a revocation on one replica drops every replica's cache.
func NewHandler(cfg config.Config, pool *pgxpool.Pool, kv jetstream.KeyValue, ev *events.Service, log *slog.Logger) http.Handler {
	h, _ := newHandler(cfg, pool, kv, ev, nil, log)
	return h
}

// apiKeyCacheTTL is how long a verified API key is trusted without a lookup:
// the longest a replica that missed a revocation notice (it was cut off from
// NATS at that moment) still accepts a revoked key.
const apiKeyCacheTTL = time.Second

// newHandler is NewHandler, also returning every pattern it registered.
func newHandler(cfg config.Config, pool *pgxpool.Pool, kv jetstream.KeyValue, ev *events.Service, nc *nats.Conn, log *slog.Logger) (http.Handler, []string) {
	mux := &recordingMux{ServeMux: http.NewServeMux()}
	test := func(ctx context.Context, tenant, endpointID string, data []byte) (string, error) {
		res, err := ev.Accept(ctx, events.Input{
			TenantID:       tenant,
			Type:           "hookline.test",
			Data:           data,
			OnlyEndpointID: endpointID,
		})
		return res.ID, err
	}
	authn := auth.New(cfg.AdminToken, pool).CacheFor(apiKeyCacheTTL)
	var notifier auth.Notifier
	if nc != nil {
		notifier = nc
		if _, err := authn.ForgetOnNotice(nc); err != nil {
			log.Warn("API key revocations on other replicas take effect after the cache's TTL", "err", err, "ttl", apiKeyCacheTTL.String())
		}
	}
	cp := controlplane.New(pool, kv, cfg, test, log)
	cp.OnRevoke(func() {
		if err := authn.Revoked(notifier); err != nil {
			log.Warn("other replicas forget the revoked keys after the cache's TTL", "err", err, "ttl", apiKeyCacheTTL.String())
		}
	})
	cp.Register(mux)
	ev.Register(mux)
	sources.New(pool, cfg, ev, log).Register(mux)
	doc := openapi.JSON()
	mux.Handle("GET "+openapi.Path, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(doc)
	}))
	var h http.Handler = problemRoutes(mux.ServeMux)
	h = publicDocument(authn.Middleware(h), h)
	return traced(limitBody(h, maxRequestBytes(cfg))), mux.patterns
}

// tracerName names the ingest service's spans' instrumentation scope.
const tracerName = "github.com/hookline/hookline/services/ingest"

// traced starts each request's server span, continuing the producer's W3C
// traceparent. problemRoutes names the span after the route pattern once
// the mux knows it. The span records no URL, path or query: they may carry
// tokens (inbound webhook sources) and are unbounded.
func traced(next http.Handler) http.Handler {
	return telemetry.ServerSpans(otel.Tracer(tracerName), nil, next)
}

// nameSpan names r's server span after its route: "POST /v1/tenants/{tenant}/events".
func nameSpan(r *http.Request, pattern string) {
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	method, route, ok := strings.Cut(pattern, " ")
	if !ok {
		method, route = r.Method, pattern
	}
	span.SetName(method + " " + route)
	span.SetAttributes(attribute.String("http.route", route))
}

// recordingMux remembers the patterns registered, so a test can hold the
// OpenAPI document against them.
type recordingMux struct {
	*http.ServeMux
	patterns []string
}

func (m *recordingMux) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, h)
}

// publicDocument lets GET /v1/openapi.json and inbound webhooks (POST
// /v1/in/{source_token}) through without a token; every other request goes
// through authenticated.
func publicDocument(authenticated, open http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == openapi.Path && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			open.ServeHTTP(w, r)
			return
		}
		if strings.HasPrefix(r.URL.Path, sources.IngestPrefix) {
			open.ServeHTTP(w, r) // inbound webhooks authenticate by their source's verifier
			return
		}
		authenticated.ServeHTTP(w, r)
	})
}

// maxRequestBytes bounds any request body: a full batch of events plus JSON
// overhead. Each route applies its own, tighter limit when reading.
func maxRequestBytes(cfg config.Config) int64 {
	return max(cfg.MaxEventBytes, config.DefaultMaxEventBytes) * 64
}

// limitBody answers 413 to bodies over limit before any handler reads them.
func limitBody(next http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			httpapi.WriteProblem(w, httpapi.TooLarge(limit))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// problemRoutes makes the mux's own 404 and 405 answers problem+json.
func problemRoutes(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			nameSpan(r, pattern)
			mux.ServeHTTP(w, r) // sets the path values Handler does not
			return
		}
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			if allow := rec.header.Get("Allow"); allow != "" {
				w.Header().Set("Allow", allow)
			}
			httpapi.WriteProblem(w, httpapi.NewProblem(http.StatusMethodNotAllowed, "method-not-allowed",
				"method "+r.Method+" is not allowed on "+r.URL.Path))
			return
		}
		if rec.status != 0 && rec.status != http.StatusNotFound {
			// A redirect or anything else the mux answers itself.
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.status)
			return
		}
		httpapi.WriteProblem(w, httpapi.NewProblem(http.StatusNotFound, "not-found",
			"no route "+r.Method+" "+r.URL.Path))
	})
}

// statusRecorder captures the status and headers of the mux's built-in
// answers; their bodies (plain text) are discarded.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(b), nil
}
