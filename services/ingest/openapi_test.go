package ingest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/hookline/hookline/services/ingest/internal/openapi"
)

// TestOpenAPIDocument holds the served document against the real routes:
// every ingest operation it lists reaches a handler (not the mux's 404 or
// 405), every route ingest registers is in it, and so is every route of the
// deadletter service's route table.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.tenant(t, "acme")

	r := b.do(t, "GET", openapi.Path, "", nil) // no token needed
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET %s: %d %s", openapi.Path, r.status, r.header.Get("Content-Type"))
	}
	if r.body["openapi"] != "3.1.0" {
		t.Fatalf("openapi %v", r.body["openapi"])
	}
	paths, _ := r.body["paths"].(map[string]any)
	inDoc := map[string]string{} // "METHOD /path" → service
	for p, item := range paths {
		for m, op := range item.(map[string]any) {
			svc, _ := op.(map[string]any)["x-hookline-service"].(string)
			inDoc[strings.ToUpper(m)+" "+p] = svc
		}
	}
	checkRefs(t, r.raw, r.body)

	t.Run("every ingest operation reaches a handler", func(t *testing.T) {
		n := 0
		for route, svc := range inDoc {
			if svc != openapi.Ingest {
				continue
			}
			n++
			method, path, _ := strings.Cut(route, " ")
			path = strings.NewReplacer("{tenant}", "acme", "{id}", "nope").Replace(path)
			req := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader(`{}`))
			req.Header.Set("Authorization", "Bearer "+adminToken)
			rec := httptest.NewRecorder()
			b.handler.ServeHTTP(rec, req)
			var p struct{ Detail string }
			_ = json.Unmarshal(rec.Body.Bytes(), &p)
			if rec.Code == http.StatusMethodNotAllowed || (rec.Code == http.StatusNotFound && strings.HasPrefix(p.Detail, "no route")) {
				t.Errorf("%s (as %s): the mux answers %d %s", route, path, rec.Code, p.Detail)
			}
		}
		if n < 20 {
			t.Fatalf("only %d ingest operations in the document", n)
		}
	})
	t.Run("every registered ingest route is documented", func(t *testing.T) {
		if len(b.patterns) < 20 {
			t.Fatalf("only %d patterns recorded", len(b.patterns))
		}
		for _, p := range b.patterns {
			svc, ok := inDoc[p]
			if !ok || svc != openapi.Ingest {
				t.Errorf("route %q is not in the document as an ingest operation (service %q)", p, svc)
			}
		}
	})
	t.Run("every deadletter route is documented", func(t *testing.T) {
		src, err := os.ReadFile("../deadletter/api.go")
		if err != nil {
			t.Skipf("deadletter source not available: %v", err)
		}
		re := regexp.MustCompile(`\{"(GET|POST|PUT|PATCH|DELETE)", "(/[^"]*)", s\.`)
		found := re.FindAllStringSubmatch(string(src), -1)
		if len(found) < 8 {
			t.Fatalf("found only %d routes in the deadletter route table; has its shape changed?", len(found))
		}
		documented := 0
		for _, m := range found {
			route := m[1] + " /v1/tenants/{tenant}" + m[2]
			if svc := inDoc[route]; svc != openapi.Deadletter {
				t.Errorf("deadletter route %q is not in the document (service %q)", route, svc)
			}
		}
		for _, svc := range inDoc {
			if svc == openapi.Deadletter {
				documented++
			}
		}
		if documented != len(found) {
			t.Errorf("document lists %d deadletter operations, the service has %d", documented, len(found))
		}
	})
	t.Run("other routes still need a token", func(t *testing.T) {
		isProblem(t, b.do(t, "GET", "/v1/tenants", "", nil), http.StatusUnauthorized)
		isProblem(t, b.do(t, "POST", openapi.Path, "", nil), http.StatusUnauthorized)
	})
}

// checkRefs fails on any $ref that does not resolve inside the document.
func checkRefs(t *testing.T, raw string, doc map[string]any) {
	t.Helper()
	for _, m := range regexp.MustCompile(`"\$ref":\s*"#/([^"]+)"`).FindAllStringSubmatch(raw, -1) {
		var cur any = doc
		for _, part := range strings.Split(m[1], "/") {
			obj, _ := cur.(map[string]any)
			cur = obj[part]
		}
		if cur == nil {
			t.Errorf("$ref #/%s does not resolve", m[1])
		}
	}
}
