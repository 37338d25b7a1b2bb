//go:build scale

package deadletter

// The million-row listing test. Run it with
//
//	go test -tags scale -run TestListScale -v -timeout 20m ./services/deadletter/
//
// from the repository root (TEST_DATABASE_URL as for every test). It
// generates 1,000,000 dead letters in a database of its own, then times
// every filter combination of GET /dead-letters through the API's own query
// and prints each plan with EXPLAIN (ANALYZE, BUFFERS).

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/pgtest"
)

// scaleRows is how many dead letters TestListScale generates.
const scaleRows = 1_000_000

// scaleBudget is the slowest a listing may be: "well under a second".
const scaleBudget = 200 * time.Millisecond

func TestListScale(t *testing.T) {
	ctx := t.Context()
	pool, _ := pgtest.NewPool(t)
	now := time.Now()
	start := time.Now()
	if err := generateDeadLetters(ctx, pool, scaleRows); err != nil {
		t.Fatal(err)
	}
	t.Logf("generated %d dead letters in %s", scaleRows, time.Since(start).Round(time.Millisecond))
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE dead_letters`); err != nil {
		t.Fatal(err)
	}

	var report strings.Builder
	fmt.Fprintf(&report, "\n%-40s %8s %8s %6s\n", "filter", "median", "max", "rows")
	var plans strings.Builder
	for _, c := range planCases(now) {
		sql, args := listSQL("acme", c.f, c.cursor, httpapi.DefaultLimit+1)
		var times []time.Duration
		var n int
		// More than five runs: a prepared statement would switch to its
		// generic plan after five.
		for range 9 {
			t0 := time.Now()
			rows, err := pool.Query(ctx, sql, args...)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			n = 0
			for rows.Next() {
				n++
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			times = append(times, time.Since(t0))
		}
		slices.Sort(times)
		med, worst := times[len(times)/2], times[len(times)-1]
		fmt.Fprintf(&report, "%-40s %8s %8s %6d\n", c.name, med.Round(10*time.Microsecond), worst.Round(10*time.Microsecond), n)
		if med > scaleBudget {
			t.Errorf("%s: median %s, want under %s", c.name, med, scaleBudget)
		}
		plan, err := explain(ctx, pool, c, "ANALYZE, BUFFERS")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&plans, "---- %s\n%s", c.name, plan)
	}
	// The dry run of a replay counts what a filter matches.
	for _, c := range []planCase{
		{name: "dry run: reason=expired", f: filter{Reason: "expired"}},
		{name: "dry run: endpoint", f: filter{EndpointID: "ep_42"}},
		{name: "dry run: no filter", f: filter{}},
	} {
		q := deadLetterQuery("acme", c.f)
		t0 := time.Now()
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters WHERE `+q.where(), q.argsCustomPlan()...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&report, "%-40s %8s %8s %6d\n", c.name, time.Since(t0).Round(10*time.Microsecond), "", n)
	}
	t.Log(report.String())
	t.Log("\n" + plans.String())
}
