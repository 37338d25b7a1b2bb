package deadletter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hookline/hookline/pkg/metrics"
	"github.com/hookline/hookline/pkg/store"
)

// settleInterval is how often replay items are settled, at the most (see
// [service.settleReplays]); settleBatch how many items one statement
// settles.
const (
	settleInterval = 5 * time.Second
	settleBatch    = 1000
)

// unsettledReplaysSQL lists the replays with items queued but not settled,
// one probe of replay_items_unsettled per replay (a loose index scan).
const unsettledReplaysSQL = `
WITH RECURSIVE r AS (
    (SELECT replay_id FROM replay_items WHERE delivery_id IS NOT NULL AND outcome IS NULL ORDER BY replay_id LIMIT 1)
    UNION ALL
    SELECT (SELECT x.replay_id FROM replay_items x
            WHERE x.delivery_id IS NOT NULL AND x.outcome IS NULL AND x.replay_id > r.replay_id
            ORDER BY x.replay_id LIMIT 1)
    FROM r WHERE r.replay_id IS NOT NULL
)
SELECT replay_id FROM r WHERE replay_id IS NOT NULL`

// settleSQL settles up to $2 items of replay $1 whose delivery has reached
// succeeded or dead: it records that outcome on each and adds them to the
// replay's counts, in one statement, so that a read (replayFrom) sees an
// item either among the unsettled, looked up with its delivery, or in the
// replay's counts, never both. Each item's delivery is looked up by key, as
// in replayFrom, so that no statistics can make it a scan of all
// deliveries (the filter's lookup, and again the outcome's for the items
// taken). SKIP LOCKED keeps concurrent settlers (every
// replica runs one) off each other's items; each statement locks the one
// replay row last, as the replay runner does after its item, so they cannot
// deadlock. The items are updated where due found and locked them (ctid:
// a locked row does not move before the statement ends). It returns the
// number of items settled, or no row for none.
const settleSQL = `
WITH due AS (
    SELECT ri.ctid, (SELECT dv.status FROM deliveries dv WHERE dv.id = ri.delivery_id) AS status
      FROM replay_items ri
     WHERE ri.replay_id = $1 AND ri.delivery_id IS NOT NULL AND ri.outcome IS NULL
       AND (SELECT dv.status FROM deliveries dv WHERE dv.id = ri.delivery_id) IN ('succeeded', 'dead')
     LIMIT $2
       FOR UPDATE OF ri SKIP LOCKED
), settled AS (
    UPDATE replay_items ri SET outcome = due.status
      FROM due
     WHERE ri.ctid = due.ctid
    RETURNING ri.outcome
)
UPDATE replays
   SET succeeded = succeeded + (SELECT count(*) FROM settled WHERE outcome = 'succeeded'),
       failed = failed + (SELECT count(*) FROM settled WHERE outcome = 'dead')
 WHERE id = $1 AND EXISTS (SELECT 1 FROM settled)
RETURNING (SELECT count(*) FROM settled)`

// settleReplays settles replay items every settleInterval, or less often
// when a pass is slow (metrics.Paced: a replay whose deliveries are held by
// an open circuit keeps its items unsettled, and each pass reads them),
// until ctx ends.
func (s *service) settleReplays(ctx context.Context) {
	metrics.Paced(ctx, settleInterval, func(ctx context.Context) {
		if err := s.settleOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("settle replay items", "err", err)
		}
	})
}

// settleOnce settles every settleable item of every replay.
func (s *service) settleOnce(ctx context.Context) error {
	replays, err := s.unsettledReplays(ctx)
	if err != nil {
		return err
	}
	for _, id := range replays {
		for {
			n, err := s.settle(ctx, id)
			if err != nil {
				return err
			}
			if n < settleBatch {
				break
			}
		}
	}
	return nil
}

// unsettledReplays runs unsettledReplaysSQL, through the partial index
// whatever the statistics (store.ReadByIndex: it has no parameters, and a
// plan made while replay_items was empty would read it whole every pass).
func (s *service) unsettledReplays(ctx context.Context) ([]string, error) {
	replays, err := store.StringsByIndex(ctx, s.pool, unsettledReplaysSQL)
	if err != nil {
		return nil, fmt.Errorf("list replays with unsettled items: %w", err)
	}
	return replays, nil
}

// settle settles up to settleBatch items of replay id and returns how many.
func (s *service) settle(ctx context.Context, id string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var n int64
	err := s.pool.QueryRow(ctx, settleSQL, id, settleBatch).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("settle items of replay %s: %w", id, err)
	}
	return n, nil
}
