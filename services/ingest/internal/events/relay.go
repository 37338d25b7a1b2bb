package events

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/proto/hooklinev1"
)

// RunRelay republishes, every few seconds, events stored but not
// acknowledged by JetStream for a while (the process crashed between the
// INSERT and the publish, or NATS was down). Rows are claimed with
// FOR UPDATE SKIP LOCKED, so replicas share the work. It returns nil when ctx
// ends.
func (s *Service) RunRelay(ctx context.Context) error {
	t := time.NewTicker(s.relayEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for {
			n, err := s.relayOnce(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.WarnContext(ctx, "relay unpublished events", "err", err)
				}
				break
			}
			if n < s.relayBatch {
				break
			}
		}
	}
}

// relayOnce republishes the events of one batch of outbox rows, deletes
// those rows, and returns how many it claimed.
func (s *Service) relayOnce(ctx context.Context) (int, error) {
	// A row an ingest replica older than the outbox left unpublished (a
	// rolling upgrade) has no outbox row: adopt it. New rows are inserted
	// published, so this reads an empty partial index.
	if _, err := s.pool.Exec(ctx, adoptUnpublishedSQL, apitime.Now().Add(-s.relayAge)); err != nil {
		return 0, fmt.Errorf("adopt unpublished events: %w", err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	// An outbox row whose event is gone (its tenant was deleted) is claimed
	// with the others and deleted.
	rows, err := tx.Query(ctx, `
SELECT o.accepted_at, o.tenant_id, o.id, e.id IS NOT NULL, coalesce(e.type, ''), coalesce(e.data::text, ''),
    coalesce(e.ordering_key, ''), coalesce(e.only_endpoint_id, ''), coalesce(e.accepted_at, o.accepted_at)
FROM event_outbox o
LEFT JOIN events e ON e.tenant_id = o.tenant_id AND e.id = o.id
WHERE o.accepted_at < $1
ORDER BY o.accepted_at, o.tenant_id, o.id
LIMIT $2
FOR UPDATE OF o SKIP LOCKED`, apitime.Now().Add(-s.relayAge), s.relayBatch)
	if err != nil {
		return 0, fmt.Errorf("claim outbox rows: %w", err)
	}
	var events []*hooklinev1.Event
	var claimedAt []time.Time // events[i]'s outbox row's accepted_at
	var del outboxRows        // the rows to delete
	var at time.Time
	var tenant string
	var found bool
	var e storedEvent
	var data string
	_, err = pgx.ForEachRow(rows, []any{&at, &tenant, &e.id, &found, &e.typ, &data, &e.orderingKey, &e.onlyEndpoint, &e.acceptedAt}, func() error {
		if !found {
			del.add(outboxKey{at, tenant, e.id})
			return nil
		}
		e.data = []byte(data)
		events = append(events, eventOf(tenant, &e))
		claimedAt = append(claimedAt, at)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read outbox rows: %w", err)
	}
	claimed := len(events) + len(del.idList)
	if claimed == 0 {
		return 0, nil
	}
	var firstErr error
	relayed := 0
	if len(events) > 0 {
		// The producer's trace context was not stored with the event: the
		// relayed events start a trace of their own.
		ctx, span := s.tracer.Start(ctx, "relay events", trace.WithNewRoot(),
			trace.WithAttributes(attribute.Int("hookline.events", len(events))))
		defer span.End()
		// One message each, not grouped: an event whose first publish
		// reached the stream keeps its Nats-Msg-Id, so JetStream drops
		// the copy.
		for i, err := range s.publish(ctx, events, nil, nil) {
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			relayed++
			del.add(outboxKey{claimedAt[i], events[i].GetTenantId(), events[i].GetId()})
		}
	}
	if len(del.idList) > 0 {
		if _, err := tx.Exec(ctx, deleteOutboxSQL, del.acceptedAt, del.tenants, del.idList); err != nil {
			return 0, fmt.Errorf("delete relayed outbox rows: %w", err)
		}
		if err := tx.Commit(ctx); err != nil {
			return 0, fmt.Errorf("commit relayed events: %w", err)
		}
		if relayed > 0 {
			s.log.InfoContext(ctx, "relayed unpublished events", "events", relayed)
		}
	}
	if firstErr != nil {
		return 0, fmt.Errorf("republish %d of %d events: %w", len(events)-relayed, len(events), firstErr)
	}
	return claimed, nil
}

// adoptUnpublishedSQL moves events stored unpublished by an older ingest
// into the outbox, through the events_unpublished partial index.
const adoptUnpublishedSQL = `
WITH adopted AS (
    UPDATE events SET published = true
    WHERE NOT published AND accepted_at < $1
    RETURNING accepted_at, tenant_id, id)
INSERT INTO event_outbox (accepted_at, tenant_id, id)
SELECT accepted_at, tenant_id, id FROM adopted
ON CONFLICT DO NOTHING`
