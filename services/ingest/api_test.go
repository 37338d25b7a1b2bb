package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/ingest/internal/events"
)

const adminToken = "test-admin-token-0123456789"

// bundle is one test's ingest API over its own database and NATS server.
type bundle struct {
	url   string
	pool  *pgxpool.Pool
	kv    jetstream.KeyValue
	cache *endpoints.Cache

	handler  http.Handler
	patterns []string // every route pattern the handler registered
}

func setup(t testing.TB, mutate func(*config.Config)) *bundle {
	t.Helper()
	ctx := t.Context()
	pool, dbURL := pgtest.NewPool(t)
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("open JetStream: %v", err)
	}
	cfg, err := config.Load(func(k string) string {
		return map[string]string{
			config.EnvNATSURL:      ns.URL(),
			config.EnvDatabaseURL:  dbURL,
			config.EnvAdminToken:   adminToken,
			config.EnvAllowPrivate: "true",
		}[k]
	}, config.Need{NATS: true, Database: true, AdminToken: true})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := bus.EnsureStreams(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	kv, err := bus.EnsureEndpointsBucket(ctx, js, bus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ev := events.New(pool, js, cfg, log)
	handler, patterns := newHandler(cfg, pool, kv, ev, nil, log)
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)

	cache := endpoints.NewCache(kv, log)
	cctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = cache.Run(cctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return &bundle{url: srv.URL, pool: pool, kv: kv, cache: cache, handler: handler, patterns: patterns}
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// do sends a request; body is sent as is when it is a string, else as JSON.
func (b *bundle) do(t testing.TB, method, path, token string, body any) response {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	default:
		buf, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, b.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: undecodable body %q: %v", method, path, raw, err)
		}
	}
	return r
}

// must sends a request and fails unless it answers want.
func (b *bundle) must(t testing.TB, want int, method, path, token string, body any) response {
	t.Helper()
	r := b.do(t, method, path, token, body)
	if r.status != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.status, want, r.raw)
	}
	return r
}

func (b *bundle) tenant(t testing.TB, id string) {
	t.Helper()
	b.must(t, http.StatusCreated, "POST", "/v1/tenants", adminToken, map[string]any{"id": id, "name": id + " Inc"})
}

func (b *bundle) key(t testing.TB, tenant string) (id, token string) {
	t.Helper()
	r := b.must(t, http.StatusCreated, "POST", "/v1/tenants/"+tenant+"/api-keys", adminToken, map[string]any{"name": "k"})
	return r.body["id"].(string), r.body["token"].(string)
}

func (b *bundle) endpoint(t testing.TB, tenant string, body map[string]any) map[string]any {
	t.Helper()
	return b.must(t, http.StatusCreated, "POST", "/v1/tenants/"+tenant+"/endpoints", adminToken, body).body
}

// waitKV polls the endpoint cache until check accepts what it holds for id.
func (b *bundle) waitKV(t *testing.T, id string, check func(*hooklinev1.Endpoint) bool) *hooklinev1.Endpoint {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ep, err := b.cache.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if ep != nil && check(ep) {
			return ep
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint %s in KV never matched; last seen %v", id, ep)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isProblem(t *testing.T, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.raw)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q, want application/problem+json; body %s", ct, r.raw)
	}
	if got, _ := r.body["status"].(float64); int(got) != status {
		t.Fatalf("problem status %v, want %d", r.body["status"], status)
	}
}

// fieldErrors returns the field names of a 422's errors.
func fieldErrors(r response) []string {
	var out []string
	list, _ := r.body["errors"].([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		f, _ := m["field"].(string)
		out = append(out, f)
	}
	return out
}

func TestRoutingProblems(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	cases := []struct {
		name, method, path string
		want               int
	}{
		{"unknown route", "GET", "/v1/nothing-here", 404},
		{"unknown nested route", "GET", "/v1/tenants/acme/whatever", 404},
		{"dead letters are not served here", "GET", "/v1/tenants/acme/dead-letters", 404},
		{"replays are not served here", "GET", "/v1/tenants/acme/replays", 404},
		{"wrong method", "PUT", "/v1/tenants", 405},
		{"wrong method on endpoint", "PUT", "/v1/tenants/acme/endpoints/ep_1", 405},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := b.do(t, tc.method, tc.path, adminToken, nil)
			isProblem(t, r, tc.want)
		})
	}
	t.Run("405 names the allowed methods", func(t *testing.T) {
		r := b.do(t, "PUT", "/v1/tenants", adminToken, nil)
		if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
			t.Fatalf("Allow %q", allow)
		}
	})
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.tenant(t, "acme")
	_, key := b.key(t, "acme")

	t.Run("missing or wrong token is 401", func(t *testing.T) {
		for _, token := range []string{"", "wrong-token-wrong-token", "hlk_nope", adminToken + "x"} {
			for _, path := range []string{"/v1/tenants", "/v1/tenants/acme/endpoints", "/v1/nothing"} {
				r := b.do(t, "GET", path, token, nil)
				isProblem(t, r, http.StatusUnauthorized)
			}
		}
	})
	t.Run("tenant key gets 403 on tenant and key routes, even its own", func(t *testing.T) {
		cases := []struct{ method, path string }{
			{"GET", "/v1/tenants"},
			{"POST", "/v1/tenants"},
			{"GET", "/v1/tenants/acme"},
			{"DELETE", "/v1/tenants/acme"},
			{"GET", "/v1/tenants/acme/api-keys"},
			{"POST", "/v1/tenants/acme/api-keys"},
			{"DELETE", "/v1/tenants/acme/api-keys/key_x"},
		}
		for _, c := range cases {
			r := b.do(t, c.method, c.path, key, map[string]any{"id": "other", "name": "x"})
			if r.status != http.StatusForbidden {
				t.Errorf("%s %s: status %d, want 403; %s", c.method, c.path, r.status, r.raw)
			}
		}
		// The tenant survived the attempt to delete it.
		b.must(t, http.StatusOK, "GET", "/v1/tenants/acme", adminToken, nil)
	})
	t.Run("tenant key works inside its tenant", func(t *testing.T) {
		b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints", key, nil)
	})
}

func TestTenants(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)

	r := b.must(t, http.StatusCreated, "POST", "/v1/tenants", adminToken, map[string]any{"id": "acme", "name": "Acme Inc"})
	if r.body["id"] != "acme" || r.body["name"] != "Acme Inc" || r.body["created_at"] == nil {
		t.Fatalf("created %v", r.body)
	}
	if _, err := time.Parse(time.RFC3339, r.body["created_at"].(string)); err != nil {
		t.Fatalf("created_at: %v", err)
	}

	invalid := []struct {
		name  string
		body  any
		field string
	}{
		{"missing id", map[string]any{"name": "x"}, "id"},
		{"empty id", map[string]any{"id": ""}, "id"},
		{"upper case", map[string]any{"id": "Acme"}, "id"},
		{"leading dash", map[string]any{"id": "-acme"}, "id"},
		{"dot (not a subject token)", map[string]any{"id": "ac.me"}, "id"},
		{"too long", map[string]any{"id": strings.Repeat("a", 64)}, "id"},
		{"name too long", map[string]any{"id": "ok", "name": strings.Repeat("n", 201)}, "name"},
		{"unknown field", map[string]any{"id": "ok", "color": "red"}, "color"},
		{"wrong type", map[string]any{"id": 7}, "id"},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			r := b.do(t, "POST", "/v1/tenants", adminToken, tc.body)
			isProblem(t, r, http.StatusUnprocessableEntity)
			if got := fieldErrors(r); len(got) == 0 || got[0] != tc.field {
				t.Fatalf("fields %v, want %s", got, tc.field)
			}
		})
	}
	t.Run("longest valid id", func(t *testing.T) {
		b.must(t, http.StatusCreated, "POST", "/v1/tenants", adminToken, map[string]any{"id": "a" + strings.Repeat("b_-", 20) + "xy"})
	})
	t.Run("malformed JSON is 400", func(t *testing.T) {
		isProblem(t, b.do(t, "POST", "/v1/tenants", adminToken, `{"id": `), http.StatusBadRequest)
	})
	t.Run("duplicate is 409", func(t *testing.T) {
		isProblem(t, b.do(t, "POST", "/v1/tenants", adminToken, map[string]any{"id": "acme"}), http.StatusConflict)
	})
	t.Run("name defaults to the id", func(t *testing.T) {
		r := b.must(t, http.StatusCreated, "POST", "/v1/tenants", adminToken, map[string]any{"id": "noname"})
		if r.body["name"] != "noname" {
			t.Fatalf("name %v", r.body["name"])
		}
	})
	t.Run("list pages with a cursor", func(t *testing.T) {
		var seen []string
		path := "/v1/tenants?limit=1"
		for range 10 {
			r := b.must(t, http.StatusOK, "GET", path, adminToken, nil)
			data := r.body["data"].([]any)
			for _, d := range data {
				seen = append(seen, d.(map[string]any)["id"].(string))
			}
			next, ok := r.body["next_cursor"].(string)
			if !ok {
				if r.body["next_cursor"] != nil {
					t.Fatalf("next_cursor %v", r.body["next_cursor"])
				}
				break
			}
			path = "/v1/tenants?limit=1&cursor=" + next
		}
		if len(seen) != 3 || seen[0] != "acme" {
			t.Fatalf("listed %v", seen)
		}
	})
	t.Run("bad cursor is 422", func(t *testing.T) {
		isProblem(t, b.do(t, "GET", "/v1/tenants?cursor=zzz", adminToken, nil), http.StatusUnprocessableEntity)
	})
	t.Run("get unknown is 404", func(t *testing.T) {
		isProblem(t, b.do(t, "GET", "/v1/tenants/nope", adminToken, nil), http.StatusNotFound)
	})
	t.Run("delete removes the tenant and tombstones its endpoints", func(t *testing.T) {
		b.tenant(t, "doomed")
		ep := b.endpoint(t, "doomed", map[string]any{"url": "http://127.0.0.1:9/hook"})
		_, key := b.key(t, "doomed")
		b.must(t, http.StatusNoContent, "DELETE", "/v1/tenants/doomed", adminToken, nil)
		isProblem(t, b.do(t, "GET", "/v1/tenants/doomed", adminToken, nil), http.StatusNotFound)
		isProblem(t, b.do(t, "DELETE", "/v1/tenants/doomed", adminToken, nil), http.StatusNotFound)
		isProblem(t, b.do(t, "GET", "/v1/tenants/doomed/endpoints", key, nil), http.StatusUnauthorized)
		b.waitKV(t, ep["id"].(string), func(e *hooklinev1.Endpoint) bool { return e.GetDeleted() })
	})
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.tenant(t, "acme")

	r := b.must(t, http.StatusCreated, "POST", "/v1/tenants/acme/api-keys", adminToken, map[string]any{"name": "ci"})
	id, token := r.body["id"].(string), r.body["token"].(string)
	if !strings.HasPrefix(id, "key_") || !strings.HasPrefix(token, "hlk_") || r.body["name"] != "ci" {
		t.Fatalf("created %v", r.body)
	}
	var stored int
	if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM api_keys WHERE token_hash::text LIKE '%' || $1 || '%'`, token).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("token stored in clear (%d, %v)", stored, err)
	}
	b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints", token, nil)

	t.Run("list shows no tokens", func(t *testing.T) {
		r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/api-keys", adminToken, nil)
		data := r.body["data"].([]any)
		if len(data) != 1 {
			t.Fatalf("keys %v", data)
		}
		k := data[0].(map[string]any)
		if _, has := k["token"]; has || k["id"] != id || k["revoked_at"] != nil {
			t.Fatalf("listed %v", k)
		}
	})
	t.Run("unknown tenant is 404", func(t *testing.T) {
		isProblem(t, b.do(t, "POST", "/v1/tenants/nope/api-keys", adminToken, map[string]any{"name": "x"}), http.StatusNotFound)
		isProblem(t, b.do(t, "GET", "/v1/tenants/nope/api-keys", adminToken, nil), http.StatusNotFound)
	})
	t.Run("name too long is 422", func(t *testing.T) {
		isProblem(t, b.do(t, "POST", "/v1/tenants/acme/api-keys", adminToken, map[string]any{"name": strings.Repeat("x", 201)}), 422)
	})
	t.Run("revoke takes effect at once", func(t *testing.T) {
		b.must(t, http.StatusNoContent, "DELETE", "/v1/tenants/acme/api-keys/"+id, adminToken, nil)
		isProblem(t, b.do(t, "GET", "/v1/tenants/acme/endpoints", token, nil), http.StatusUnauthorized)
		r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/api-keys", adminToken, nil)
		if r.body["data"].([]any)[0].(map[string]any)["revoked_at"] == nil {
			t.Fatal("revoked_at not set")
		}
	})
	t.Run("deleting the tenant revokes its keys at once", func(t *testing.T) {
		b.tenant(t, "gone")
		_, token := b.key(t, "gone")
		b.must(t, http.StatusOK, "GET", "/v1/tenants/gone/endpoints", token, nil) // remembered now
		b.must(t, http.StatusNoContent, "DELETE", "/v1/tenants/gone", adminToken, nil)
		isProblem(t, b.do(t, "GET", "/v1/tenants/gone/endpoints", token, nil), http.StatusUnauthorized)
	})
	t.Run("revoking an unknown key is 404", func(t *testing.T) {
		isProblem(t, b.do(t, "DELETE", "/v1/tenants/acme/api-keys/key_nope", adminToken, nil), http.StatusNotFound)
	})
}
