package store_test

import (
	"log/slog"
	"testing"

	"github.com/hookline/hookline/pkg/pgtest"
	"github.com/hookline/hookline/pkg/store"
)

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t) // migrated once already
	if err := store.Migrate(t.Context(), url); err != nil {
		t.Fatalf("second migration: %v", err)
	}
	pool, err := store.Open(t.Context(), url, store.Options{Name: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, table := range []string{"tenants", "api_keys", "endpoints", "events", "deliveries", "attempts", "dead_letters", "delivery_retries", "rejected_events"} {
		var n int
		if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Errorf("table %s: %v", table, err)
		}
	}
}
