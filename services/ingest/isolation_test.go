package ingest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/hookline/hookline/services/ingest/internal/openapi"
)

// TestAccessEveryRoute checks every ingest route of the OpenAPI document
// (so a new route cannot skip it): no token or a wrong one is 401, a tenant
// key on an admin-only route is 403 even in its own tenant, and another
// tenant's key on a tenant route is 404; nothing of acme's changes.
func TestAccessEveryRoute(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.tenant(t, "acme")
	b.tenant(t, "globex")
	acmeKeyID, acmeKey := b.key(t, "acme")
	_, globexKey := b.key(t, "globex")
	epID := b.endpoint(t, "acme", map[string]any{"url": epURL})["id"].(string)
	evID := b.must(t, http.StatusAccepted, "POST", "/v1/tenants/acme/events", acmeKey, map[string]any{"type": "a.b", "data": 1}).body["id"].(string)

	concrete := func(path string) string {
		id := epID
		switch {
		case strings.Contains(path, "/api-keys/"):
			id = acmeKeyID
		case strings.Contains(path, "/events/"):
			id = evID
		}
		return strings.NewReplacer("{tenant}", "acme", "{id}", id).Replace(path)
	}
	body := map[string]any{"url": epURL, "type": "a.b", "data": 1, "id": "x", "name": "x"}
	n := 0
	for _, rt := range openapi.Routes {
		if rt.Service != openapi.Ingest || rt.Public {
			continue
		}
		n++
		path := concrete(rt.Path)
		name := rt.Method + " " + rt.Path
		t.Run(name+" without token", func(t *testing.T) {
			isProblem(t, b.do(t, rt.Method, path, "", body), http.StatusUnauthorized)
			isProblem(t, b.do(t, rt.Method, path, "hlk_not-a-real-key-0000000000", body), http.StatusUnauthorized)
		})
		switch {
		case rt.Admin:
			t.Run(name+" with a tenant key", func(t *testing.T) {
				isProblem(t, b.do(t, rt.Method, path, acmeKey, body), http.StatusForbidden)
			})
		case strings.Contains(rt.Path, "{tenant}"):
			t.Run(name+" with another tenant's key", func(t *testing.T) {
				isProblem(t, b.do(t, rt.Method, path, globexKey, body), http.StatusNotFound)
			})
			if strings.Contains(rt.Path, "{id}") {
				t.Run(name+" on another tenant's resource under its own tenant", func(t *testing.T) {
					p := strings.Replace(path, "/acme/", "/globex/", 1)
					isProblem(t, b.do(t, rt.Method, p, globexKey, body), http.StatusNotFound)
				})
			}
		default:
			t.Errorf("route %s is neither admin-only nor under a tenant: decide and test its access rule", name)
		}
	}
	if n < 20 {
		t.Fatalf("only %d routes checked", n)
	}
	// Nothing above changed acme's things, and its key still works.
	r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints/"+epID, acmeKey, nil)
	if r.body["version"] != float64(1) {
		t.Fatalf("endpoint changed: %v", r.body)
	}
	b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/events/"+evID, acmeKey, nil)
	b.must(t, http.StatusOK, "GET", "/v1/tenants/acme", adminToken, nil)
}
