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

// relayOnce republishes one batch and returns how many rows it claimed.
func (s *Service) relayOnce(ctx context.Context) (int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	rows, err := tx.Query(ctx, `
SELECT tenant_id, id, type, data::text, coalesce(ordering_key, ''), coalesce(only_endpoint_id, ''), accepted_at
FROM events
WHERE NOT published AND accepted_at < $1
ORDER BY accepted_at, id
LIMIT $2
FOR UPDATE SKIP LOCKED`, apitime.Now().Add(-s.relayAge), s.relayBatch)
	if err != nil {
		return 0, fmt.Errorf("claim unpublished events: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*hooklinev1.Event, error) {
		var tenant string
		var e storedEvent
		var data string
		if err := row.Scan(&tenant, &e.id, &e.typ, &data, &e.orderingKey, &e.onlyEndpoint, &e.acceptedAt); err != nil {
			return nil, err
		}
		e.data = []byte(data)
		return eventOf(tenant, &e), nil
	})
	if err != nil {
		return 0, fmt.Errorf("read unpublished events: %w", err)
	}
	if len(events) == 0 {
		return 0, nil
	}
	// The producer's trace context was not stored with the event: the
	// relayed events start a trace of their own.
	ctx, span := s.tracer.Start(ctx, "relay events", trace.WithNewRoot(),
		trace.WithAttributes(attribute.Int("hookline.events", len(events))))
	defer span.End()
	errs := s.publish(ctx, events, nil)
	var done []*hooklinev1.Event
	var firstErr error
	for i, err := range errs {
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		done = append(done, events[i])
	}
	if len(done) > 0 {
		tenants := make([]string, len(done))
		idList := make([]string, len(done))
		for i, ev := range done {
			tenants[i], idList[i] = ev.GetTenantId(), ev.GetId()
		}
		if _, err := tx.Exec(ctx, `
UPDATE events e SET published = true
FROM unnest($1::text[], $2::text[]) AS u(tenant_id, id)
WHERE e.tenant_id = u.tenant_id AND e.id = u.id`, tenants, idList); err != nil {
			return 0, fmt.Errorf("mark relayed events published: %w", err)
		}
		if err := tx.Commit(ctx); err != nil {
			return 0, fmt.Errorf("commit relayed events: %w", err)
		}
		s.log.InfoContext(ctx, "relayed unpublished events", "events", len(done))
	}
	if firstErr != nil {
		return 0, fmt.Errorf("republish %d of %d events: %w", len(events)-len(done), len(events), firstErr)
	}
	return len(events), nil
}
