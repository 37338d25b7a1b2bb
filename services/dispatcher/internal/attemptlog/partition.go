package attemptlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// partitionPrefix names the daily partitions: attempts_p20261122 holds the
// attempts started on 2026-11-22 (UTC).
const partitionPrefix = "attempts_p"

// partitionLock is the advisory lock that serialises partition maintenance
// across replicas (concurrent CREATE TABLE IF NOT EXISTS can still collide).
const partitionLock = 7_365_020_401

// PartitionName is the name of the partition holding day's attempts.
func PartitionName(day time.Time) string {
	return partitionPrefix + day.UTC().Format("20060102")
}

// partitionDay parses a partition's name back to its day.
func partitionDay(name string) (time.Time, bool) {
	s, ok := strings.CutPrefix(name, partitionPrefix)
	if !ok || len(s) != 8 {
		return time.Time{}, false
	}
	d, err := time.Parse("20060102", s)
	return d, err == nil
}

func dayOf(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// EnsurePartitions creates the partitions of now's day and the ahead days
// after it, unless they exist. Rows of a day that had landed in
// attempts_default (written before its partition existed) move into it.
func EnsurePartitions(ctx context.Context, db Beginner, now time.Time, ahead int) error {
	today := dayOf(now)
	for i := 0; i <= ahead; i++ {
		if err := ensurePartition(ctx, db, today.AddDate(0, 0, i)); err != nil {
			return err
		}
	}
	return nil
}

func ensurePartition(ctx context.Context, db Beginner, day time.Time) error {
	name := PartitionName(day)
	from, to := day, day.AddDate(0, 0, 1)
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create partition %s: begin: %w", name, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil {
		return fmt.Errorf("look up partition %s: %w", name, err)
	}
	if exists {
		return nil
	}
	// Creating a partition locks the parent briefly; rather give up and
	// retry at the next maintenance than queue every writer behind it.
	steps := []struct {
		what string
		sql  string
		args []any
	}{
		{"set lock timeout", `SET LOCAL lock_timeout = '3s'`, nil},
		{"take maintenance lock", `SELECT pg_advisory_xact_lock($1)`, []any{int64(partitionLock)}},
		{"lock attempts", `LOCK TABLE attempts IN ACCESS EXCLUSIVE MODE`, nil},
		{"make room for default rows", `CREATE TEMP TABLE attempts_moving (LIKE attempts) ON COMMIT DROP`, nil},
		{"take default rows", `WITH m AS (DELETE FROM attempts_default WHERE started_at >= $1 AND started_at < $2 RETURNING *)
			INSERT INTO attempts_moving SELECT * FROM m`, []any{from, to}},
		// DDL takes no parameters; the bounds are formatted by Go, not
		// taken from input.
		{"create", fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF attempts FOR VALUES FROM ('%s') TO ('%s')`,
			pgx.Identifier{name}.Sanitize(), from.Format(time.RFC3339), to.Format(time.RFC3339)), nil},
		{"move default rows", `INSERT INTO attempts SELECT * FROM attempts_moving`, nil},
	}
	for _, s := range steps {
		if _, err := tx.Exec(ctx, s.sql, s.args...); err != nil {
			return fmt.Errorf("create partition %s: %s: %w", name, s.what, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create partition %s: commit: %w", name, err)
	}
	return nil
}

// DropExpired drops the partitions whose every row started before
// now - retention, deletes such rows from attempts_default (where only rows
// written before their day's partition existed live), and returns the
// dropped partitions' names.
func DropExpired(ctx context.Context, db DB, now time.Time, retention time.Duration) ([]string, error) {
	if retention <= 0 {
		return nil, errors.New("drop expired attempts: retention must be positive")
	}
	cutoff := now.Add(-retention)
	rows, err := db.Query(ctx, `
		SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'attempts'::regclass`)
	if err != nil {
		return nil, fmt.Errorf("list attempt partitions: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list attempt partitions: %w", err)
	}
	var dropped []string
	for _, name := range names {
		day, ok := partitionDay(name)
		if !ok || day.AddDate(0, 0, 1).After(cutoff) {
			continue
		}
		if err := dropPartition(ctx, db, name); err != nil {
			return dropped, err
		}
		dropped = append(dropped, name)
	}
	if _, err := db.Exec(ctx, `DELETE FROM attempts_default WHERE started_at < $1`, cutoff); err != nil {
		return dropped, fmt.Errorf("delete expired attempts from attempts_default: %w", err)
	}
	return dropped, nil
}

func dropPartition(ctx context.Context, db Beginner, name string) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("drop partition %s: begin: %w", name, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for _, q := range []string{
		`SET LOCAL lock_timeout = '3s'`,
		fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d)`, int64(partitionLock)),
		`DROP TABLE IF EXISTS ` + pgx.Identifier{name}.Sanitize(),
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("drop partition %s: %w", name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("drop partition %s: commit: %w", name, err)
	}
	return nil
}
