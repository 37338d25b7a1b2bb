package controlplane

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/pgtest"
)

// TestListAttemptsReadsOnlyItsPage: a page of an endpoint's attempt log
// reads about as many attempts as it returns, under a generic plan too
// (what pgx's cached statement gets from its sixth execution on), however
// deep the cursor or far back the until bound.
func TestListAttemptsReadsOnlyItsPage(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := t.Context()
	// 5,000 attempts a second apart (in the default partition: no day
	// partition is created here); every other one succeeded.
	if _, err := pool.Exec(ctx, `
INSERT INTO attempts (delivery_id, attempt, tenant_id, event_id, endpoint_id, started_at, duration_ms, succeeded)
SELECT 'dlv_' || lpad(i::text, 5, '0'), 1, 'acme', 'evt_' || lpad(i::text, 5, '0'), 'ep_1',
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second', 5, i % 2 = 0
FROM generate_series(1, 5000) i;
ANALYZE attempts`); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(i int) *time.Time { v := base.Add(time.Duration(i) * time.Second); return &v }
	dlv := func(i int) string { return fmt.Sprintf("dlv_%05d", i) }
	var none *time.Time
	var either *bool
	yes := true
	cases := []struct {
		name string
		args []any
		want []string
	}{
		{"newest", []any{"ep_1", "acme", either, none, none, none, "", 0, 3}, []string{dlv(5000), dlv(4999), dlv(4998)}},
		{"deep cursor", []any{"ep_1", "acme", either, none, none, at(200), dlv(200), 1, 3}, []string{dlv(199), dlv(198), dlv(197)}},
		{"until long ago", []any{"ep_1", "acme", either, none, at(101), none, "", 0, 3}, []string{dlv(100), dlv(99), dlv(98)}},
		{"since and until", []any{"ep_1", "acme", either, at(50), at(52), none, "", 0, 3}, []string{dlv(51), dlv(50)}},
		{"succeeded, deep cursor", []any{"ep_1", "acme", &yes, none, none, at(200), dlv(200), 1, 2}, []string{dlv(198), dlv(196)}},
	}
	for _, c := range cases {
		if got := pgtest.FirstColumn(t, pool, listAttemptsSQL, c.args...); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
		if n := pgtest.GenericPlanRowsRead(t, pool, "attempts_default", listAttemptsSQL, c.args...); n > 10 {
			t.Errorf("%s: read %d attempts under a generic plan for a page of %d", c.name, n, len(c.want))
		}
	}
}
