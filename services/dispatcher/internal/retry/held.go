package retry

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/store"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// Gate is what a circuit means for the deliveries held for it.
type Gate int

// Gates.
const (
	// Keep: the circuit still holds them.
	Keep Gate = iota
	// ReleaseProbe: the circuit may be probed: release one, the oldest.
	ReleaseProbe
	// ReleaseAll: nothing holds them any more (the circuit closed, or the
	// endpoint was disabled or deleted, which the dispatcher then
	// dead-letters).
	ReleaseAll
)

// CountHeld counts the deliveries held for their endpoint's circuit, in
// both places, through their partial indexes (store.ReadByIndex: the
// statement has no parameters, and a plan made while deliveries was empty
// read the whole table at every count, 60,009 rows for 3 held in
// TestHeldLookupsKeepToTheirIndexes).
func CountHeld(ctx context.Context, db Beginner) (int64, error) {
	var n int64
	err := store.ReadByIndex(ctx, db, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM deliveries WHERE circuit_hold)
     + (SELECT count(*) FROM delivery_retries WHERE circuit_hold)`).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("count held deliveries: %w", err)
	}
	return n, nil
}

// heldEndpointsSQL lists the endpoints that have deliveries held for their
// circuit, in either place: delivery_retries rows (held by a dispatcher)
// and deliveries rows (held by fan-out). Each endpoint costs one probe of
// each partial index (a loose index scan: PostgreSQL has no skip scan),
// however many deliveries it holds.
const heldEndpointsSQL = `
WITH RECURSIVE r AS (
    (SELECT endpoint_id FROM delivery_retries WHERE circuit_hold ORDER BY endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT x.endpoint_id FROM delivery_retries x
            WHERE x.circuit_hold AND x.endpoint_id > r.endpoint_id ORDER BY x.endpoint_id LIMIT 1)
    FROM r WHERE r.endpoint_id IS NOT NULL
), d AS (
    (SELECT endpoint_id FROM deliveries WHERE circuit_hold ORDER BY endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT x.endpoint_id FROM deliveries x
            WHERE x.circuit_hold AND x.endpoint_id > d.endpoint_id ORDER BY x.endpoint_id LIMIT 1)
    FROM d WHERE d.endpoint_id IS NOT NULL
)
SELECT endpoint_id FROM r WHERE endpoint_id IS NOT NULL
UNION
SELECT endpoint_id FROM d WHERE endpoint_id IS NOT NULL`

// releaseRetriesSQL makes up to $2 of endpoint $1's held delivery_retries
// rows, oldest first, due now as ordinary rows, for [Scheduler.Tick].
const releaseRetriesSQL = `
UPDATE delivery_retries SET circuit_hold = false, due_at = now()
WHERE delivery_id IN (
    SELECT delivery_id FROM delivery_retries
    WHERE endpoint_id = $1 AND circuit_hold
    ORDER BY due_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED)`

// heldDeliveriesSQL reads up to $2 of endpoint $1's held deliveries rows,
// oldest first (only those created before $3 when it is not null), with
// their event, to rebuild each Delivery. The event is gone only with its
// tenant.
//
// The time bound is written so that it bounds the scan of
// deliveries_circuit_hold in a generic plan too (what the prepared
// statement gets after its fifth execution): as ($3 IS NULL OR created_at <
// $3) it was a filter there, and every sweep's look for rows past their
// horizon read all of the endpoint's held rows (TestHeldDeliveriesReadIsBounded).
const heldDeliveriesSQL = `
SELECT d.id, d.tenant_id, d.event_id, d.created_at, coalesce(d.traceparent, ''),
       e.id IS NOT NULL, coalesce(e.type, ''), coalesce(e.data::text, ''), coalesce(e.ordering_key, ''), coalesce(e.accepted_at, d.created_at)
FROM deliveries d LEFT JOIN events e ON e.tenant_id = d.tenant_id AND e.id = d.event_id
WHERE d.endpoint_id = $1 AND d.circuit_hold AND d.created_at < coalesce($3::timestamptz, 'infinity')
ORDER BY d.created_at
LIMIT $2
FOR UPDATE OF d SKIP LOCKED`

// Sweep asks [Scheduler.Gate] about every endpoint with deliveries held
// for its circuit, and releases its probe, or all of them, or those past
// their horizon, accordingly. It is level triggered: a delivery held after
// its circuit closed (by a replica that had not seen it close yet) is
// released by the next sweep.
func (s *Scheduler) Sweep(ctx context.Context) error {
	if s.Gate == nil {
		return nil
	}
	eps, err := heldEndpoints(ctx, s.db)
	if err != nil {
		return err
	}
	now := time.Now()
	for ep, at := range s.probed {
		if now.Sub(at) >= s.ProbeGap {
			delete(s.probed, ep)
		}
	}
	for _, ep := range eps {
		gate, expiredBefore := s.Gate(ctx, ep, now)
		var n int64
		switch gate {
		case Keep:
		case ReleaseProbe:
			if _, recent := s.probed[ep]; recent {
				break // our probe is out: only those past their horizon go
			}
			if n, err = s.releaseRetries(ctx, ep, 1); err == nil && n == 0 {
				n, err = s.releaseDeliveries(ctx, ep, 1, time.Time{})
			}
			if err != nil {
				return err
			}
			if n > 0 {
				s.probed[ep] = now
				s.log.Info("circuit due a probe, released a held delivery", "endpoint_id", ep)
			}
			continue
		case ReleaseAll:
			if n, err = s.releaseRetries(ctx, ep, s.ReleaseBatch); err != nil {
				return err
			}
			m, err := s.releaseDeliveries(ctx, ep, s.ReleaseBatch, time.Time{})
			if err != nil {
				return err
			}
			if n += m; n > 0 {
				s.log.Info("circuit no longer holds deliveries, released them", "endpoint_id", ep, "deliveries", n)
			}
			continue
		}
		// Held rows of delivery_retries come due at their horizon by
		// themselves; held deliveries rows are released at theirs here.
		if !expiredBefore.IsZero() {
			if n, err = s.releaseDeliveries(ctx, ep, s.ReleaseBatch, expiredBefore); err != nil {
				return err
			}
			if n > 0 {
				s.log.Info("held deliveries past their retry horizon released", "endpoint_id", ep, "deliveries", n)
			}
		}
	}
	return nil
}

// heldEndpoints lists the endpoints with held deliveries (heldEndpointsSQL),
// through the partial indexes whatever the statistics (store.ReadByIndex):
// a plan made while deliveries was empty read the whole table at every
// sweep, two a second (143 ms at 110,000 deliveries in the bench's
// failing-1, whose tables are analyzed empty).
func heldEndpoints(ctx context.Context, db Beginner) ([]string, error) {
	eps, err := store.StringsByIndex(ctx, db, heldEndpointsSQL)
	if err != nil {
		return nil, fmt.Errorf("list endpoints with held deliveries: %w", err)
	}
	return eps, nil
}

func (s *Scheduler) releaseRetries(ctx context.Context, endpointID string, limit int) (int64, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	tag, err := tx.Exec(ctx, releaseRetriesSQL, endpointID, limit)
	if err != nil {
		return 0, fmt.Errorf("release retries held for %s: %w", endpointID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit released retries of %s: %w", endpointID, err)
	}
	return tag.RowsAffected(), nil
}

// releaseDeliveries publishes up to limit of endpointID's held deliveries
// rows (created before createdBefore unless it is zero), rebuilt from
// their rows and events, and clears their hold. A crash between publish and
// commit publishes them again, and the stream's duplicate window drops the
// copies.
func (s *Scheduler) releaseDeliveries(ctx context.Context, endpointID string, limit int, createdBefore time.Time) (int64, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var before *time.Time
	if !createdBefore.IsZero() {
		before = &createdBefore
	}
	rows, err := tx.Query(ctx, heldDeliveriesSQL, endpointID, limit, before)
	if err != nil {
		return 0, fmt.Errorf("read deliveries held for %s: %w", endpointID, err)
	}
	var (
		ids   []string
		msgs  []*nats.Msg
		spans []trace.Span
	)
	defer func() {
		for _, sp := range spans {
			sp.End()
		}
	}()
	for rows.Next() {
		var (
			d                  = &hooklinev1.Delivery{EndpointId: endpointID}
			created, accepted  time.Time
			traceparent        string
			eventFound         bool
			data               string
			orderingKey, etype string
		)
		if err := rows.Scan(&d.Id, &d.TenantId, &d.EventId, &created, &traceparent, &eventFound, &etype, &data, &orderingKey, &accepted); err != nil {
			rows.Close()
			return 0, fmt.Errorf("scan held delivery: %w", err)
		}
		ids = append(ids, d.GetId())
		if !eventFound {
			s.log.Warn("held delivery's event is gone (its tenant was deleted), dropped", "delivery_id", d.GetId(), "event_id", d.GetEventId())
			continue
		}
		d.EventType, d.Data, d.OrderingKey = etype, []byte(data), orderingKey
		d.AcceptedAt, d.CreatedAt = timestamppb.New(accepted), timestamppb.New(created)
		payload, err := proto.Marshal(d)
		if err != nil {
			rows.Close()
			return 0, fmt.Errorf("encode held delivery %s: %w", d.GetId(), err)
		}
		m := bus.NewMsg(bus.DeliverySubject(d.GetTenantId(), endpointID, d.GetOrderingKey()), bus.DeliveryMsgID(d.GetId(), 0), payload)
		spans = append(spans, s.traceRelease(ctx, m, d, traceparent))
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read deliveries held for %s: %w", endpointID, err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	if len(msgs) > 0 {
		if err := bus.PublishAll(ctx, s.js, msgs...); err != nil {
			return 0, err
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE deliveries SET circuit_hold = false WHERE id = ANY($1)`, ids); err != nil {
		return 0, fmt.Errorf("clear holds of released deliveries: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit released deliveries of %s: %w", endpointID, err)
	}
	return int64(len(ids)), nil
}
