package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Beginner starts transactions; *pgxpool.Pool implements it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// ReadByIndex runs read in a transaction, rolled back afterwards, in which
// the planner keeps off sequential scans (SET LOCAL enable_seqscan = off).
//
// It is for statements without parameters that run in the background and
// read a partial index of a large table. pgx prepares every statement once
// per connection, and PostgreSQL plans one without parameters at its first
// run and keeps that plan until the tables' statistics change. Planned while
// the table was empty (a new installation, a service started before any
// traffic), such a statement would scan the whole table at every run, as it
// grows, for as long as nothing analyzes it (docs/architecture.md).
func ReadByIndex(ctx context.Context, db Beginner, read func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT set_config('enable_seqscan', 'off', true)`); err != nil {
		return fmt.Errorf("keep off sequential scans: %w", err)
	}
	return read(tx)
}

// StringsByIndex runs query, whose rows are one text column, in
// [ReadByIndex] and returns them.
func StringsByIndex(ctx context.Context, db Beginner, query string) ([]string, error) {
	var out []string
	err := ReadByIndex(ctx, db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, query)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return out, err
}
