// Package deadletter is the dead-letter service (CONTRACT 2.4): it stores the
// dead letters the dispatcher and fan-out publish on HOOKLINE_DEAD, serves the
// /dead-letters and /replays routes, and replays dead letters as new
// deliveries of the same event to the same endpoint.
//
// A replay is a row in replays with one replay_items row per matched dead
// letter. A runner in every replica claims running replays (a session
// advisory lock per replay) and sends their items at the replay's rate. Each
// item is sent in one transaction that locks its dead letter and its item
// row, so a restarted runner, a second replica or two replays over the same
// dead letter never send it twice.
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/metrics"
	"github.com/hookline/hookline/pkg/natsconn"
	"github.com/hookline/hookline/pkg/ops"
	"github.com/hookline/hookline/pkg/store"
)

// Name is the service's name, used for NATS and PostgreSQL client names.
const Name = "hookline-deadletter"

// consumerAckWait bounds how long a batch of dead letters may take to store.
const consumerAckWait = 30 * time.Second

// Run runs the service until ctx ends, then shuts down gracefully and
// returns nil. A non-nil error means it could not start or crashed.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	m := metrics.New(Name)
	health := ops.NewHealth()
	health.Set("consuming", false)
	m.SetReadiness(func() bool { return len(health.Failing()) == 0 })

	// The ops server outlives ctx a little so /readyz can report "stopping".
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	opsDone := make(chan error, 1)
	go func() { opsDone <- ops.Serve(opsCtx, cfg.OpsAddr, ops.Handler(health, m.Handler()), log) }()
	defer func() {
		stopOps()
		if err := <-opsDone; err != nil {
			log.Warn("ops server", "err", err)
		}
	}()

	pool, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: cfg.DatabaseMaxConns, Name: Name}, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("open database: %w", err)
	}
	defer pool.Close()

	nc, js, err := natsconn.Connect(ctx, cfg.NATSURL, Name, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer nc.Close()
	health.Check("nats", nc.IsConnected)

	if err := bus.EnsureStreams(ctx, js, bus.Options{DedupeWindow: cfg.DedupeWindow, Replicas: cfg.StreamReplicas}); err != nil {
		return err
	}
	cons, err := bus.EnsureConsumer(ctx, js, bus.StreamDead, bus.Consumer(bus.ConsumerDeadletter, consumerAckWait, 1000))
	if err != nil {
		return err
	}

	svc := newService(pool, js, log)
	svc.metrics = m

	var ln net.Listener
	if cfg.HTTPAddr != "" {
		ln, err = net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
		}
	}

	// workCtx ends with ctx, or earlier when a part of the service fails.
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	consumerDone := make(chan error, 1)
	go func() { consumerDone <- svc.consume(workCtx, cons, health, cfg.ShutdownTimeout) }()
	runnerDone := make(chan struct{})
	go func() {
		defer close(runnerDone)
		svc.runner.run(workCtx)
	}()
	samplersDone := make(chan struct{})
	go func() {
		defer close(samplersDone)
		var wg sync.WaitGroup
		wg.Go(func() {
			m.WatchConsumers(workCtx, js, []metrics.ConsumerRef{{Stream: bus.StreamDead, Consumer: bus.ConsumerDeadletter}}, consumerMetricsInterval, log)
		})
		wg.Go(func() { svc.samplePending(workCtx, pendingInterval) })
		wg.Go(func() { svc.settleReplays(workCtx) })
		wg.Wait()
	}()

	var srv *http.Server
	httpDone := make(chan error, 1)
	if ln != nil {
		srv = &http.Server{
			Handler:           svc.handler(cfg.AdminToken),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       time.Minute,
			WriteTimeout:      time.Minute,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		go func() { httpDone <- srv.Serve(ln) }()
		log.Info("serving the dead-letter API", "addr", ln.Addr().String())
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-consumerDone:
		consumerDone <- err
		if err != nil {
			runErr = err
		}
	case err := <-httpDone:
		runErr = fmt.Errorf("serve HTTP: %w", err)
	}

	log.Info("shutting down")
	health.Set("stopping", false)
	stopWork()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if srv != nil {
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("HTTP shutdown", "err", err)
		}
	}
	if err := <-consumerDone; err != nil && runErr == nil {
		runErr = err
	}
	select {
	case <-runnerDone:
	case <-sctx.Done():
		log.Warn("replay runner did not stop in time")
	}
	<-samplersDone
	if err := nc.Drain(); err != nil {
		log.Warn("drain NATS connection", "err", err)
	}
	return runErr
}

const (
	// consumerMetricsInterval is how often HOOKLINE_DEAD's backlog is sampled.
	consumerMetricsInterval = 10 * time.Second
	// pendingInterval is how often the pending dead letters are counted.
	pendingInterval = 30 * time.Second
)

// samplePending sets hookline_dead_letters_pending every interval, or less
// often when counting is slow (metrics.Paced), until ctx ends. The count is
// cluster-wide: every replica reports the same number.
func (s *service) samplePending(ctx context.Context, interval time.Duration) {
	metrics.Paced(ctx, interval, func(ctx context.Context) {
		if n, err := s.countPending(ctx); err == nil {
			s.metrics.DeadLettersPending.Set(float64(n))
		} else if ctx.Err() == nil {
			s.log.Debug("count pending dead letters", "err", err)
		}
	})
}

// countPending counts the dead letters neither resolved nor discarded.
func (s *service) countPending(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL AND discarded_at IS NULL`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count pending dead letters: %w", err)
	}
	return n, nil
}
