package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const sourceJSON = `{"id":"src_1","tenant_id":"acme","name":"github","ingest_url":null,
"verifier":{"kind":"github"},"secret_set":true,"previous_secret_expires_at":null,
"mapping":{"event_type":{"header":"X-GitHub-Event"},"ordering_key":null,"event_id":{"header":"X-GitHub-Delivery"}},
"filter":null,"format":"json","created_at":"2026-11-22T10:00:00Z","updated_at":"2026-11-22T10:00:00Z"}`

// sourcesAPI is a stand-in for the sources routes; it records the last
// request body per "METHOD path".
func sourcesAPI(t *testing.T) (*httptest.Server, map[string]map[string]any) {
	t.Helper()
	got := map[string]map[string]any{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(b, &body)
		got[r.Method+" "+r.URL.Path] = body
		w.Header().Set("Content-Type", "application/json")
		switch r.Method + " " + r.URL.Path {
		case "POST /v1/tenants/acme/sources":
			w.WriteHeader(201)
			_, _ = io.WriteString(w, strings.Replace(sourceJSON, `"ingest_url":null`, `"ingest_url":"http://h/v1/in/hlsrc_x"`, 1))
		case "GET /v1/tenants/acme/sources":
			_, _ = io.WriteString(w, `{"data":[`+sourceJSON+`],"next_cursor":null}`)
		case "DELETE /v1/tenants/acme/sources/src_1":
			w.WriteHeader(204)
		default:
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"type":"x","title":"Not Found","status":404,"detail":"source nope not found"}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func runSources(t *testing.T, url string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := map[string]string{"HOOKLINE_URL": url, "HOOKLINE_TOKEN": "tok", "HOOKLINE_TENANT": "acme"}
	code := execute(t.Context(), args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestSourcesCommands(t *testing.T) {
	t.Parallel()
	srv, got := sourcesAPI(t)

	code, out, errOut := runSources(t, srv.URL, "sources", "create", "--name", "github", "--verifier", "github", "--secret", "s",
		"--type", `expr:"github." + headers["x-github-event"]`, "--ordering-key", "header:X-Repo")
	if code != 0 || !strings.Contains(out, "http://h/v1/in/hlsrc_x") || !strings.Contains(errOut, "shown only now") {
		t.Fatalf("create: %d %q %q", code, out, errOut)
	}
	body := got["POST /v1/tenants/acme/sources"]
	b, _ := json.Marshal(body)
	want := `{"mapping":{"event_type":{"expression":"\"github.\" + headers[\"x-github-event\"]"},"ordering_key":{"header":"X-Repo"}},"name":"github","verifier":{"kind":"github","secret":"s"}}`
	if string(b) != want {
		t.Fatalf("create sent %s\nwant %s", b, want)
	}

	code, out, _ = runSources(t, srv.URL, "sources", "list")
	if code != 0 || !strings.Contains(out, "VERIFIER") || !strings.Contains(out, "header:X-GitHub-Event") || !strings.Contains(out, "github") {
		t.Fatalf("list: %d %q", code, out)
	}
	code, out, _ = runSources(t, srv.URL, "sources", "list", "-o", "json")
	var items []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &items) != nil || len(items) != 1 || items[0]["id"] != "src_1" {
		t.Fatalf("list -o json: %d %q", code, out)
	}
	if code, _, _ := runSources(t, srv.URL, "sources", "delete", "src_1"); code != 0 {
		t.Fatalf("delete: %d", code)
	}
	code, _, errOut = runSources(t, srv.URL, "sources", "get", "nope")
	if code == 0 || !strings.Contains(errOut, "source nope not found") {
		t.Fatalf("get missing: %d %q", code, errOut)
	}
	code, _, errOut = runSources(t, srv.URL, "sources", "create", "--name", "x", "--verifier", "none", "--type", "X-Event")
	if code == 0 || !strings.Contains(errOut, "header:NAME") {
		t.Fatalf("bad rule: %d %q", code, errOut)
	}
}
