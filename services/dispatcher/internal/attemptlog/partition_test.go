package attemptlog

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/pgtest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

func insertAttempt(t *testing.T, db DB, delivery string, at time.Time) {
	t.Helper()
	if _, err := db.Exec(t.Context(), `
INSERT INTO attempts (delivery_id, attempt, tenant_id, event_id, endpoint_id, started_at, duration_ms, succeeded)
VALUES ($1, 1, 'acme', 'evt_1', 'ep_1', $2, 5, true)`, delivery, at); err != nil {
		t.Fatal(err)
	}
}

// partitionOf returns the partition holding delivery's attempt.
func partitionOf(t *testing.T, db DB, delivery string) string {
	t.Helper()
	rows, err := db.Query(t.Context(), `SELECT tableoid::regclass::text FROM attempts WHERE delivery_id = $1`, delivery)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if len(names) != 1 {
		return fmt.Sprintf("%d rows in %v", len(names), names)
	}
	return names[0]
}

func partitions(t *testing.T, db DB) []string {
	t.Helper()
	rows, err := db.Query(t.Context(), `
		SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'attempts'::regclass ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	return names
}

func TestPartitionsCreatedAheadAndDefaultRowsMoved(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := t.Context()
	now := time.Date(2026, 11, 22, 23, 59, 0, 0, time.UTC)

	// Written before its day's partition existed: lands in attempts_default.
	insertAttempt(t, pool, "dlv_early", now.Add(2*time.Hour))
	if got := partitionOf(t, pool, "dlv_early"); got != "attempts_default" {
		t.Fatalf("row before partitioning in %s", got)
	}
	for range 2 { // idempotent
		if err := EnsurePartitions(ctx, pool, now, 2); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"attempts_default", "attempts_p20261122", "attempts_p20261123", "attempts_p20261124"}
	if got := partitions(t, pool); !slices.Equal(got, want) {
		t.Fatalf("partitions %v, want %v", got, want)
	}
	if got := partitionOf(t, pool, "dlv_early"); got != "attempts_p20261123" {
		t.Fatalf("row not moved out of the default partition: in %s", got)
	}
	insertAttempt(t, pool, "dlv_today", now)
	if got := partitionOf(t, pool, "dlv_today"); got != "attempts_p20261122" {
		t.Fatalf("today's row in %s", got)
	}
}

func TestRetentionDropsWholePartitions(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := t.Context()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	day := func(d int) time.Time { return now.AddDate(0, 0, d) }
	for _, d := range []int{-40, -31, -30, -29} {
		if err := EnsurePartitions(ctx, pool, day(d), 0); err != nil {
			t.Fatal(err)
		}
	}
	insertAttempt(t, pool, "dlv_40", day(-40))
	insertAttempt(t, pool, "dlv_31", day(-31))
	// 30 days and 1 hour old, but its day (Oct 23) also holds rows younger
	// than 30 days: the partition stays until all of them are older.
	insertAttempt(t, pool, "dlv_30", day(-30).Add(-time.Hour))
	insertAttempt(t, pool, "dlv_29", day(-29))
	insertAttempt(t, pool, "dlv_default_old", day(-50)) // no partition: in attempts_default
	insertAttempt(t, pool, "dlv_default_new", day(9))

	w := New(pool, nil, slog.New(slog.DiscardHandler))
	w.Retention = 30 * 24 * time.Hour
	if err := w.Maintain(ctx, now); err != nil {
		t.Fatal(err)
	}
	got := partitions(t, pool)
	want := []string{"attempts_default", "attempts_p20261023", "attempts_p20261024", "attempts_p20261122", "attempts_p20261123", "attempts_p20261124"}
	if !slices.Equal(got, want) {
		t.Fatalf("partitions after retention %v, want %v", got, want)
	}
	var left []string
	rows, err := pool.Query(ctx, `SELECT delivery_id FROM attempts ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		left = append(left, id)
	}
	if want := []string{"dlv_29", "dlv_30", "dlv_default_new"}; !slices.Equal(left, want) {
		t.Fatalf("rows left %v, want %v", left, want)
	}
	// Running again changes nothing.
	if err := w.Maintain(ctx, now); err != nil {
		t.Fatal(err)
	}
	if again := partitions(t, pool); !slices.Equal(again, want) && !slices.Equal(again, got) {
		t.Fatalf("second run changed partitions: %v", again)
	}
}

// A dispatcher that died after publishing an outcome repeats the attempt
// with a new start time; the attempt is still recorded once, also when two
// writers hold the two outcomes at the same time.
func TestRepeatedAttemptRecordedOnce(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := t.Context()
	if err := EnsurePartitions(ctx, pool, time.Now(), 1); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Hour)
	mk := func(delivery string, at time.Time) *hooklinev1.AttemptOutcome {
		return &hooklinev1.AttemptOutcome{
			DeliveryId: delivery, TenantId: "acme", EventId: "evt_" + delivery, EndpointId: "ep_1", Attempt: 1,
			StartedAt: timestamppb.New(at), DurationMs: 3, StatusCode: 500, Error: "status 500",
			Status: hooklinev1.DeliveryStatus_DELIVERY_STATUS_PENDING,
		}
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		d := "dlv_" + string(rune('a'+i))
		for j := range 2 {
			wg.Go(func() {
				errs <- Store(ctx, pool, []*hooklinev1.AttemptOutcome{mk(d, base.Add(time.Duration(j)*3*time.Minute))})
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var rows, distinct int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT delivery_id) FROM attempts`).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != n || distinct != n {
		t.Fatalf("%d attempt rows for %d deliveries, want one each", rows, distinct)
	}
}

// The writer's attempts lookups use the primary key however fast a day's
// partition fills: not, as PostgreSQL planned them before the partition had
// statistics, every attempt of the endpoint that day for each new one. The
// lookups find nothing here, so a batch reads next to no tuples.
func TestAttemptLookupsStayCheapAsPartitionFills(t *testing.T) {
	t.Parallel()
	_, dbURL := pgtest.NewPool(t)
	ctx := t.Context()
	pool := oneConnPool(t, dbURL) // one connection, whose plans are cached
	other, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	now := time.Now().UTC()
	if err := EnsurePartitions(ctx, pool, now, 1); err != nil {
		t.Fatal(err)
	}
	part := PartitionName(now)
	w := New(pool, nil, slog.New(slog.DiscardHandler))
	// Batches as the writer takes them at load, more of them than the five
	// custom plans PostgreSQL makes before it may cache a generic one.
	for i := range 8 {
		if err := w.record(ctx, succeeded(now, fmt.Sprintf("warm%d_", i), 300)); err != nil {
			t.Fatal(err)
		}
	}
	// The rest of a busy morning, faster than autovacuum notices.
	bulkAttempts(t, pool, part, "bulk", 20000, now)
	read := func() int64 {
		t.Helper()
		flushStats(t, pool)
		var n int64
		if err := other.QueryRow(ctx, `
SELECT coalesce((SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = $1), 0)
     + coalesce((SELECT sum(idx_tup_read) FROM pg_stat_user_indexes WHERE relname = $1), 0)`, part).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := read()
	if err := w.record(ctx, succeeded(now, "late", 300)); err != nil {
		t.Fatal(err)
	}
	if got := read() - before; got > 2000 {
		t.Fatalf("a batch of 300 attempts read %d tuples of a partition of 22,400: not a key lookup each", got)
	}
}

// A writer analyzes a partition only while it needs it: a second writer
// (another replica, or one restarted) storing its own first rows does not
// analyze a partition analyzed since and grown little, and does once it
// has grown by half.
func TestWritersAnalyzeAPartitionOnlyAsItGrows(t *testing.T) {
	t.Parallel()
	_, dbURL := pgtest.NewPool(t)
	ctx := t.Context()
	pool := oneConnPool(t, dbURL) // so that the test can make the writes' counts reach the server
	now := time.Now().UTC()
	if err := EnsurePartitions(ctx, pool, now, 1); err != nil {
		t.Fatal(err)
	}
	part := PartitionName(now)
	// Only the writers and the test analyze it, so that the counts below
	// are theirs.
	if _, err := pool.Exec(ctx, "ALTER TABLE "+part+" SET (autovacuum_enabled = false)"); err != nil {
		t.Fatal(err)
	}
	analyzed := func() int64 {
		t.Helper()
		var n int64
		if err := pool.QueryRow(ctx, `SELECT pg_stat_get_analyze_count(to_regclass($1))`, part).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	first := New(pool, nil, slog.New(slog.DiscardHandler))
	if err := first.record(ctx, succeeded(now, "a", 400)); err != nil {
		t.Fatal(err)
	}
	if n := analyzed(); n != 1 {
		t.Fatalf("analyzed %d times after the first writer's 400 rows, want 1", n)
	}
	// Analyzed by someone else (autovacuum, another replica) once the
	// first writer's rows are counted: the changes since are 0 now.
	flushStats(t, pool)
	if _, err := pool.Exec(ctx, "ANALYZE "+part); err != nil {
		t.Fatal(err)
	}
	second := New(pool, nil, slog.New(slog.DiscardHandler))
	if err := second.record(ctx, succeeded(now, "b", 150)); err != nil {
		t.Fatal(err)
	}
	flushStats(t, pool)
	if n := analyzed(); n != 2 {
		t.Fatalf("analyzed %d times after a second writer's 150 rows on a partition of 400, want 2 (the first writer's and the other one)", n)
	}
	// Other writers' rows, which the second does not count.
	bulkAttempts(t, pool, part, "other", 100, now)
	flushStats(t, pool)
	if err := second.record(ctx, succeeded(now, "c", 60)); err != nil { // its count passes 200
		t.Fatal(err)
	}
	if n := analyzed(); n != 3 {
		t.Fatalf("analyzed %d times once 250 rows came after an ANALYZE of 400, want 3", n)
	}
}

// oneConnPool is a pool of one connection to dbURL: every statement of a
// test runs on it, with its cached plans and its not yet reported stats.
func oneConnPool(t *testing.T, dbURL string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// flushStats makes the connection of a one-connection pool report its
// table statistics to the server now (it does so at most once a second).
func flushStats(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for _, q := range []string{`SELECT pg_stat_force_next_flush()`, `SELECT 1`} {
		if _, err := pool.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
}

// succeeded returns n successful first attempts to ep_1 at at, each of its
// own delivery and event named after prefix.
func succeeded(at time.Time, prefix string, n int) []*hooklinev1.AttemptOutcome {
	outs := make([]*hooklinev1.AttemptOutcome, n)
	for i := range outs {
		d := fmt.Sprintf("dlv_%s%d", prefix, i)
		outs[i] = &hooklinev1.AttemptOutcome{
			DeliveryId: d, TenantId: "acme", EventId: "evt_" + d, EndpointId: "ep_1", Attempt: 1,
			StartedAt: timestamppb.New(at), DurationMs: 3, StatusCode: 200, Succeeded: true,
			Status: hooklinev1.DeliveryStatus_DELIVERY_STATUS_SUCCEEDED,
		}
	}
	return outs
}

// bulkAttempts inserts n attempts to ep_1 at at straight into partition,
// as other writers would, unseen by any Writer's counts.
func bulkAttempts(t *testing.T, db DB, partition, prefix string, n int, at time.Time) {
	t.Helper()
	if _, err := db.Exec(t.Context(), fmt.Sprintf(`
INSERT INTO %s (delivery_id, attempt, tenant_id, event_id, endpoint_id, started_at, duration_ms, succeeded)
SELECT 'dlv_%s' || g, 1, 'acme', 'evt_%s' || g, 'ep_1', $1, 5, true FROM generate_series(1, $2::int) g`, partition, prefix, prefix), at, n); err != nil {
		t.Fatal(err)
	}
}
