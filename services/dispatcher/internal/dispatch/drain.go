package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/hookline/hookline/pkg/telemetry"
	"github.com/hookline/hookline/services/dispatcher/internal/parking"
)

// Drainer delivers the parked deliveries of blocked keys once they are due,
// in order. Every replica runs one; a key is drained by the replica holding
// its lease, and every write is fenced by that lease.
type Drainer struct {
	h      *Handler
	limits *Limits
	owner  string
	log    *slog.Logger
	// Interval between polls for due keys, Lease of a claimed key (longer
	// than one attempt), MaxKeys drained at once by this replica.
	Interval time.Duration
	Lease    time.Duration
	MaxKeys  int

	mu     sync.Mutex
	active int
	wg     sync.WaitGroup
}

// NewDrainer returns a Drainer for replica owner.
func NewDrainer(h *Handler, limits *Limits, owner string, log *slog.Logger) *Drainer {
	return &Drainer{h: h, limits: limits, owner: owner, log: log, Interval: 250 * time.Millisecond, Lease: 90 * time.Second, MaxKeys: 64}
}

// Run drains due keys until ctx ends; keys being drained then stop after
// their current attempt and give their lease back.
func (dr *Drainer) Run(ctx context.Context) {
	t := time.NewTicker(dr.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dr.wg.Wait()
			return
		case <-t.C:
		}
		dr.mu.Lock()
		free := dr.MaxKeys - dr.active
		dr.mu.Unlock()
		if free <= 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, opTimeout)
		keys, err := dr.h.Keys.Claim(cctx, dr.owner, dr.Lease, free)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				dr.log.Warn("claim blocked keys", "err", err)
			}
			continue
		}
		for _, k := range keys {
			dr.mu.Lock()
			dr.active++
			dr.mu.Unlock()
			dr.wg.Go(func() {
				defer func() {
					dr.mu.Lock()
					dr.active--
					dr.mu.Unlock()
				}()
				dr.drain(ctx, k)
			})
		}
	}
}

// drain delivers k's parked deliveries in order until one must wait again,
// none is left (the key is unblocked), or ctx ends.
func (dr *Drainer) drain(ctx context.Context, k parking.Key) {
	log := dr.log.With("endpoint_id", k.EndpointID, "key_token", k.KeyToken)
	db := context.WithoutCancel(ctx)
	release := func(due time.Time) {
		rctx, cancel := context.WithTimeout(db, opTimeout)
		defer cancel()
		if err := dr.h.Keys.Release(rctx, k, dr.owner, due); err != nil {
			log.Warn("release blocked key", "err", err)
		}
	}
	for {
		if ctx.Err() != nil {
			release(time.Now())
			return
		}
		nctx, cancel := context.WithTimeout(db, opTimeout)
		item, err := dr.h.Keys.Next(nctx, k, dr.owner, dr.Lease)
		cancel()
		if errors.Is(err, parking.ErrLeaseLost) {
			log.Warn("lease on blocked key lost, another replica drains it")
			return
		}
		if err != nil {
			log.Warn("read parked delivery", "err", err)
			release(time.Now().Add(ParkFailedDelay))
			return
		}
		if item == nil {
			uctx, cancel := context.WithTimeout(db, opTimeout)
			done, err := dr.h.Keys.Unblock(uctx, k, dr.owner)
			cancel()
			switch {
			case err != nil && !errors.Is(err, parking.ErrLeaseLost):
				log.Warn("unblock key", "err", err)
				release(time.Now().Add(ParkFailedDelay))
				return
			case err != nil || done:
				log.Debug("key unblocked")
				return
			}
			continue // a delivery was parked meanwhile
		}
		if !dr.deliver(ctx, k, item, log) {
			return
		}
	}
}

// deliver makes one attempt of item and records it; it reports whether the
// drain goes on with the next item.
func (dr *Drainer) deliver(ctx context.Context, k parking.Key, item *parking.Item, log *slog.Logger) bool {
	d := item.Delivery
	log = log.With("delivery_id", d.GetId(), "event_id", d.GetEventId(), "seq", item.Seq)
	// A parked delivery's attempt starts a trace of its own, linked to the
	// one it was parked in.
	ctx, span := dr.h.startSpan(ctx, d, append(telemetry.LinkTo(item.Traceparent), trace.WithNewRoot())...)
	defer span.End()
	db := context.WithoutCancel(ctx)
	ep, err := dr.h.Endpoints.Get(ctx, k.EndpointID)
	if err != nil {
		log.WarnContext(ctx, "look up endpoint", "err", err)
		dr.release(db, k, time.Now().Add(FailedDelay), log)
		return false
	}
	releaseSlot, ok := dr.limits.Acquire(ctx, k.EndpointID)
	if !ok {
		dr.release(db, k, time.Now(), log)
		return false
	}
	v := dr.h.decide(ctx, ep, d)
	releaseSlot()
	dr.h.observe(span, d, v)
	if v.kind == kindStopping {
		dr.release(db, k, time.Now(), log)
		return false
	}
	if err := dr.h.publish(ctx, v.outcome, v.dl, true); err != nil {
		log.WarnContext(ctx, "publish attempt outcome, will retry", "err", err)
		dr.release(db, k, time.Now().Add(FailedDelay), log)
		return false
	}
	v.log(ctx, log)
	wctx, cancel := context.WithTimeout(db, opTimeout)
	defer cancel()
	switch v.kind {
	case kindRetry, kindHold:
		if err := dr.h.Keys.Repark(wctx, k, item.Seq, v.next, v.due, dr.owner); err != nil {
			log.WarnContext(ctx, "repark delivery", "err", err)
		}
		return false
	default:
		if err := dr.h.Keys.Done(wctx, k, item.Seq, dr.owner); err != nil {
			log.WarnContext(ctx, "remove delivered parked delivery", "err", err)
			return false
		}
		return true
	}
}

func (dr *Drainer) release(ctx context.Context, k parking.Key, due time.Time, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := dr.h.Keys.Release(ctx, k, dr.owner, due); err != nil {
		log.Warn("release blocked key", "err", err)
	}
}
