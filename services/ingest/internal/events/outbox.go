package events

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hookline/hookline/pkg/store"
	"github.com/hookline/hookline/proto/hooklinev1"
)

// outboxDeleteMax bounds the outbox rows one DELETE removes.
const outboxDeleteMax = 5000

// deleteOutboxSQL deletes the outbox rows ($1[i], $2[i], $3[i]): accepted_at,
// tenant and event id.
const deleteOutboxSQL = `
DELETE FROM event_outbox o
USING unnest($1::timestamptz[], $2::text[], $3::text[]) AS u(accepted_at, tenant_id, id)
WHERE o.accepted_at = u.accepted_at AND o.tenant_id = u.tenant_id AND o.id = u.id`

// outboxKey names an event's outbox row.
type outboxKey struct {
	acceptedAt time.Time
	tenant, id string
}

// outbox deletes the event_outbox rows of events JetStream acknowledged, in
// the background: what is queued while a DELETE runs goes in the next one,
// group-committed with concurrent inserts. Nobody waits for it. A row that
// is never deleted (the process stopped first, or PostgreSQL failed) only
// makes the relay publish its event again.
type outbox struct {
	group *store.Group
	log   *slog.Logger

	start sync.Once
	keys  chan outboxKey
	// pending counts the rows queued and not yet deleted (or failed).
	pending atomic.Int64
}

// outboxRows are the parameters of deleteOutboxSQL.
type outboxRows struct {
	acceptedAt []time.Time
	tenants    []string
	idList     []string
}

func (r *outboxRows) add(k outboxKey) {
	r.acceptedAt = append(r.acceptedAt, k.acceptedAt)
	r.tenants = append(r.tenants, k.tenant)
	r.idList = append(r.idList, k.id)
}

func (r *outboxRows) reset() {
	r.acceptedAt, r.tenants, r.idList = r.acceptedAt[:0], r.tenants[:0], r.idList[:0]
}

func newOutbox(group *store.Group, log *slog.Logger) *outbox {
	return &outbox{group: group, log: log, keys: make(chan outboxKey, 4*outboxDeleteMax)}
}

// forget queues the deletion of events' outbox rows. It blocks only while
// the queue is full (PostgreSQL is behind), which slows producers down
// instead of leaving work to the relay.
func (o *outbox) forget(events []*hooklinev1.Event) {
	if len(events) == 0 {
		return
	}
	o.start.Do(func() { go o.run() })
	o.pending.Add(int64(len(events)))
	for _, ev := range events {
		o.keys <- outboxKey{ev.GetAcceptedAt().AsTime(), ev.GetTenantId(), ev.GetId()}
	}
}

// outboxLinger is how long the first row queued waits for others before
// its DELETE goes: nobody waits for it, and at a few hundred events a second
// it turns a statement per event into one per a few dozen (a round trip
// costs ingest and PostgreSQL far more than a row). It must stay far below
// the relay's age, or the relay would republish what is about to go.
const outboxLinger = 50 * time.Millisecond

func (o *outbox) run() {
	var rows outboxRows
	linger := time.NewTimer(outboxLinger)
	for {
		rows.reset()
		rows.add(<-o.keys)
		linger.Reset(outboxLinger)
	collect:
		for len(rows.idList) < outboxDeleteMax {
			select {
			case k := <-o.keys:
				rows.add(k)
			case <-linger.C:
				break collect
			}
		}
		linger.Stop()
		if err := o.delete(context.Background(), &rows); err != nil {
			o.log.Warn("delete outbox rows of published events; the relay will publish them again",
				"err", err, "events", len(rows.idList))
		}
		o.pending.Add(-int64(len(rows.idList)))
	}
}

// wait returns once every deletion queued so far was attempted, or with
// ctx's error.
func (o *outbox) wait(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for o.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for outbox deletions: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

func (o *outbox) delete(ctx context.Context, rows *outboxRows) error {
	b := &pgx.Batch{}
	b.Queue(deleteOutboxSQL, rows.acceptedAt, rows.tenants, rows.idList)
	err := o.group.Do(ctx, b, func(br pgx.BatchResults) error {
		_, err := br.Exec()
		return err
	})
	if err != nil {
		return fmt.Errorf("delete outbox rows: %w", err)
	}
	return nil
}
