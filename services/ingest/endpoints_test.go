package ingest

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/signature"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

const epURL = "http://127.0.0.1:9/hook"

func TestEndpointDefaultsAndSync(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.tenant(t, "acme")

	ep := b.endpoint(t, "acme", map[string]any{"url": epURL})
	id := ep["id"].(string)
	want := map[string]any{
		"url":             epURL,
		"description":     "",
		"event_types":     []any{},
		"filter":          nil,
		"headers":         map[string]any{},
		"timeout_ms":      float64(15000),
		"retry_schedule":  []any{"5s", "5m", "30m", "2h", "5h", "10h", "10h"},
		"rate_limit":      float64(0),
		"ordering":        "key",
		"disabled":        false,
		"propagate_trace": true,
	}
	for k, v := range want {
		got, present := ep[k]
		if !present || !reflect.DeepEqual(got, v) {
			t.Errorf("%s = %#v (present %v), want %#v", k, got, present, v)
		}
	}
	if !strings.HasPrefix(id, "ep_") || ep["created_at"] == nil || ep["updated_at"] == nil {
		t.Fatalf("created %v", ep)
	}
	secret, _ := ep["secret"].(string)
	if _, err := signature.DecodeSecret(secret); err != nil {
		t.Fatalf("generated secret %q: %v", secret, err)
	}

	kvEp := b.waitKV(t, id, func(e *hooklinev1.Endpoint) bool { return e.GetVersion() == 1 })
	if kvEp.GetUrl() != epURL || kvEp.GetTenantId() != "acme" || kvEp.GetOrdering() != "key" || !kvEp.GetPropagateTrace() ||
		kvEp.GetTimeoutMs() != 15000 || len(kvEp.GetSecrets()) != 1 || kvEp.GetSecrets()[0].GetValue() != secret ||
		!reflect.DeepEqual(kvEp.GetRetryScheduleMs(), []uint64{5000, 300000, 1800000, 7200000, 18000000, 36000000, 36000000}) {
		t.Fatalf("KV holds %v", kvEp)
	}

	t.Run("get adds secret and health", func(t *testing.T) {
		r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints/"+id, adminToken, nil)
		if r.body["secret"] != secret {
			t.Fatalf("secret %v", r.body["secret"])
		}
		h, _ := r.body["health"].(map[string]any)
		wantHealth := map[string]any{"success_rate": nil, "last_status_code": nil, "last_attempt_at": nil,
			"circuit": "closed", "disabled_at": nil, "disabled_reason": nil}
		if !reflect.DeepEqual(h, wantHealth) {
			t.Fatalf("health %v", h)
		}
	})
	t.Run("list shows every field but no secret", func(t *testing.T) {
		r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints", adminToken, nil)
		data := r.body["data"].([]any)
		if len(data) != 1 || r.body["next_cursor"] != nil {
			t.Fatalf("list %v", r.body)
		}
		got := data[0].(map[string]any)
		if _, has := got["secret"]; has {
			t.Fatal("list shows the secret")
		}
		for k := range want {
			if _, has := got[k]; !has {
				t.Errorf("list item lacks %s", k)
			}
		}
	})
	t.Run("patch changes fields, bumps the version and syncs", func(t *testing.T) {
		r := b.must(t, http.StatusOK, "PATCH", "/v1/tenants/acme/endpoints/"+id, adminToken, map[string]any{
			"event_types": []string{"order.*"}, "filter": "data.amount > 100", "headers": map[string]string{"X-Team": "a"},
			"timeout_ms": 2000, "retry_schedule": []string{"1s", "90s"}, "rate_limit": 5, "ordering": "none",
			"propagate_trace": false, "description": "orders",
		})
		if r.body["ordering"] != "none" || r.body["filter"] != "data.amount > 100" || r.body["description"] != "orders" ||
			!reflect.DeepEqual(r.body["retry_schedule"], []any{"1s", "90s"}) || r.body["url"] != epURL {
			t.Fatalf("patched %v", r.body)
		}
		e := b.waitKV(t, id, func(e *hooklinev1.Endpoint) bool { return e.GetVersion() == 2 })
		if e.GetOrdering() != "none" || e.GetFilter() != "data.amount > 100" || e.GetHeaders()["X-Team"] != "a" ||
			e.GetTimeoutMs() != 2000 || e.GetRateLimit() != 5 || e.GetPropagateTrace() ||
			!reflect.DeepEqual(e.GetRetryScheduleMs(), []uint64{1000, 90000}) || !reflect.DeepEqual(e.GetEventTypes(), []string{"order.*"}) {
			t.Fatalf("KV holds %v", e)
		}
	})
	t.Run("filter null clears it", func(t *testing.T) {
		r := b.must(t, http.StatusOK, "PATCH", "/v1/tenants/acme/endpoints/"+id, adminToken, `{"filter": null}`)
		if v, has := r.body["filter"]; !has || v != nil {
			t.Fatalf("filter %v", v)
		}
		b.waitKV(t, id, func(e *hooklinev1.Endpoint) bool { return e.GetVersion() == 3 && e.GetFilter() == "" })
	})
	t.Run("disable records when and why; enable clears", func(t *testing.T) {
		b.must(t, http.StatusOK, "PATCH", "/v1/tenants/acme/endpoints/"+id, adminToken, map[string]any{"disabled": true})
		r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints/"+id, adminToken, nil)
		h := r.body["health"].(map[string]any)
		if r.body["disabled"] != true || h["disabled_at"] == nil || h["disabled_reason"] != "disabled by API" {
			t.Fatalf("disabled: %v", r.body)
		}
		b.waitKV(t, id, func(e *hooklinev1.Endpoint) bool { return e.GetDisabled() })
		r = b.must(t, http.StatusOK, "PATCH", "/v1/tenants/acme/endpoints/"+id, adminToken, map[string]any{"disabled": false})
		h = r.body["health"].(map[string]any)
		if r.body["disabled"] != false || h["disabled_at"] != nil || h["disabled_reason"] != nil {
			t.Fatalf("enabled: %v", r.body)
		}
		b.waitKV(t, id, func(e *hooklinev1.Endpoint) bool { return !e.GetDisabled() })
	})
	t.Run("rotate keeps the previous secret for the grace period", func(t *testing.T) {
		r := b.must(t, http.StatusOK, "POST", "/v1/tenants/acme/endpoints/"+id+"/secret/rotate", adminToken, map[string]any{"grace_seconds": 600})
		newSecret, _ := r.body["secret"].(string)
		exp, err := time.Parse(time.RFC3339, r.body["previous_secret_expires_at"].(string))
		if err != nil || newSecret == secret || time.Until(exp) < 9*time.Minute || time.Until(exp) > 11*time.Minute {
			t.Fatalf("rotated %v (%v)", r.body, err)
		}
		e := b.waitKV(t, id, func(e *hooklinev1.Endpoint) bool { return len(e.GetSecrets()) == 2 })
		if e.GetSecrets()[0].GetValue() != newSecret || e.GetSecrets()[1].GetValue() != secret || e.GetSecrets()[1].GetExpiresAt() == nil {
			t.Fatalf("secrets %v", e.GetSecrets())
		}
		chosen := signature.NewSecret()
		r = b.must(t, http.StatusOK, "POST", "/v1/tenants/acme/endpoints/"+id+"/secret/rotate", adminToken, map[string]any{"secret": chosen})
		if r.body["secret"] != chosen {
			t.Fatalf("rotated to %v", r.body["secret"])
		}
		b.must(t, http.StatusOK, "POST", "/v1/tenants/acme/endpoints/"+id+"/secret/rotate", adminToken, nil)
		isProblem(t, b.do(t, "POST", "/v1/tenants/acme/endpoints/"+id+"/secret/rotate", adminToken, map[string]any{"secret": "whsec_short"}), 422)
		isProblem(t, b.do(t, "POST", "/v1/tenants/acme/endpoints/"+id+"/secret/rotate", adminToken, map[string]any{"grace_seconds": -1}), 422)
	})
	t.Run("delete tombstones and hides the endpoint", func(t *testing.T) {
		b.must(t, http.StatusNoContent, "DELETE", "/v1/tenants/acme/endpoints/"+id, adminToken, nil)
		isProblem(t, b.do(t, "GET", "/v1/tenants/acme/endpoints/"+id, adminToken, nil), http.StatusNotFound)
		isProblem(t, b.do(t, "DELETE", "/v1/tenants/acme/endpoints/"+id, adminToken, nil), http.StatusNotFound)
		isProblem(t, b.do(t, "PATCH", "/v1/tenants/acme/endpoints/"+id, adminToken, map[string]any{"description": "x"}), http.StatusNotFound)
		b.waitKV(t, id, func(e *hooklinev1.Endpoint) bool { return e.GetDeleted() })
		r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints", adminToken, nil)
		if n := len(r.body["data"].([]any)); n != 0 {
			t.Fatalf("%d endpoints listed after delete", n)
		}
	})
	t.Run("SyncAll repairs a KV entry that missed a change", func(t *testing.T) {
		ep := b.endpoint(t, "acme", map[string]any{"url": epURL})
		id := ep["id"].(string)
		b.waitKV(t, id, func(e *hooklinev1.Endpoint) bool { return e.GetVersion() == 1 })
		if _, err := b.pool.Exec(t.Context(), `UPDATE endpoints SET version = 7, rate_limit = 3 WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		if err := endpoints.SyncAll(t.Context(), b.pool, b.kv); err != nil {
			t.Fatal(err)
		}
		b.waitKV(t, id, func(e *hooklinev1.Endpoint) bool { return e.GetVersion() == 7 && e.GetRateLimit() == 3 })
	})
}

func TestEndpointValidation(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.tenant(t, "acme")
	ep := b.endpoint(t, "acme", map[string]any{"url": epURL})
	path := "/v1/tenants/acme/endpoints"

	cases := []struct {
		name  string
		body  any
		field string
	}{
		{"url missing", map[string]any{}, "url"},
		{"url null", `{"url": null}`, "url"},
		{"url not http", map[string]any{"url": "ftp://example.com/x"}, "url"},
		{"url relative", map[string]any{"url": "/hook"}, "url"},
		{"url without host", map[string]any{"url": "http:///x"}, "url"},
		{"url too long", map[string]any{"url": "http://a.example/" + strings.Repeat("x", 2100)}, "url"},
		{"description too long", map[string]any{"url": epURL, "description": strings.Repeat("d", 1001)}, "description"},
		{"event type invalid", map[string]any{"url": epURL, "event_types": []string{"order..created"}}, "event_types"},
		{"event type wildcard not last", map[string]any{"url": epURL, "event_types": []string{"order.>.x"}}, "event_types"},
		{"too many event types", map[string]any{"url": epURL, "event_types": make101()}, "event_types"},
		{"filter does not compile", map[string]any{"url": epURL, "filter": "data.amount >"}, "filter"},
		{"filter not boolean", map[string]any{"url": epURL, "filter": "1 + 2"}, "filter"},
		{"filter too long", map[string]any{"url": epURL, "filter": strings.Repeat("a", 5000)}, "filter"},
		{"header webhook-id", map[string]any{"url": epURL, "headers": map[string]string{"Webhook-Id": "x"}}, "headers"},
		{"header webhook-signature", map[string]any{"url": epURL, "headers": map[string]string{"webhook-signature": "x"}}, "headers"},
		{"header content-type", map[string]any{"url": epURL, "headers": map[string]string{"CONTENT-TYPE": "x"}}, "headers"},
		{"header user-agent", map[string]any{"url": epURL, "headers": map[string]string{"User-Agent": "x"}}, "headers"},
		{"header bad name", map[string]any{"url": epURL, "headers": map[string]string{"X Bad": "x"}}, "headers"},
		{"header CRLF value", map[string]any{"url": epURL, "headers": map[string]string{"X-Ok": "a\r\nX-Evil: 1"}}, "headers"},
		{"secret not whsec", map[string]any{"url": epURL, "secret": "abc"}, "secret"},
		{"secret too short", map[string]any{"url": epURL, "secret": "whsec_" + "AAAA"}, "secret"},
		{"timeout zero", map[string]any{"url": epURL, "timeout_ms": 0}, "timeout_ms"},
		{"timeout too large", map[string]any{"url": epURL, "timeout_ms": 60001}, "timeout_ms"},
		{"timeout not a number", map[string]any{"url": epURL, "timeout_ms": "fast"}, "timeout_ms"},
		{"retry not a duration", map[string]any{"url": epURL, "retry_schedule": []string{"5 minutes"}}, "retry_schedule"},
		{"retry negative", map[string]any{"url": epURL, "retry_schedule": []string{"-5s"}}, "retry_schedule"},
		{"retry over a day", map[string]any{"url": epURL, "retry_schedule": []string{"25h"}}, "retry_schedule"},
		{"retry too many", map[string]any{"url": epURL, "retry_schedule": strings.Split(strings.Repeat("1s,", 21)[:62], ",")}, "retry_schedule"},
		{"rate limit negative", map[string]any{"url": epURL, "rate_limit": -1}, "rate_limit"},
		{"ordering unknown", map[string]any{"url": epURL, "ordering": "fifo"}, "ordering"},
		{"disabled not bool", map[string]any{"url": epURL, "disabled": "yes"}, "disabled"},
		{"unknown field", map[string]any{"url": epURL, "colour": "red"}, "colour"},
	}
	for _, tc := range cases {
		t.Run("create "+tc.name, func(t *testing.T) {
			r := b.do(t, "POST", path, adminToken, tc.body)
			isProblem(t, r, http.StatusUnprocessableEntity)
			if got := fieldErrors(r); len(got) == 0 || got[0] != tc.field {
				t.Fatalf("fields %v, want %s; %s", got, tc.field, r.raw)
			}
		})
		if tc.field == "url" && tc.name == "url missing" {
			continue // a PATCH need not name the url
		}
		t.Run("patch "+tc.name, func(t *testing.T) {
			r := b.do(t, "PATCH", path+"/"+ep["id"].(string), adminToken, tc.body)
			isProblem(t, r, http.StatusUnprocessableEntity)
			if got := fieldErrors(r); len(got) == 0 || got[0] != tc.field {
				t.Fatalf("fields %v, want %s; %s", got, tc.field, r.raw)
			}
		})
	}
	t.Run("several bad fields are all named", func(t *testing.T) {
		r := b.do(t, "POST", path, adminToken, map[string]any{"url": "nope", "timeout_ms": -1, "ordering": "x"})
		isProblem(t, r, 422)
		if got := fieldErrors(r); !reflect.DeepEqual(got, []string{"url", "timeout_ms", "ordering"}) {
			t.Fatalf("fields %v", got)
		}
	})
	t.Run("malformed JSON is 400", func(t *testing.T) {
		isProblem(t, b.do(t, "POST", path, adminToken, `{"url": "http://x`), http.StatusBadRequest)
	})
	t.Run("failed patch changes nothing", func(t *testing.T) {
		r := b.must(t, http.StatusOK, "GET", path+"/"+ep["id"].(string), adminToken, nil)
		if r.body["timeout_ms"] != float64(15000) || r.body["version"] != float64(1) {
			t.Fatalf("endpoint changed: %v", r.body)
		}
	})
	t.Run("valid edge values", func(t *testing.T) {
		b.must(t, http.StatusCreated, "POST", path, adminToken, map[string]any{
			"url": "https://127.0.0.1:8443/x", "timeout_ms": 1000, "retry_schedule": []string{}, "event_types": []string{"order.>", "*.created", "a"},
			"headers": map[string]string{"X-Api-Key": "v\tw"}, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		})
		b.must(t, http.StatusCreated, "POST", path, adminToken, map[string]any{"url": epURL, "timeout_ms": 60000, "retry_schedule": []string{"24h"}})
		// Short timeouts and immediate retries are allowed: tests and
		// latency-sensitive receivers use them.
		b.must(t, http.StatusCreated, "POST", path, adminToken, map[string]any{"url": epURL, "timeout_ms": 1, "retry_schedule": []string{"0s", "0s"}})
	})
}

func make101() []string {
	out := make([]string, 101)
	for i := range out {
		out[i] = "t" + strings.Repeat("x", i%5)
	}
	return out
}

func TestEndpointDestinationCheck(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *config.Config) { c.AllowPrivateDestinations = false })
	b.tenant(t, "acme")
	for _, u := range []string{"http://127.0.0.1/x", "http://10.0.0.1/x", "http://[::1]:8080/x", "http://169.254.169.254/latest", "http://0.0.0.0/"} {
		r := b.do(t, "POST", "/v1/tenants/acme/endpoints", adminToken, map[string]any{"url": u})
		isProblem(t, r, http.StatusUnprocessableEntity)
		if got := fieldErrors(r); len(got) != 1 || got[0] != "url" {
			t.Fatalf("%s: fields %v", u, got)
		}
	}
	b.must(t, http.StatusCreated, "POST", "/v1/tenants/acme/endpoints", adminToken, map[string]any{"url": "https://93.184.215.14/hook"})
}

func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.tenant(t, "acme")
	b.tenant(t, "globex")
	_, acmeKey := b.key(t, "acme")
	_, globexKey := b.key(t, "globex")
	ep := b.endpoint(t, "acme", map[string]any{"url": epURL})
	id := ep["id"].(string)

	routes := []struct{ method, path string }{
		{"POST", "/v1/tenants/acme/endpoints"},
		{"GET", "/v1/tenants/acme/endpoints"},
		{"GET", "/v1/tenants/acme/endpoints/" + id},
		{"PATCH", "/v1/tenants/acme/endpoints/" + id},
		{"DELETE", "/v1/tenants/acme/endpoints/" + id},
		{"POST", "/v1/tenants/acme/endpoints/" + id + "/secret/rotate"},
		{"POST", "/v1/tenants/acme/endpoints/" + id + "/test"},
		{"GET", "/v1/tenants/acme/endpoints/" + id + "/attempts"},
	}
	body := map[string]any{"url": epURL}
	for _, rt := range routes {
		t.Run("other tenant's key: "+rt.method+" "+rt.path, func(t *testing.T) {
			isProblem(t, b.do(t, rt.method, rt.path, globexKey, body), http.StatusNotFound)
		})
		t.Run("unknown tenant: "+rt.method+" "+rt.path, func(t *testing.T) {
			p := strings.Replace(rt.path, "/acme/", "/nobody/", 1)
			isProblem(t, b.do(t, rt.method, p, adminToken, body), http.StatusNotFound)
		})
		t.Run("endpoint of another tenant: "+rt.method+" "+rt.path, func(t *testing.T) {
			if !strings.Contains(rt.path, id) {
				return
			}
			p := strings.Replace(rt.path, "/acme/", "/globex/", 1)
			isProblem(t, b.do(t, rt.method, p, globexKey, body), http.StatusNotFound)
		})
	}
	// Nothing above changed acme's endpoint; acme's own key can use it.
	r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints/"+id, acmeKey, nil)
	if r.body["version"] != float64(1) {
		t.Fatalf("endpoint changed by another tenant: %v", r.body)
	}
	b.must(t, http.StatusCreated, "POST", "/v1/tenants/acme/endpoints", acmeKey, body)
}
