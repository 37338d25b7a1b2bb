package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// GenericPlanRowsRead runs query with args once under a generic plan, and
// returns how many rows of table it read: those sequential scans read plus
// those index scans fetched from the heap (index-only scans are not
// counted), from pg_stat_xact_user_tables.
//
// A generic plan is what a prepared statement (pgx caches every query as
// one per connection) gets from its sixth execution on when PostgreSQL
// judges it no costlier than the custom plans before. It is planned without
// the parameters' values, so a condition such as ($3 IS NULL OR x < $3)
// cannot bound an index scan there: it is a filter, and the scan reads
// every row the other bounds allow. The query runs in a transaction that is
// rolled back, with plan_cache_mode = force_generic_plan.
func GenericPlanRowsRead(t testing.TB, pool *pgxpool.Pool, table, query string, args ...any) int64 {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SET LOCAL plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatalf("force a generic plan: %v", err)
	}
	// The view holds the backend's counts not yet flushed to the shared
	// statistics (on PostgreSQL 15, earlier transactions' too): count the
	// difference.
	before := RowsRead(t, tx, table)
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		t.Fatalf("run the query: %v", err)
	}
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("run the query: %v", err)
	}
	return RowsRead(t, tx, table) - before
}

// RowsRead returns how many rows of table tx's backend has read so far (see
// [GenericPlanRowsRead]); the difference of two calls in one transaction is
// what the statements between them read.
func RowsRead(t testing.TB, tx pgx.Tx, table string) int64 {
	t.Helper()
	var n int64
	if err := tx.QueryRow(context.Background(), `SELECT coalesce(sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)), 0)
FROM pg_stat_xact_user_tables WHERE relname = $1`, table).Scan(&n); err != nil {
		t.Fatalf("read the rows read from %s: %v", table, err)
	}
	return n
}

// FirstColumn runs query with args and returns the first column of its
// rows, which must be text.
func FirstColumn(t testing.TB, pool *pgxpool.Pool, query string, args ...any) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), query, args...)
	if err != nil {
		t.Fatalf("run the query: %v", err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var first string
		dest := make([]any, len(r.FieldDescriptions()))
		dest[0] = &first
		for i := 1; i < len(dest); i++ {
			dest[i] = new(any)
		}
		return first, r.Scan(dest...)
	})
	if err != nil {
		t.Fatalf("read the query's rows: %v", err)
	}
	return got
}
