package attemptlog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Querier runs a query; *pgxpool.Pool implements it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// settledSQL finds the deliveries whose first attempt the attempt log has
// recorded and that need nothing more from whoever attempted them: those
// that succeeded, and those still pending after an attempt (their retry
// was stored before the outcome was published, so the retry scheduler owns
// them). A dead one is not among them: its outcome is published before its
// dead letter, so the dead letter may be missing.
const settledSQL = `
SELECT id FROM deliveries
WHERE id = ANY($1) AND (status = 'succeeded' OR (status = 'pending' AND attempts > 0))`

// Settled returns which of the deliveries ids the attempt log shows as
// settled (see settledSQL): a dispatcher handling a redelivered message of
// several deliveries skips them instead of sending them again.
func Settled(ctx context.Context, db Querier, ids []string) (map[string]bool, error) {
	rows, err := db.Query(ctx, settledSQL, ids)
	if err != nil {
		return nil, fmt.Errorf("look up %d deliveries' status: %w", len(ids), err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("look up %d deliveries' status: %w", len(ids), err)
	}
	out := make(map[string]bool, len(found))
	for _, id := range found {
		out[id] = true
	}
	return out, nil
}
