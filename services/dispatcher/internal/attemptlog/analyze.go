package attemptlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// A day's partition starts empty, and PostgreSQL has no statistics of it
// until autovacuum analyzes it, which may take minutes after it starts
// filling (a minute at the least; the benchmark's databases never got
// there). Without them the planner takes endpoint_id to be selective, and
// looks each new attempt up (insertAttempts' NOT EXISTS) through
// attempts_endpoint_time rather than the primary key: it reads every
// attempt the endpoint had that day, for each new one. At 2,000 events/s to
// one endpoint that read 135 million index entries for 20,000 attempts and
// took most of PostgreSQL's CPU.
//
// So the writer analyzes a partition itself while it fills: when the rows
// it stored there reach analyzeFirst, and again each time they double,
// until analyzeLast; autovacuum keeps the statistics from there on. Each
// time it first asks whether the partition still needs it: never analyzed,
// or changed since its last ANALYZE (by whoever ran it) by at least half
// the rows it had then (half: the count of changes reaches the server up to
// a second late). A replica that starts late in the day, or one of
// several, so does not analyze a large partition again and again for its
// own first rows (each new dispatcher would, once per doubling of its own
// count: a dozen samples of up to 30,000 rows each that no plan needed). An
// ANALYZE reads a sample of at most 30,000 rows (default_statistics_target
// 100), and invalidates the plans cached on every connection.
const (
	analyzeFirst = 100
	analyzeLast  = 1 << 20
)

// filling counts the rows a writer stored in each day's partition, to
// analyze it as it fills.
type filling struct {
	mu   sync.Mutex
	rows map[string]int64 // partition → rows stored in it
	next map[string]int64 // partition → rows at which it is analyzed next
}

// stored notes that outs were stored and returns the partitions due for
// an ANALYZE.
func (f *filling) stored(outs []*hooklinev1.AttemptOutcome) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rows == nil {
		f.rows, f.next = map[string]int64{}, map[string]int64{}
	}
	var due []string
	for _, o := range outs {
		p := PartitionName(o.GetStartedAt().AsTime())
		n := f.rows[p] + 1
		f.rows[p] = n
		next, ok := f.next[p]
		if !ok {
			next = analyzeFirst
			f.next[p] = next
			f.forgetOld(p)
		}
		if n >= next && next <= analyzeLast {
			if !slices.Contains(due, p) {
				due = append(due, p)
			}
			f.next[p] = 2 * next
		}
	}
	return due
}

// forgetOld drops the counts of partitions other than the newest few: a
// writer runs for weeks, and only today's (or a day either side, for
// outcomes that travelled across midnight) fills.
func (f *filling) forgetOld(newest string) {
	if len(f.rows) <= 4 {
		return
	}
	for p := range f.rows {
		if p < newest && len(f.rows) > 4 {
			delete(f.rows, p)
			delete(f.next, p)
		}
	}
}

// needsAnalyzeSQL tells whether partition $1 exists and has never been
// analyzed (reltuples -1) or has changed by at least half the rows it had
// when last analyzed (or vacuumed), and at least $2.
const needsAnalyzeSQL = `
SELECT c.reltuples < 0 OR coalesce(pg_stat_get_mod_since_analyze(c.oid), 0) >= greatest(c.reltuples / 2, $2)
FROM pg_class c WHERE c.oid = to_regclass($1)`

// analyze refreshes partition's statistics if it needs it (see
// needsAnalyzeSQL). SKIP_LOCKED: another replica analyzing it at the same
// time does the same.
func analyze(ctx context.Context, db DB, partition string) error {
	rows, err := db.Query(ctx, needsAnalyzeSQL, partition, analyzeFirst)
	if err != nil {
		return fmt.Errorf("check statistics of %s: %w", partition, err)
	}
	needs, err := pgx.CollectOneRow(rows, pgx.RowTo[bool])
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil // no partition yet: the rows are in attempts_default
	case err != nil:
		return fmt.Errorf("check statistics of %s: %w", partition, err)
	case !needs:
		return nil
	}
	if _, err := db.Exec(ctx, "ANALYZE (SKIP_LOCKED) "+pgx.Identifier{partition}.Sanitize()); err != nil {
		return fmt.Errorf("analyze %s: %w", partition, err)
	}
	return nil
}
