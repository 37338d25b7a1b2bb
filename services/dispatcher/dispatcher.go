// Package dispatcher is the hookline-dispatcher service: it consumes
// deliveries from HOOKLINE_DELIVERIES, POSTs each, signed, to its endpoint
// (CONTRACT 3), reports every attempt to HOOKLINE_ATTEMPTS, parks retries in
// PostgreSQL and dead-letters what cannot be delivered. Every replica also runs
// the retry scheduler and the attempt-log writer.
package dispatcher

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/keylane"
	"github.com/hookline/hookline/pkg/metrics"
	"github.com/hookline/hookline/pkg/natsconn"
	"github.com/hookline/hookline/pkg/ops"
	"github.com/hookline/hookline/pkg/ssrf"
	"github.com/hookline/hookline/pkg/store"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/dispatcher/internal/attemptlog"
	"github.com/hookline/hookline/services/dispatcher/internal/breaker"
	"github.com/hookline/hookline/services/dispatcher/internal/delivery"
	"github.com/hookline/hookline/services/dispatcher/internal/dispatch"
	"github.com/hookline/hookline/services/dispatcher/internal/outcomes"
	"github.com/hookline/hookline/services/dispatcher/internal/parking"
	"github.com/hookline/hookline/services/dispatcher/internal/ratelimit"
	"github.com/hookline/hookline/services/dispatcher/internal/retry"
)

// Consumer settings.
const (
	// AckWait of the dispatcher consumer. A message being worked on (waiting
	// for a slot or its key's turn, or in an HTTP attempt of up to
	// [delivery.MaxTimeout]) is kept alive with InProgress every
	// [dispatch.InProgressEvery], so AckWait bounds only how long the
	// deliveries of a killed replica wait before another replica takes them.
	AckWait = 30 * time.Second
	// probeTimeout bounds a circuit breaker probe: the longest attempt plus
	// the time to record it.
	probeTimeout = delivery.MaxTimeout + 15*time.Second
	// PerEndpointInFlight caps one endpoint's attempts (HTTP requests) in
	// flight per replica: a quarter of the default concurrency, so one slow
	// endpoint cannot take every worker, while one busy endpoint still gets
	// thousands of deliveries a second at a few milliseconds each.
	PerEndpointInFlight = 64
	// attemptLogAckWait is a third of AckWait: the outcomes a killed
	// replica's attempt-log writer had taken are written by another
	// before that replica's deliveries are redelivered, so a redelivered
	// message of several deliveries finds the ones it settled in the
	// attempt log and skips them. A slow write keeps its outcomes alive
	// (attemptlog.Writer.KeepAlive).
	attemptLogAckWait = AckWait / 3
	attemptLogPending = 5000
	dialTimeout       = 10 * time.Second
	// metricsInterval is how often backlogs, open circuits and blocked keys
	// are sampled.
	metricsInterval = 10 * time.Second
)

// CheckAckWait refuses an ack wait that the keep-alive could miss: a message
// in flight would be redelivered to another replica (svix #2181). Three
// heartbeats per ack wait leave room for a late one.
func CheckAckWait(ackWait, heartbeat time.Duration) error {
	if ackWait < 3*heartbeat {
		return fmt.Errorf("dispatcher ack wait %s must be at least three in-progress heartbeats (%s each)", ackWait, heartbeat)
	}
	return nil
}

// Run runs the service until ctx ends, then shuts down gracefully and returns
// nil. It returns an error only when it cannot start.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	if err := CheckAckWait(AckWait, dispatch.InProgressEvery); err != nil {
		return err
	}
	m := metrics.New("hookline-dispatcher")
	health := ops.NewHealth()
	health.Set("consuming", false)
	health.Set("stopping", true)
	m.SetReadiness(func() bool { return len(health.Failing()) == 0 })
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	defer stopOps()
	opsDone := make(chan error, 1)
	go func() { opsDone <- ops.Serve(opsCtx, cfg.OpsAddr, ops.Handler(health, m.Handler()), log) }()
	defer func() {
		stopOps()
		if err := <-opsDone; err != nil {
			log.Warn("ops server", "err", err)
		}
	}()

	pool, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: cfg.DatabaseMaxConns, Name: "hookline-dispatcher"}, log)
	if err != nil {
		return startErr(ctx, err)
	}
	defer pool.Close()
	nc, js, err := natsconn.Connect(ctx, cfg.NATSURL, "hookline-dispatcher", log)
	if err != nil {
		return startErr(ctx, err)
	}
	defer nc.Close()
	health.Check("nats", nc.IsConnected)

	opts := bus.Options{DedupeWindow: cfg.DedupeWindow, Replicas: cfg.StreamReplicas}
	if err := bus.EnsureStreams(ctx, js, opts); err != nil {
		return startErr(ctx, err)
	}
	kv, err := bus.EnsureEndpointsBucket(ctx, js, opts)
	if err != nil {
		return startErr(ctx, err)
	}
	cache := endpoints.NewCache(kv, log, endpoints.WithSecrets(cfg.EncryptionKeys))
	health.Check("endpoints_synced", cache.Synced)
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	var bg sync.WaitGroup
	bg.Go(func() { cache.Keep(bgCtx) })
	if err := cache.WaitSynced(ctx); err != nil {
		stopBackground()
		bg.Wait()
		return startErr(ctx, err)
	}
	concurrency := max(cfg.DispatchConcurrency, 1)
	cons, err := bus.EnsureConsumer(ctx, js, bus.StreamDeliveries, bus.Consumer(bus.ConsumerDispatcher, AckWait, 2*concurrency))
	if err != nil {
		stopBackground()
		bg.Wait()
		return startErr(ctx, err)
	}
	logCons, err := bus.EnsureConsumer(ctx, js, bus.StreamAttempts, bus.Consumer(bus.ConsumerAttemptLog, attemptLogAckWait, attemptLogPending))
	if err != nil {
		stopBackground()
		bg.Wait()
		return startErr(ctx, err)
	}

	owner := replicaID()
	head, err := keylane.Lookup(ctx, js, bus.StreamDeliveries)
	if err == nil {
		err = checkHeadLookup(ctx, head)
	}
	if err != nil {
		stopBackground()
		bg.Wait()
		return startErr(ctx, err)
	}
	members, err := ratelimit.EnsureMembers(ctx, js, owner, log)
	if err != nil {
		stopBackground()
		bg.Wait()
		return startErr(ctx, err)
	}
	circuits := breaker.New(pool, owner, breaker.Config{ProbeTimeout: probeTimeout}, log)
	if err := circuits.Load(ctx); err != nil {
		log.Warn("read circuit breaker state; continuing, it is read again every 500 ms", "err", err)
	}

	bg.Go(func() {
		w := attemptlog.New(pool, logCons, log)
		w.Metrics = m
		w.Retention, w.AutoDisableAfter = cfg.AttemptRetention, cfg.AutoDisableAfter
		w.SyncEndpoint = func(ctx context.Context, id string) error { return endpoints.Sync(ctx, pool, kv, id) }
		w.Run(bgCtx)
	})
	bg.Go(func() {
		m.WatchConsumers(bgCtx, js, []metrics.ConsumerRef{
			{Stream: bus.StreamDeliveries, Consumer: bus.ConsumerDispatcher},
			{Stream: bus.StreamAttempts, Consumer: bus.ConsumerAttemptLog},
		}, metricsInterval, log)
	})
	bg.Go(func() { sampleGauges(bgCtx, pool, circuits, m, log) })
	bg.Go(func() { members.Run(bgCtx) })
	bg.Go(func() { circuits.Run(bgCtx) })

	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	parker := retry.NewParker(pool)
	h := dispatch.NewHandler(cache,
		delivery.NewSender(ssrf.NewDialer(cfg.AllowPrivateDestinations, dialTimeout).DialContext),
		parker.Park,
		func(ctx context.Context, id string) error { return disableEndpoint(ctx, pool, kv, cache, id) },
		js, log)
	h.Hold = parker.Hold
	h.Keys = parking.New(pool)
	batcher := outcomes.New(js)
	batcher.Start()
	h.Outcomes = batcher
	h.Metrics = m
	h.Breaker = circuits
	h.Rates = ratelimit.New(members.Count)
	sched := retry.NewScheduler(pool, js, log)
	// A retry row whose endpoint's circuit is open becomes a circuit hold
	// in place, instead of going round through JetStream; held rows are
	// released by the probe and the close of their circuit.
	sched.Hold = func(d *hooklinev1.Delivery, now time.Time) (time.Time, bool) {
		hctx, cancel := context.WithTimeout(bgCtx, time.Second)
		defer cancel()
		return h.Held(hctx, d, now)
	}
	sched.Gate = func(ctx context.Context, endpointID string, now time.Time) (retry.Gate, time.Time) {
		phase, expiredBefore := h.CircuitPhase(ctx, endpointID, now)
		switch phase {
		case breaker.PhaseHeld:
			return retry.Keep, expiredBefore
		case breaker.PhaseProbe:
			return retry.ReleaseProbe, expiredBefore
		}
		return retry.ReleaseAll, expiredBefore
	}
	bg.Go(func() { sched.Run(bgCtx) })
	limits := dispatch.NewLimits(concurrency, PerEndpointInFlight)
	runner := dispatch.NewRunner(h, limits, head, log)
	runner.Settled = func(ctx context.Context, ids []string) (map[string]bool, error) {
		return attemptlog.Settled(ctx, pool, ids)
	}
	m.HeadChecks(runner.HeadChecks)
	drainer := dispatch.NewDrainer(h, limits, owner, log)
	drainCtx, stopDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDrain()
	drainDone := make(chan struct{})
	go func() { defer close(drainDone); drainer.Run(drainCtx) }()

	it, err := cons.Messages(jetstream.PullMaxMessages(min(2*concurrency, 500)))
	if err != nil {
		batcher.Close()
		stopBackground()
		bg.Wait()
		return fmt.Errorf("consume %s: %w", bus.StreamDeliveries, err)
	}
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		runner.Consume(workCtx, it)
	}()
	health.Set("consuming", true)
	log.Info("dispatcher consuming", "stream", bus.StreamDeliveries, "consumer", bus.ConsumerDispatcher, "concurrency", concurrency)

	<-ctx.Done()
	log.Info("dispatcher stopping")
	health.Set("stopping", false)
	health.Set("consuming", false)
	it.Drain()
	select {
	case <-loopDone:
	case <-time.After(cfg.ShutdownTimeout):
		it.Stop()
		<-loopDone
	}
	runner.Stop()
	stopDrain()
	if !runner.Wait(cfg.ShutdownTimeout) {
		log.Warn("in-flight deliveries did not finish in time, handing them back")
		cancelWork() // attempts are cut short and NAKed
		runner.Wait(5 * time.Second)
	}
	select {
	case <-drainDone:
	case <-time.After(cfg.ShutdownTimeout):
		log.Warn("blocked-key drains did not finish in time; their leases expire")
	}
	batcher.Close() // the handlers are done: publish what they handed in
	stopBackground()
	bg.Wait()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := natsconn.Drain(dctx, nc); err != nil {
		log.Warn("drain NATS connection", "err", err)
	}
	log.Info("dispatcher stopped")
	return nil
}

// sampleGauges sets the open-circuit gauge every metricsInterval, and the
// blocked-key and held-delivery gauges as often or, when counting them is
// slow, less often (metrics.NextCount), until ctx ends. Blocked keys and
// held deliveries are counted cluster-wide (every replica reports the same
// number).
func sampleGauges(ctx context.Context, pool *pgxpool.Pool, circuits *breaker.Circuits, m *metrics.Metrics, log *slog.Logger) {
	t := time.NewTicker(metricsInterval)
	defer t.Stop()
	var nextCount time.Time
	for {
		m.BreakersOpen.Set(float64(circuits.OpenCount()))
		if start := time.Now(); !start.Before(nextCount) {
			countGauges(ctx, pool, m, log)
			nextCount = start.Add(metrics.NextCount(metricsInterval, time.Since(start)))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// countGauges counts the blocked keys and the held deliveries.
func countGauges(ctx context.Context, pool *pgxpool.Pool, m *metrics.Metrics, log *slog.Logger) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	var n int64
	err := pool.QueryRow(qctx, `SELECT count(*) FROM blocked_keys`).Scan(&n)
	cancel()
	if err == nil {
		m.KeysBlocked.Set(float64(n))
	} else if ctx.Err() == nil {
		log.Debug("count blocked keys", "err", err)
	}
	qctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	held, err := retry.CountHeld(qctx, pool)
	cancel()
	if err == nil {
		m.DeliveriesHeld.Set(float64(held))
	} else if ctx.Err() == nil {
		log.Debug("count held deliveries", "err", err)
	}
}

// replicaID names this replica in leases and heartbeats: the host name and
// a random suffix, so a restarted process is a new owner.
func replicaID() string {
	host, _ := os.Hostname()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%x", host, b)
}

// checkHeadLookup makes sure the server answers the head-of-subject lookup
// per-key order relies on (STREAM.MSG.GET with next_by_subj).
func checkHeadLookup(ctx context.Context, head keylane.HeadFunc) error {
	if _, _, err := head(ctx, bus.DeliverySubject("_", "_", "")); err != nil {
		return fmt.Errorf("NATS server cannot look up the head of a subject (needed for per-key order): %w", err)
	}
	return nil
}

// disableEndpoint disables an endpoint that answered 410 Gone, publishes
// the change to every replica and applies it to this one's cache at once,
// so that its next delivery to the endpoint does not wait for the watch.
func disableEndpoint(ctx context.Context, pool *pgxpool.Pool, kv jetstream.KeyValue, cache *endpoints.Cache, id string) error {
	if _, err := pool.Exec(ctx, `
UPDATE endpoints
SET disabled = true, disabled_at = now(), disabled_reason = 'endpoint answered 410 Gone',
    version = version + 1, updated_at = now()
WHERE id = $1 AND NOT disabled`, id); err != nil {
		return fmt.Errorf("disable endpoint %s: %w", id, err)
	}
	if err := endpoints.Sync(ctx, pool, kv, id); err != nil {
		return fmt.Errorf("sync disabled endpoint %s: %w", id, err)
	}
	// The watch applies the change anyway; refreshing only saves its delay.
	_ = cache.Refresh(ctx, id)
	return nil
}

// startErr returns nil when ctx ended during start (a stop, not a failure).
func startErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
