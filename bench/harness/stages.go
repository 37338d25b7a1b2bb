package harness

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Stages splits the latency of a scenario's deliveries by where the time
// went, from what the pipeline stores about each event and what the
// receiver saw. Each stage is the time from one moment to the next:
//
//   - Accept: the (scheduled) send → the event's accepted_at: the load
//     generator's own queue, the HTTP request and ingest up to accepting it.
//   - Fanout: accepted_at → the start of the statement that wrote its
//     deliveries row: ingest's insert and commit, the 202, the publish,
//     JetStream and fan-out's work up to that statement.
//   - Dispatch: that statement's start → the start of the attempt that
//     succeeded (fan-out publishes the delivery while the row is written,
//     then JetStream and the dispatcher).
//   - Deliver: the attempt's start → its arrival at the receiver (building,
//     signing and sending the request; the receiver's read).
//
// Every machine clock involved is this host's. P50 and P99 are of each
// stage on its own, so they do not add up to the end-to-end percentiles.
type Stages struct {
	N                                 int // deliveries split
	Accept, Fanout, Dispatch, Deliver StagePct
}

// StagePct is one stage's median and 99th percentile.
type StagePct struct{ P50, P99 time.Duration }

// stagesSQL reads, for each event of one run of a tenant, its send time (the
// load generator's, in the data), its acceptance, its deliveries row's
// creation (now() of fan-out's statement), the start of its first
// successful attempt and, where PostgreSQL tracks commit timestamps
// (track_commit_timestamp=on, off by default), the commit of the event's
// insert (the events row is never updated, so its xmin is that transaction;
// the deliveries row is, by the attempt log). The joins are LATERAL (the
// first kept a subquery by OFFSET 0), so each is an index lookup per event
// whatever the planner's statistics say: they were taken before the
// scenario, when the tenant had no rows, and a plain join was then planned
// as a nested loop that read all of the tenant's deliveries rows for each of
// its events (no answer within a minute at 20,000 events; 0.6 s this way).
const stagesSQL = `
SELECT (e.data->>'bench_seq')::bigint,
       (e.data->>'bench_sent')::bigint,
       e.accepted_at, d.created_at, a.started_at,
       CASE WHEN current_setting('track_commit_timestamp')::bool
            THEN pg_xact_commit_timestamp(e.xmin) END
FROM events e
CROSS JOIN LATERAL (
    SELECT id, endpoint_id, created_at FROM deliveries
    WHERE tenant_id = e.tenant_id AND event_id = e.id OFFSET 0) d
CROSS JOIN LATERAL (
    SELECT started_at FROM attempts
    WHERE tenant_id = e.tenant_id AND event_id = e.id AND endpoint_id = d.endpoint_id
      AND delivery_id = d.id AND succeeded
    ORDER BY started_at LIMIT 1) a
WHERE e.tenant_id = $1 AND (e.data->>'bench_run')::bigint = $2`

// stageRow is one delivery's moments. committed is zero unless PostgreSQL
// tracks commit timestamps.
type stageRow struct {
	seq                                                 int64
	sent, accepted, committed, fanned, started, arrived time.Time
}

// stages reads the moments of the deliveries of tenant's run t to its one
// healthy endpoint (index 0), those that arrived.
func (d *database) stages(ctx context.Context, tenant string, t *tracker) ([]stageRow, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.url)
	if err != nil {
		return nil, fmt.Errorf("connect to split latency by stage: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, stagesSQL, tenant, t.run)
	if err != nil {
		return nil, fmt.Errorf("read the moments of each delivery: %w", err)
	}
	var rs []stageRow
	for rows.Next() {
		var (
			sent      int64
			committed *time.Time
			r         stageRow
		)
		if err := rows.Scan(&r.seq, &sent, &r.accepted, &r.fanned, &r.started, &committed); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read the moments of each delivery: %w", err)
		}
		if committed != nil {
			r.committed = *committed
		}
		at, ok := t.arrival(r.seq, 0)
		if !ok {
			// Not arrived: nothing to split.
			continue
		}
		r.sent, r.arrived = time.Unix(0, sent), at
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the moments of each delivery: %w", err)
	}
	return rs, nil
}

// writeStages writes rs to path as CSV, one line per delivery in send
// order: its sequence number and each moment in microseconds since the Unix
// epoch (committed empty where PostgreSQL does not track commit
// timestamps). For looking at single deliveries, such as which stage a
// stalled one waited in and what else was late at that moment.
func writeStages(path string, rs []stageRow) error {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b stageRow) int { return a.sent.Compare(b.sent) })
	var b strings.Builder
	b.WriteString("seq,sent_us,accepted_us,committed_us,fanned_out_us,attempt_started_us,arrived_us\n")
	us := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return strconv.FormatInt(t.UnixMicro(), 10)
	}
	for _, r := range rs {
		fmt.Fprintf(&b, "%d,%s,%s,%s,%s,%s,%s\n", r.seq, us(r.sent), us(r.accepted), us(r.committed), us(r.fanned), us(r.started), us(r.arrived))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write the moments of each delivery: %w", err)
	}
	return nil
}

// splitStages computes the percentiles of each stage of rs.
func splitStages(rs []stageRow) Stages {
	s := Stages{N: len(rs)}
	if len(rs) == 0 {
		return s
	}
	pct := func(from, to func(stageRow) time.Time) StagePct {
		v := make([]time.Duration, len(rs))
		for i, r := range rs {
			v[i] = to(r).Sub(from(r))
		}
		slices.Sort(v)
		return StagePct{P50: percentile(v, 0.50), P99: percentile(v, 0.99)}
	}
	sent := func(r stageRow) time.Time { return r.sent }
	accepted := func(r stageRow) time.Time { return r.accepted }
	fanned := func(r stageRow) time.Time { return r.fanned }
	started := func(r stageRow) time.Time { return r.started }
	arrived := func(r stageRow) time.Time { return r.arrived }
	s.Accept = pct(sent, accepted)
	s.Fanout = pct(accepted, fanned)
	s.Dispatch = pct(fanned, started)
	s.Deliver = pct(started, arrived)
	return s
}

// medianStages combines the stages of several rounds: each figure is the
// median of the rounds that split any delivery.
func medianStages(rs []Result) Stages {
	var split []Stages
	for _, r := range rs {
		if r.Stages.N > 0 {
			split = append(split, r.Stages)
		}
	}
	if len(split) == 0 {
		return Stages{}
	}
	d := func(get func(Stages) time.Duration) time.Duration {
		v := make([]float64, len(split))
		for i, s := range split {
			v[i] = float64(get(s))
		}
		return time.Duration(medianOf(v))
	}
	out := Stages{}
	for _, s := range split {
		out.N += s.N
	}
	for _, st := range []struct {
		dst *StagePct
		get func(Stages) StagePct
	}{
		{&out.Accept, func(s Stages) StagePct { return s.Accept }},
		{&out.Fanout, func(s Stages) StagePct { return s.Fanout }},
		{&out.Dispatch, func(s Stages) StagePct { return s.Dispatch }},
		{&out.Deliver, func(s Stages) StagePct { return s.Deliver }},
	} {
		st.dst.P50 = d(func(s Stages) time.Duration { return st.get(s).P50 })
		st.dst.P99 = d(func(s Stages) time.Duration { return st.get(s).P99 })
	}
	return out
}

// fmtStage formats a stage's duration; a stage can take no time, or less
// than none between two clocks' readings a few microseconds apart.
func fmtStage(d time.Duration) string {
	if d <= 0 {
		return "0ms"
	}
	return fmtDur(d)
}

// stageLine describes s in one line.
func stageLine(s Stages) string {
	f := func(plus string, p StagePct) string { return plus + fmtStage(p.P50) + " / " + plus + fmtStage(p.P99) }
	return fmt.Sprintf("accepted %s, fanned out %s, attempt started %s, arrived %s",
		f("", s.Accept), f("+", s.Fanout), f("+", s.Dispatch), f("+", s.Deliver))
}
