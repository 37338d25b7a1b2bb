package deadletter

import (
	"log/slog"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hookline/hookline/pkg/pgtest"
)

// TestReplayCountsSettle: a replay's succeeded and failed are exact before
// and after its items are settled, concurrent settlers count each item
// once, and once settled a read looks up only the deliveries still on their way.
func TestReplayCountsSettle(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := t.Context()
	// A replay of 3,000 dead letters, all queued: 2,000 delivered, 500 dead
	// again, 500 still pending; and a dead letter not queued yet.
	if _, err := pool.Exec(ctx, `
INSERT INTO tenants (id, name) VALUES ('acme', 'acme');
INSERT INTO replays (id, tenant_id, created_by, matched, replayed) VALUES ('rpl_1', 'acme', 'test', 3001, 3000);
INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, replay_id)
SELECT 'dlv_' || i, 'acme', 'evt_' || i, 'ep_1',
       CASE WHEN i <= 2000 THEN 'succeeded' WHEN i <= 2500 THEN 'dead' ELSE 'pending' END, 'rpl_1'
  FROM generate_series(1, 3000) i;
INSERT INTO replay_items (replay_id, dead_letter_id, delivery_id, done_at)
SELECT 'rpl_1', 'dl_' || i, 'dlv_' || i, now() FROM generate_series(1, 3000) i;
INSERT INTO replay_items (replay_id, dead_letter_id) VALUES ('rpl_1', 'dl_3001');
ANALYZE replay_items, deliveries`); err != nil {
		t.Fatal(err)
	}
	s := newService(pool, nil, slog.New(slog.DiscardHandler))
	wantCounts(t, s, 2000, 500) // nothing settled: all counted live

	// Two replicas settle at once: each item is counted once.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if err := s.settleOnce(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	wantCounts(t, s, 2000, 500)
	var stored [2]int64
	if err := pool.QueryRow(ctx, `SELECT succeeded, failed FROM replays WHERE id = 'rpl_1'`).Scan(&stored[0], &stored[1]); err != nil {
		t.Fatal(err)
	}
	if stored != [2]int64{2000, 500} {
		t.Errorf("counts kept on the replay after settling: %v, want [2000 500]", stored)
	}
	if n := countReadRows(t, pool); n > 510 {
		t.Errorf("reading the replay after settling read %d rows of deliveries, want the 500 still pending at most", n)
	}

	// Deliveries still on their way arrive later: counted at once (live),
	// and still once after they are settled too.
	if _, err := pool.Exec(ctx, `
UPDATE deliveries SET status = 'succeeded' WHERE id IN (SELECT 'dlv_' || i FROM generate_series(2501, 2600) i);
UPDATE deliveries SET status = 'dead' WHERE id = 'dlv_2601'`); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, s, 2100, 501)
	if err := s.settleOnce(ctx); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, s, 2100, 501)
	if err := s.settleOnce(ctx); err != nil { // nothing left to settle: nothing changes
		t.Fatal(err)
	}
	wantCounts(t, s, 2100, 501)
	if n := countReadRows(t, pool); n > 410 {
		t.Errorf("reading the replay read %d rows of deliveries, want the 399 still pending at most", n)
	}
}

func wantCounts(t *testing.T, s *service, succeeded, failed int) {
	t.Helper()
	rp, err := s.loadReplay(t.Context(), "acme", "rpl_1")
	if err != nil {
		t.Fatal(err)
	}
	if rp.Succeeded != succeeded || rp.Failed != failed {
		t.Errorf("succeeded %d, failed %d; want %d, %d", rp.Succeeded, rp.Failed, succeeded, failed)
	}
}

// countReadRows returns how many rows of deliveries reading replay rpl_1
// read.
func countReadRows(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	ctx := t.Context()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	before := pgtest.RowsRead(t, tx, "deliveries")
	if _, err := scanReplay(tx.QueryRow(ctx, `SELECT `+replayCols+replayFrom+` WHERE r.tenant_id = 'acme' AND r.id = 'rpl_1'`)); err != nil {
		t.Fatal(err)
	}
	return pgtest.RowsRead(t, tx, "deliveries") - before
}
