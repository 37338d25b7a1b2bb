package ingest

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzEndpointDecoder feeds arbitrary bytes to the endpoint create and PATCH
// routes: never a panic, never a 5xx, and every refusal is a problem.
func FuzzEndpointDecoder(f *testing.F) {
	b := setup(f, nil)
	b.tenant(f, "acme")
	ep := b.endpoint(f, "acme", map[string]any{"url": epURL})
	patchPath := "/v1/tenants/acme/endpoints/" + ep["id"].(string)
	for _, seed := range []string{
		`{"url":"http://127.0.0.1:9/hook"}`,
		`{"url":"https://example.com/x","description":"d","event_types":["order.*","a.>"],"filter":"data.amount > 100",` +
			`"headers":{"X-A":"b"},"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw","timeout_ms":1000,"retry_schedule":["1s","5m"],` +
			`"rate_limit":5,"ordering":"none","disabled":true,"propagate_trace":false}`,
		`{"url":null,"filter":null,"headers":null,"event_types":null,"retry_schedule":null,"timeout_ms":null}`,
		`{"filter":"data.a.b.c[0] == 'x' && size(data) > 2"}`,
		`{"filter":"` + "\x00" + `"}`,
		`{"headers":{"webhook-id":"x","X\r\nY":"z"}}`,
		`{"timeout_ms":1e309}`, `{"timeout_ms":-0.5}`, `{"rate_limit":99999999999999999999}`,
		`{"retry_schedule":["9223372036854775807ns","-1h","1e9h"]}`,
		`{"url":"http://[::1]:99999/","secret":"whsec_!!!"}`,
		`{"event_types":["*",">","a..b",""]}`,
		`{"disabled":"yes"}`, `{"url":"http://a"} {}`, `[]`, `null`, ``, `"x"`, "\xff\xfe{",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, rt := range []struct{ method, path string }{
			{http.MethodPost, "/v1/tenants/acme/endpoints"},
			{http.MethodPatch, patchPath},
		} {
			req := httptest.NewRequestWithContext(t.Context(), rt.method, rt.path, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+adminToken)
			rec := httptest.NewRecorder()
			b.handler.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s: status %d for %q: %s", rt.method, rec.Code, body, rec.Body)
			}
			if rec.Code >= 300 && rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%s: status %d without a problem: %s", rt.method, rec.Code, rec.Body)
			}
		}
	})
}
