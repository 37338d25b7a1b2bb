package deadletter

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hookline/hookline/pkg/httpapi"
)

// generateDeadLetters inserts n dead letters with generate_series: 90% in
// tenant acme, 61 endpoints of which one, ep_hot, was down all weekend and
// holds 40% of them (the others 1% each), 20 event types, reasons skewed as in practice
// (70% exhausted … 1% expired), one every 2.6 s back from now (30 days for a
// million), half of them resolved, 1% discarded. The values are hashes of
// the row number, so every run generates the same rows.
func generateDeadLetters(ctx context.Context, pool *pgxpool.Pool, n int) error {
	_, err := pool.Exec(ctx, `
INSERT INTO dead_letters (id, tenant_id, delivery_id, event_id, endpoint_id, event_type, ordering_key, reason,
                          attempts, last_status_code, last_error, dead_at, replays, resolved_at, discarded_at)
SELECT 'dl_gen' || lpad(i::text, 9, '0'),
       CASE WHEN h % 10 = 0 THEN 'other' ELSE 'acme' END,
       'dlv_gen' || i, 'evt_gen' || i,
       CASE WHEN (h / 10) % 100 < 40 THEN 'ep_hot' ELSE 'ep_' || (h / 10) % 100 END,
       'type.' || (h / 1000) % 20,
       CASE WHEN h % 3 = 0 THEN 'customer-' || (h / 7) % 5000 END,
       CASE WHEN r < 700 THEN 'exhausted' WHEN r < 850 THEN 'non_retryable_status'
            WHEN r < 920 THEN 'endpoint_disabled' WHEN r < 960 THEN 'endpoint_deleted'
            WHEN r < 990 THEN 'destination_blocked' ELSE 'expired' END,
       8, 503, 'status 503', t, 0,
       CASE WHEN (h / 100000) % 2 = 0 THEN t + interval '1 hour' END,
       CASE WHEN (h / 200000) % 100 = 0 THEN t + interval '2 hours' END
  FROM generate_series(1, $1::int) AS i,
       LATERAL (SELECT hashint4(i)::bigint + 2147483648 AS h) hh,
       LATERAL (SELECT (hh.h / 1000000) % 1000 AS r, now() - i * interval '2.6 seconds' AS t) rr`, n)
	if err != nil {
		return fmt.Errorf("generate %d dead letters: %w", n, err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE dead_letters`); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	return nil
}

// planCase is one filter combination of GET /dead-letters.
type planCase struct {
	name   string
	f      filter
	cursor *httpapi.Cursor
}

// planCases covers every filter of CONTRACT 2.4 alone and combined, for
// data made by generateDeadLetters (now is when it ran).
func planCases(now time.Time) []planCase {
	at := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	return []planCase{
		{name: "no filter", f: filter{}},
		{name: "endpoint", f: filter{EndpointID: "ep_42"}},
		{name: "event type", f: filter{EventType: "type.7"}},
		{name: "reason common", f: filter{Reason: "exhausted"}},
		{name: "reason rare", f: filter{Reason: "expired"}},
		{name: "since 1h", f: filter{Since: at(time.Hour)}},
		{name: "since+until 1h window 10 days back", f: filter{Since: at(241 * time.Hour), Until: at(240 * time.Hour)}},
		{name: "endpoint+type", f: filter{EndpointID: "ep_42", EventType: "type.7"}},
		{name: "endpoint+reason rare", f: filter{EndpointID: "ep_42", Reason: "expired"}},
		{name: "type+reason rare", f: filter{EventType: "type.7", Reason: "expired"}},
		{name: "endpoint+type+reason", f: filter{EndpointID: "ep_42", EventType: "type.7", Reason: "non_retryable_status"}},
		{name: "all filters", f: filter{EndpointID: "ep_42", EventType: "type.7", Reason: "exhausted", Since: at(20 * 24 * time.Hour), Until: at(5 * 24 * time.Hour)}},
		{name: "hot endpoint", f: filter{EndpointID: "ep_hot"}},
		{name: "hot endpoint+type", f: filter{EndpointID: "ep_hot", EventType: "type.7"}},
		{name: "hot endpoint+reason rare", f: filter{EndpointID: "ep_hot", Reason: "expired"}},
		{name: "hot endpoint+type+reason rare", f: filter{EndpointID: "ep_hot", EventType: "type.7", Reason: "expired"}},
		{name: "hot endpoint+type+reason+window", f: filter{EndpointID: "ep_hot", EventType: "type.7", Reason: "endpoint_deleted", Since: at(20 * 24 * time.Hour), Until: at(5 * 24 * time.Hour)}},
		{name: "include_resolved", f: filter{IncludeResolved: true}},
		{name: "include_resolved+endpoint+type", f: filter{IncludeResolved: true, EndpointID: "ep_42", EventType: "type.7"}},
		{name: "include_resolved+all filters", f: filter{IncludeResolved: true, EndpointID: "ep_42", EventType: "type.7", Reason: "exhausted", Since: at(20 * 24 * time.Hour), Until: at(5 * 24 * time.Hour)}},
		{name: "no match", f: filter{EndpointID: "ep_nope"}},
		{name: "deep page (cursor 15 days back)", f: filter{}, cursor: &httpapi.Cursor{Time: now.Add(-15 * 24 * time.Hour), ID: "dl_~"}},
		{name: "deep page endpoint+reason", f: filter{EndpointID: "ep_42", Reason: "exhausted"}, cursor: &httpapi.Cursor{Time: now.Add(-15 * 24 * time.Hour), ID: "dl_~"}},
	}
}

// explain returns the plan of the list query of c as JSON and as text.
func explain(ctx context.Context, pool *pgxpool.Pool, c planCase, options string) (string, error) {
	sql, args := listSQL("acme", c.f, c.cursor, httpapi.DefaultLimit+1)
	rows, err := pool.Query(ctx, "EXPLAIN ("+options+") "+sql, args...)
	if err != nil {
		return "", fmt.Errorf("explain %s: %w", c.name, err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return "", err
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String(), rows.Err()
}

// planNode is the part of EXPLAIN (FORMAT JSON) the test reads.
type planNode struct {
	NodeType     string     `json:"Node Type"`
	RelationName string     `json:"Relation Name"`
	IndexName    string     `json:"Index Name"`
	Plans        []planNode `json:"Plans"`
}

// scans returns the scans of dead_letters in the plan.
func (n planNode) scans() []planNode {
	var out []planNode
	if n.RelationName == "dead_letters" || strings.HasPrefix(n.IndexName, "dead_letters") {
		out = append(out, n)
	}
	for _, c := range n.Plans {
		out = append(out, c.scans()...)
	}
	return out
}

// TestListUsesIndexes: at 20,000 dead letters the planner already reads
// every filter combination through an index, never by a sequential scan.
// (The million-row timings are in scale_test.go, behind the scale tag.)
func TestListUsesIndexes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	now := time.Now()
	if err := generateDeadLetters(ctx, b.pool, 20000); err != nil {
		t.Fatal(err)
	}
	for _, c := range planCases(now) {
		t.Run(c.name, func(t *testing.T) {
			out, err := explain(ctx, b.pool, c, "FORMAT JSON")
			if err != nil {
				t.Fatal(err)
			}
			var plans []struct {
				Plan planNode `json:"Plan"`
			}
			if err := json.Unmarshal([]byte(out), &plans); err != nil || len(plans) != 1 {
				t.Fatalf("plan %s: %v", out, err)
			}
			scans := plans[0].Plan.scans()
			if len(scans) == 0 {
				t.Fatalf("no scan of dead_letters in %s", out)
			}
			for _, s := range scans {
				if s.NodeType == "Seq Scan" {
					text, _ := explain(ctx, b.pool, c, "COSTS")
					t.Errorf("sequential scan of dead_letters:\n%s", text)
				}
			}
		})
	}
}
