package deadletter

import (
	"fmt"
	"testing"

	"github.com/hookline/hookline/pkg/pgtest"
)

// TestReplayItemsReadOnlyTheirBatch: the runner's next batch of a replay
// reads about as many items as it returns, however many it has handled
// before (under a generic plan too), and it starts after the cursor.
func TestReplayItemsReadOnlyTheirBatch(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := t.Context()
	// A replay of 3,000 dead letters whose first 2,900 are handled.
	if _, err := pool.Exec(ctx, `
INSERT INTO tenants (id, name) VALUES ('acme', 'acme');
INSERT INTO replays (id, tenant_id, created_by) VALUES ('rpl_1', 'acme', 'test');
INSERT INTO replay_items (replay_id, dead_letter_id, done_at)
SELECT 'rpl_1', 'dl_' || lpad(i::text, 5, '0'), CASE WHEN i <= 2900 THEN now() END FROM generate_series(1, 3000) i;
ANALYZE replay_items`); err != nil {
		t.Fatal(err)
	}
	after := fmt.Sprintf("dl_%05d", 2900)
	if n := pgtest.GenericPlanRowsRead(t, pool, "replay_items", nextItemsSQL, "rpl_1", itemBatch, after); n > itemBatch+10 {
		t.Errorf("the batch after the 2,900 handled items read %d items, want about %d", n, itemBatch)
	}
	items := pgtest.FirstColumn(t, pool, nextItemsSQL, "rpl_1", itemBatch, fmt.Sprintf("dl_%05d", 2950))
	var first string
	if len(items) > 0 {
		first = items[0]
	}
	if n := len(items); first != "dl_02951" || n != 50 {
		t.Errorf("after dl_02950: %d items from %q, want 50 from dl_02951", n, first)
	}
}
