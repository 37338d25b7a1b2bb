package ingest

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/apitime"
)

func TestTestEvent(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.tenant(t, "acme")
	id := b.endpoint(t, "acme", map[string]any{"url": epURL})["id"].(string)

	r := b.must(t, http.StatusAccepted, "POST", "/v1/tenants/acme/endpoints/"+id+"/test", adminToken, nil)
	eventID, _ := r.body["event_id"].(string)
	var typ, data string
	err := b.pool.QueryRow(t.Context(), `SELECT type, data::text FROM events WHERE tenant_id = 'acme' AND id = $1`, eventID).Scan(&typ, &data)
	if err != nil || typ != "hookline.test" {
		t.Fatalf("event %s: type %q, err %v", eventID, typ, err)
	}
	if want := `{"endpoint_id":"` + id + `","message":"test event from Hookline"}`; data != want {
		t.Fatalf("data %s, want %s", data, want)
	}
	isProblem(t, b.do(t, "POST", "/v1/tenants/acme/endpoints/ep_nope/test", adminToken, nil), http.StatusNotFound)
}

func TestAttemptsAndHealth(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.tenant(t, "acme")
	id := b.endpoint(t, "acme", map[string]any{"url": epURL})["id"].(string)
	other := b.endpoint(t, "acme", map[string]any{"url": epURL})["id"].(string)

	// Five attempts a minute apart, newest last: 500, 500, timeout, 200, 503.
	base := apitime.Now().Add(-time.Hour)
	type att struct {
		code *int
		err  *string
		ok   bool
	}
	code := func(c int) *int { return &c }
	text := func(s string) *string { return &s }
	rows := []att{
		{code(500), text("status 500"), false},
		{code(500), text("status 500"), false},
		{nil, text("timeout"), false},
		{code(200), nil, true},
		{code(503), text("status 503"), false},
	}
	for i, a := range rows {
		_, err := b.pool.Exec(t.Context(), `
			INSERT INTO attempts (delivery_id, attempt, tenant_id, event_id, endpoint_id, started_at, duration_ms,
				status_code, error, response_body, succeeded)
			VALUES ($1, $2, 'acme', $3, $4, $5, 12, $6, $7, 'body', $8)`,
			fmt.Sprintf("dlv_%d", i%2), i+1, fmt.Sprintf("evt_%d", i), id, base.Add(time.Duration(i)*time.Minute), a.code, a.err, a.ok)
		if err != nil {
			t.Fatal(err)
		}
	}
	path := "/v1/tenants/acme/endpoints/" + id + "/attempts"
	list := func(t *testing.T, q string) []map[string]any {
		t.Helper()
		r := b.must(t, http.StatusOK, "GET", path+q, adminToken, nil)
		var out []map[string]any
		for _, d := range r.body["data"].([]any) {
			out = append(out, d.(map[string]any))
		}
		return out
	}
	events := func(items []map[string]any) []string {
		var out []string
		for _, it := range items {
			out = append(out, it["event_id"].(string))
		}
		return out
	}

	t.Run("newest first with every field", func(t *testing.T) {
		got := list(t, "")
		if fmt.Sprint(events(got)) != "[evt_4 evt_3 evt_2 evt_1 evt_0]" {
			t.Fatalf("order %v", events(got))
		}
		timeout := got[2]
		if timeout["status_code"] != nil || timeout["error"] != "timeout" || timeout["attempt"] != float64(3) ||
			timeout["duration_ms"] != float64(12) || timeout["response_body"] != "body" || timeout["succeeded"] != false {
			t.Fatalf("timeout attempt %v", timeout)
		}
		if ok := got[1]; ok["error"] != nil || ok["status_code"] != float64(200) || ok["succeeded"] != true {
			t.Fatalf("succeeded attempt %v", ok)
		}
	})
	t.Run("status filter", func(t *testing.T) {
		if got := events(list(t, "?status=succeeded")); fmt.Sprint(got) != "[evt_3]" {
			t.Fatalf("succeeded %v", got)
		}
		if got := events(list(t, "?status=failed")); len(got) != 4 {
			t.Fatalf("failed %v", got)
		}
		isProblem(t, b.do(t, "GET", path+"?status=maybe", adminToken, nil), 422)
	})
	t.Run("since inclusive, until exclusive", func(t *testing.T) {
		since := apitime.Format(base.Add(time.Minute))
		until := apitime.Format(base.Add(3 * time.Minute))
		if got := events(list(t, "?since="+since+"&until="+until)); fmt.Sprint(got) != "[evt_2 evt_1]" {
			t.Fatalf("window %v", got)
		}
		isProblem(t, b.do(t, "GET", path+"?since=yesterday", adminToken, nil), 422)
	})
	t.Run("pages with a cursor", func(t *testing.T) {
		var all []string
		q := "?limit=2"
		for range 5 {
			r := b.must(t, http.StatusOK, "GET", path+q, adminToken, nil)
			for _, d := range r.body["data"].([]any) {
				all = append(all, d.(map[string]any)["event_id"].(string))
			}
			next, ok := r.body["next_cursor"].(string)
			if !ok {
				break
			}
			q = "?limit=2&cursor=" + next
		}
		if fmt.Sprint(all) != "[evt_4 evt_3 evt_2 evt_1 evt_0]" {
			t.Fatalf("paged %v", all)
		}
	})
	t.Run("another endpoint's log is empty", func(t *testing.T) {
		r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints/"+other+"/attempts", adminToken, nil)
		if n := len(r.body["data"].([]any)); n != 0 || r.body["next_cursor"] != nil {
			t.Fatalf("other endpoint lists %d attempts", n)
		}
	})
	t.Run("health summarises the log", func(t *testing.T) {
		r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints/"+id, adminToken, nil)
		h := r.body["health"].(map[string]any)
		if h["success_rate"] != 0.2 || h["last_status_code"] != float64(503) || h["circuit"] != "closed" {
			t.Fatalf("health %v", h)
		}
		last, err := time.Parse(time.RFC3339, h["last_attempt_at"].(string))
		if err != nil || !last.Equal(base.Add(4*time.Minute)) {
			t.Fatalf("last_attempt_at %v (%v)", h["last_attempt_at"], err)
		}
	})
	t.Run("health shows the circuit the dispatchers share", func(t *testing.T) {
		if _, err := b.pool.Exec(t.Context(),
			`INSERT INTO endpoint_circuits (endpoint_id, circuit, open_until) VALUES ($1, 'open', now() + interval '1 minute')`, id); err != nil {
			t.Fatal(err)
		}
		r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints/"+id, adminToken, nil)
		if c := r.body["health"].(map[string]any)["circuit"]; c != "open" {
			t.Fatalf("circuit %v, want open", c)
		}
	})
}
