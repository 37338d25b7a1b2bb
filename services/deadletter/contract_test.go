package deadletter

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// keysOf returns the sorted keys of m.
func keysOf(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var rfc3339UTC = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`)

// checkShape fails unless o has exactly the keys of want (nil values in want
// only name a key), no value is "", and every *_at value is null or an
// RFC 3339 UTC time.
func checkShape(t *testing.T, what string, o map[string]any, want []string) {
	t.Helper()
	sort.Strings(want)
	if got := keysOf(o); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s fields = %v, want %v", what, got, want)
	}
	for k, v := range o {
		if v == "" {
			t.Errorf(`%s.%s = "", want null or a value`, what, k)
		}
		if strings.HasSuffix(k, "_at") && v != nil {
			if s, ok := v.(string); !ok || !rfc3339UTC.MatchString(s) {
				t.Errorf("%s.%s = %#v, want RFC 3339 UTC", what, k, v)
			}
		}
	}
}

var (
	deadLetterFields = []string{"id", "event_id", "endpoint_id", "event_type", "ordering_key", "reason", "attempts",
		"last_status_code", "last_error", "dead_at", "replays", "resolved_at"}
	replayFields = []string{"id", "state", "matched", "replayed", "succeeded", "failed", "filter", "rate_per_second",
		"created_by", "created_at", "finished_at"}
)

// TestContractShapes reads every response of CONTRACT 2.4 field by field.
func TestContractShapes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	deliveries := b.deliveries(t)
	b.insertEvent(t, "acme", "evt_1", "order.created", `{"n":1}`, "")
	b.insertDL(t, dlRow{id: "dl_1", event: "evt_1", endpoint: "ep_a", typ: "order.created", reason: "exhausted",
		deadAt: time.Date(2026, 11, 22, 10, 0, 0, 123456000, time.FixedZone("CET", 3600))})
	b.exec(t, `INSERT INTO attempts (delivery_id, attempt, tenant_id, event_id, endpoint_id, started_at, duration_ms, status_code, error, response_body, succeeded)
VALUES ('dlv_dl_1', 1, 'acme', 'evt_1', 'ep_a', now() - interval '1 minute', 3, NULL, 'connection refused', NULL, false)`)

	var page map[string]any
	b.getJSON(t, "/v1/tenants/acme/dead-letters", 200, &page)
	if got := keysOf(page); strings.Join(got, ",") != "data,next_cursor" || page["next_cursor"] != nil {
		t.Fatalf("list = %v, want {data, next_cursor: null}", page)
	}
	items := page["data"].([]any)
	if len(items) != 1 {
		t.Fatalf("list = %v", page)
	}
	dl := items[0].(map[string]any)
	checkShape(t, "dead letter", dl, deadLetterFields)
	if dl["dead_at"] != "2026-11-22T09:00:00.123456Z" || dl["replays"] != 0.0 || dl["resolved_at"] != nil || dl["ordering_key"] != nil {
		t.Errorf("dead letter = %v", dl)
	}

	var detail map[string]any
	b.getJSON(t, "/v1/tenants/acme/dead-letters/dl_1", 200, &detail)
	checkShape(t, "dead letter detail", detail, append(append([]string{}, deadLetterFields...), "data", "attempt_history"))
	hist := detail["attempt_history"].([]any)
	if len(hist) != 1 {
		t.Fatalf("attempt_history = %v", hist)
	}
	checkShape(t, "attempt", hist[0].(map[string]any), []string{"delivery_id", "event_id", "attempt", "started_at",
		"duration_ms", "status_code", "error", "response_body", "succeeded"})

	// Dry run: {"matched"} only, 200.
	status, body := b.do(t, "POST", "/v1/tenants/acme/replays", adminToken, map[string]any{"dry_run": true})
	if status != 200 || strings.TrimSpace(string(body)) != `{"matched":1}` {
		t.Fatalf("dry run = %d %s", status, body)
	}
	// A replay: 202 with at least id, state, matched.
	status, body = b.do(t, "POST", "/v1/tenants/acme/replays", b.acmeKey, map[string]any{"filter": map[string]any{"reason": "exhausted"}})
	if status != 202 {
		t.Fatalf("create = %d %s", status, body)
	}
	var created map[string]any
	if err := json.Unmarshal(body, &created); err != nil {
		t.Fatal(err)
	}
	checkShape(t, "created replay", created, replayFields)
	if created["state"] != "running" || created["matched"] != 1.0 || created["created_by"] != "key_acme" || created["finished_at"] != nil {
		t.Errorf("created = %v", created)
	}
	id := created["id"].(string)
	b.startRunner(t)
	got := fetch(t, deliveries, 1, 10*time.Second)
	if len(got) != 1 {
		t.Fatalf("deliveries = %d", len(got))
	}
	var rp map[string]any
	waitFor(t, "done", func() bool {
		b.getJSON(t, "/v1/tenants/acme/replays/"+id, 200, &rp)
		return rp["state"] == "done"
	})
	checkShape(t, "replay", rp, replayFields)
	if rp["replayed"] != rp["matched"] || rp["finished_at"] == nil || rp["succeeded"] != 0.0 || rp["failed"] != 0.0 {
		t.Errorf("done replay = %v", rp)
	}
	// succeeded keeps counting after done; the dead letter is resolved and
	// leaves the default list.
	b.exec(t, `UPDATE deliveries SET status = 'succeeded' WHERE id = $1`, got[0].Id)
	b.exec(t, `UPDATE dead_letters SET resolved_at = now() WHERE id = 'dl_1'`)
	b.getJSON(t, "/v1/tenants/acme/replays/"+id, 200, &rp)
	if rp["succeeded"] != 1.0 || rp["failed"] != 0.0 || rp["state"] != "done" {
		t.Errorf("after delivery: %v", rp)
	}
	b.getJSON(t, "/v1/tenants/acme/dead-letters", 200, &page)
	if len(page["data"].([]any)) != 0 {
		t.Errorf("a resolved dead letter is listed by default: %v", page)
	}
	b.getJSON(t, "/v1/tenants/acme/dead-letters?include_resolved=true", 200, &page)
	dl = page["data"].([]any)[0].(map[string]any)
	checkShape(t, "resolved dead letter", dl, deadLetterFields)
	if dl["replays"] != 1.0 || dl["resolved_at"] == nil {
		t.Errorf("resolved dead letter = %v", dl)
	}

	// GET /replays: newest first, with who created each.
	var list struct {
		Data       []map[string]any `json:"data"`
		NextCursor *string          `json:"next_cursor"`
	}
	b.getJSON(t, "/v1/tenants/acme/replays", 200, &list)
	if len(list.Data) != 1 || list.Data[0]["id"] != id || list.Data[0]["created_by"] != "key_acme" || list.NextCursor != nil {
		t.Errorf("replays = %+v", list)
	}
	if status, _ := b.do(t, "DELETE", "/v1/tenants/acme/replays/rpl_nope", adminToken, nil); status != 404 {
		t.Errorf("cancel unknown = %d, want 404", status)
	}
	if status, _ := b.do(t, "GET", "/v1/tenants/acme/replays/rpl_nope", adminToken, nil); status != 404 {
		t.Errorf("get unknown = %d, want 404", status)
	}
}

// TestDatabaseDownAnswers503: a request that validated but cannot reach
// PostgreSQL answers 503 with Retry-After, never 500.
func TestDatabaseDownAnswers503(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// A service of its own over a pool that is closed at once.
	pool, err := pgxpool.New(t.Context(), b.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	svc := newService(pool, b.js, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(svc.handler(adminToken))
	t.Cleanup(srv.Close)
	pool.Close()
	for _, rt := range []struct{ method, path string }{
		{"GET", "/v1/tenants/acme/dead-letters"},
		{"GET", "/v1/tenants/acme/dead-letters/dl_1"},
		{"DELETE", "/v1/tenants/acme/dead-letters/dl_1"},
		{"POST", "/v1/tenants/acme/dead-letters/dl_1/replay"},
		{"GET", "/v1/tenants/acme/replays"},
		{"GET", "/v1/tenants/acme/replays/rpl_1"},
		{"DELETE", "/v1/tenants/acme/replays/rpl_1"},
	} {
		req := httptest.NewRequestWithContext(t.Context(), rt.method, srv.URL+rt.path, nil)
		req.RequestURI = ""
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s = %d (Retry-After %q) %s, want 503 with Retry-After", rt.method, rt.path, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
		if strings.Contains(string(body), "closed pool") {
			t.Errorf("the cause leaks: %s", body)
		}
	}
}
