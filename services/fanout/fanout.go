// Package fanout is the hookline-fanout service: it consumes accepted events
// from HOOKLINE_EVENTS and publishes one delivery per matching endpoint to
// HOOKLINE_DELIVERIES (a dead letter for a disabled endpoint), recording each
// delivery in PostgreSQL. Any number of replicas may run; events that share an
// ordering key are fanned out one at a time, in acceptance order, across all
// replicas (docs/design/ordering.md).
package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/keylane"
	"github.com/hookline/hookline/pkg/metrics"
	"github.com/hookline/hookline/pkg/natsconn"
	"github.com/hookline/hookline/pkg/ops"
	"github.com/hookline/hookline/pkg/store"
	"github.com/hookline/hookline/services/fanout/internal/fanout"
	"github.com/hookline/hookline/services/fanout/internal/match"
)

// Tuning of the consumer.
const (
	ackWait       = 30 * time.Second
	maxAckPending = 1024
	// lanes events are fanned out at once (keyless and keyed each): most of
	// an event's time is spent waiting for PostgreSQL and JetStream, and
	// concurrent events share one commit (group commit), so many lanes are
	// cheap and raise throughput.
	lanes     = 128
	laneDepth = 8
	pullBatch = 256
	// metricsInterval is how often the consumer's backlog is sampled.
	metricsInterval = 10 * time.Second
	// circuitsInterval is how often fan-out reads which endpoints' circuits
	// are open (see fanout.OpenCircuits).
	circuitsInterval = time.Second
)

// Run runs the service until ctx ends, then shuts down gracefully and returns
// nil. It returns an error only when it cannot start.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	m := metrics.New("hookline-fanout")
	health := ops.NewHealth()
	health.Set("consuming", false)
	health.Set("stopping", true)
	m.SetReadiness(func() bool { return len(health.Failing()) == 0 })
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	defer stopOps()
	opsDone := make(chan error, 1)
	go func() { opsDone <- ops.Serve(opsCtx, cfg.OpsAddr, ops.Handler(health, m.Handler()), log) }()
	defer func() { stopOps(); <-opsDone }()

	pool, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: cfg.DatabaseMaxConns, Name: "hookline-fanout"}, log)
	if err != nil {
		return startErr(ctx, err)
	}
	defer pool.Close()
	nc, js, err := natsconn.Connect(ctx, cfg.NATSURL, "hookline-fanout", log)
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
	cacheCtx, stopCache := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCache()
	go cache.Keep(cacheCtx)
	if err := cache.WaitSynced(ctx); err != nil {
		return startErr(ctx, err)
	}
	cons, err := bus.EnsureConsumer(ctx, js, bus.StreamEvents, bus.Consumer(bus.ConsumerFanout, ackWait, maxAckPending))
	if err != nil {
		return startErr(ctx, err)
	}

	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	h := fanout.NewHandler(pool, js, match.New(cache, log), log)
	h.Metrics = m
	h.Circuits = fanout.NewOpenCircuits()
	rctx, cancelRefresh := context.WithTimeout(ctx, 5*time.Second)
	if err := h.Circuits.Refresh(rctx, pool); err != nil {
		log.Warn("read open circuits; deliveries go through the dispatchers until the next read", "err", err)
	}
	cancelRefresh()
	go h.Circuits.Run(cacheCtx, pool, circuitsInterval, log)
	go m.WatchConsumers(cacheCtx, js, []metrics.ConsumerRef{{Stream: bus.StreamEvents, Consumer: bus.ConsumerFanout}}, metricsInterval, log)
	ln := fanout.NewLanes(lanes, laneDepth, h.Handle)
	ln.Start(workCtx)
	head, err := keylane.Lookup(ctx, js, bus.StreamEvents)
	if err != nil {
		return startErr(ctx, err)
	}
	if _, _, err := head(ctx, bus.EventSubject("_", "")); err != nil {
		return startErr(ctx, fmt.Errorf("NATS server cannot look up the head of a subject (needed for per-key order): %w", err))
	}
	// Keyed events run one per key, in order, each once it is the head of
	// its key's subject; at most `lanes` of them at once.
	sem := make(chan struct{}, lanes)
	keyed := keylane.New(head, func(ctx context.Context, msg jetstream.Msg) {
		sem <- struct{}{}
		defer func() { <-sem }()
		h.HandleOrdered(ctx, msg)
	}, log)
	keyed.Disconnects = natsconn.Disconnects
	m.HeadChecks(keyed.Counts)

	it, err := cons.Messages(jetstream.PullMaxMessages(pullBatch))
	if err != nil {
		return fmt.Errorf("consume %s: %w", bus.StreamEvents, err)
	}
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		consumeLoop(workCtx, it, ln, keyed, log)
	}()
	health.Set("consuming", true)
	log.Info("fan-out consuming", "stream", bus.StreamEvents, "consumer", bus.ConsumerFanout)

	<-ctx.Done()
	log.Info("fan-out stopping")
	health.Set("stopping", false)
	health.Set("consuming", false)
	it.Drain()
	select {
	case <-loopDone:
	case <-time.After(cfg.ShutdownTimeout):
		it.Stop()
		<-loopDone
	}
	ln.Stop()
	keyed.Stop()
	if !ln.Wait(cfg.ShutdownTimeout) || !keyed.Wait(cfg.ShutdownTimeout) {
		log.Warn("in-flight events did not finish in time, handing them back")
		cancelWork() // handlers fail and NAK
		ln.Wait(5 * time.Second)
		keyed.Wait(5 * time.Second)
	}
	h.Close()
	stopCache()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := natsconn.Drain(dctx, nc); err != nil {
		log.Warn("drain NATS connection", "err", err)
	}
	log.Info("fan-out stopped")
	return nil
}

func consumeLoop(ctx context.Context, it jetstream.MessagesContext, ln *fanout.Lanes, keyed *keylane.Lanes, log *slog.Logger) {
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			keyed.Break()
			log.Warn("fetch events", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		keyless := strings.HasSuffix(msg.Subject(), "."+bus.NoKey)
		o := keyed.Observe(msg, !keyless)
		if keyless {
			ln.Dispatch(msg)
			continue
		}
		keyed.Add(ctx, msg, o)
	}
}

// startErr returns nil when ctx ended during start (a stop, not a failure).
func startErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
