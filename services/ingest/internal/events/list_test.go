package events

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/pgtest"
)

// TestListEventsReadsOnlyItsPage: a page of the event list reads about as
// many events as it returns, under a generic plan too (what pgx's cached
// statement gets from its sixth execution on), however deep the cursor or
// far back the until bound, with and without a type.
func TestListEventsReadsOnlyItsPage(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := t.Context()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// 5,000 events a second apart; every 100th is of a rare type.
	if _, err := pool.Exec(ctx, `
INSERT INTO tenants (id, name) VALUES ('acme', 'acme');
INSERT INTO events (tenant_id, id, type, data, accepted_at, published)
SELECT 'acme', 'evt_' || lpad(i::text, 5, '0'), CASE WHEN i % 100 = 0 THEN 'rare.kind' ELSE 'common.kind' END,
       '{}', timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second', true
FROM generate_series(1, 5000) i;
ANALYZE events`); err != nil {
		t.Fatal(err)
	}
	at := func(i int) time.Time { return base.Add(time.Duration(i) * time.Second) }
	id := func(i int) string { return fmt.Sprintf("evt_%05d", i) }
	deepCursor, deepID := at(200), id(200)
	var none *time.Time
	var noID *string
	cases := []struct {
		name  string
		query string
		args  []any
		want  []string
	}{
		{"newest", listEventsSQL, []any{"acme", none, none, none, noID, 3}, []string{id(5000), id(4999), id(4998)}},
		{"deep cursor", listEventsSQL, []any{"acme", none, none, &deepCursor, &deepID, 3}, []string{id(199), id(198), id(197)}},
		{"until long ago", listEventsSQL, []any{"acme", none, ptr(at(101)), none, noID, 3}, []string{id(100), id(99), id(98)}},
		{"since and until", listEventsSQL, []any{"acme", ptr(at(50)), ptr(at(52)), none, noID, 3}, []string{id(51), id(50)}},
		{"type, deep cursor", listEventsOfTypeSQL, []any{"acme", none, none, &deepCursor, &deepID, 3, "rare.kind"}, []string{id(100)}},
		{"type, newest", listEventsOfTypeSQL, []any{"acme", none, none, none, noID, 2, "rare.kind"}, []string{id(5000), id(4900)}},
	}
	for _, c := range cases {
		if got := pgtest.FirstColumn(t, pool, c.query, c.args...); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
		if n := pgtest.GenericPlanRowsRead(t, pool, "events", c.query, c.args...); n > 10 {
			t.Errorf("%s: read %d events under a generic plan for a page of %d", c.name, n, len(c.want))
		}
	}
}

func ptr[T any](v T) *T { return &v }
