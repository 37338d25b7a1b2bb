package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// request is what the fake API received.
type request struct {
	Method string
	Path   string
	Query  url.Values
	Body   map[string]any
	Auth   string
}

// fakeAPI answers each request with the next canned response for its
// "METHOD path" and records what it received.
type fakeAPI struct {
	mu        sync.Mutex
	responses map[string][]response
	got       []request
}

type response struct {
	status int
	body   string
}

func newFake(t *testing.T, responses map[string][]response) (*fakeAPI, *httptest.Server) {
	f := &fakeAPI{responses: responses}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		if len(b) > 0 {
			if err := json.Unmarshal(b, &body); err != nil {
				t.Errorf("request body is not a JSON object: %s", b)
			}
		}
		f.mu.Lock()
		f.got = append(f.got, request{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.Query(), Body: body, Auth: r.Header.Get("Authorization")})
		key := r.Method + " " + r.URL.EscapedPath()
		rs := f.responses[key]
		var resp response
		switch {
		case len(rs) == 0:
			resp = response{404, `{"type":"x","title":"Not Found","status":404,"detail":"no fake for ` + key + `"}`}
		case len(rs) == 1:
			resp = rs[0]
		default:
			resp, f.responses[key] = rs[0], rs[1:]
		}
		f.mu.Unlock()
		if resp.status >= 400 {
			w.Header().Set("Content-Type", "application/problem+json")
		} else {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(resp.status)
		_, _ = io.WriteString(w, resp.body)
	}))
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeAPI) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.got...)
}

func runCLI(t *testing.T, srvURL string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	env := map[string]string{"HOOKLINE_URL": srvURL, "HOOKLINE_TOKEN": "tok", "HOOKLINE_TENANT": "acme"}
	var out, errOut bytes.Buffer
	code = execute(t.Context(), args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

const dlPage = `{"data":[{"id":"dl_1","event_id":"evt_1","endpoint_id":"ep_1","event_type":"order.created","ordering_key":null,
"reason":"exhausted","attempts":8,"last_status_code":503,"last_error":"status 503","dead_at":"2026-11-22T10:00:00Z","replays":0,"resolved_at":null}],"next_cursor":null}`

func TestRequests(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args      []string
		key       string // "METHOD path" answered
		resp      response
		wantQuery url.Values
		wantBody  map[string]any
		wantOut   []string // substrings of stdout
	}{
		{
			name: "tenants list", args: []string{"tenants", "list"},
			key: "GET /v1/tenants", resp: response{200, `{"data":[{"id":"acme","name":"Acme Inc","created_at":"2026-01-01T00:00:00Z"}],"next_cursor":null}`},
			wantQuery: url.Values{}, wantOut: []string{"ID", "NAME", "acme", "Acme Inc"},
		},
		{
			name: "tenants create", args: []string{"tenants", "create", "--id", "acme", "--name", "Acme Inc"},
			key: "POST /v1/tenants", resp: response{201, `{"id":"acme","name":"Acme Inc","created_at":"2026-01-01T00:00:00Z"}`},
			wantBody: map[string]any{"id": "acme", "name": "Acme Inc"}, wantOut: []string{"acme"},
		},
		{
			name: "tenants delete", args: []string{"tenants", "delete", "acme"},
			key: "DELETE /v1/tenants/acme", resp: response{204, ``}, wantOut: []string{"tenant acme deleted"},
		},
		{
			name: "api key create", args: []string{"api-keys", "create", "--name", "ci"},
			key: "POST /v1/tenants/acme/api-keys", resp: response{201, `{"id":"key_1","name":"ci","token":"hlk_secret"}`},
			wantBody: map[string]any{"name": "ci"}, wantOut: []string{"hlk_secret"},
		},
		{
			name: "api key revoke", args: []string{"api-keys", "revoke", "key_1"},
			key: "DELETE /v1/tenants/acme/api-keys/key_1", resp: response{204, ``}, wantOut: []string{"revoked"},
		},
		{
			name: "endpoint create", args: []string{"endpoints", "create", "--url", "https://example.com/h", "--event-type", "order.*", "--event-type", "user.deleted", "--description", "d"},
			key: "POST /v1/tenants/acme/endpoints", resp: response{201, `{"id":"ep_1","url":"https://example.com/h","event_types":["order.*","user.deleted"]}`},
			wantBody: map[string]any{"url": "https://example.com/h", "event_types": []any{"order.*", "user.deleted"}, "description": "d"},
			wantOut:  []string{"ep_1", "order.*,user.deleted"},
		},
		{
			name: "endpoint list with limit", args: []string{"endpoints", "list", "--limit", "10"},
			key: "GET /v1/tenants/acme/endpoints", resp: response{200, `{"data":[],"next_cursor":null}`},
			wantQuery: url.Values{"limit": {"10"}}, wantOut: []string{"URL"},
		},
		{
			name: "event send", args: []string{"events", "send", "--type", "order.created", "--data", `{"n": 1}`, "--id", "o-1", "--ordering-key", "c-42"},
			key: "POST /v1/tenants/acme/events", resp: response{202, `{"id":"o-1","type":"order.created","accepted_at":"2026-01-01T00:00:00Z","duplicate":false}`},
			wantBody: map[string]any{"type": "order.created", "data": map[string]any{"n": 1.0}, "id": "o-1", "ordering_key": "c-42"},
			wantOut:  []string{"o-1", "false"},
		},
		{
			name: "event get", args: []string{"events", "get", "evt_1"},
			key: "GET /v1/tenants/acme/events/evt_1", resp: response{200, `{"id":"evt_1","type":"t","data":{"a":1},"ordering_key":null,"accepted_at":"2026-01-01T00:00:00Z",
"deliveries":[{"endpoint_id":"ep_1","status":"succeeded","attempts":1,"last_status_code":200,"last_error":null,"delivered_at":"2026-01-01T00:00:01Z"}]}`},
			wantOut: []string{"evt_1", `{"a":1}`, "ep_1", "succeeded"},
		},
		{
			name: "dead letters list with filters", args: []string{"dead-letters", "list", "--endpoint", "ep_1", "--type", "order.created", "--reason", "exhausted", "--since", "2026-11-22T09:00:00+01:00", "--include-resolved"},
			key: "GET /v1/tenants/acme/dead-letters", resp: response{200, dlPage},
			wantQuery: url.Values{"endpoint_id": {"ep_1"}, "event_type": {"order.created"}, "reason": {"exhausted"}, "since": {"2026-11-22T08:00:00Z"}, "include_resolved": {"true"}},
			wantOut:   []string{"dl_1", "exhausted", "503", "REASON"},
		},
		{
			name: "dead letter show", args: []string{"dead-letters", "show", "dl_1"},
			key: "GET /v1/tenants/acme/dead-letters/dl_1", resp: response{200, `{"id":"dl_1","reason":"exhausted","data":{"x":true},
"attempt_history":[{"event_id":"evt_1","attempt":1,"started_at":"2026-01-01T00:00:00Z","duration_ms":12,"status_code":null,"error":"timeout","response_body":null,"succeeded":false}]}`},
			wantOut: []string{"dl_1", `{"x":true}`, "ATTEMPT HISTORY", "timeout"},
		},
		{
			name: "dead letter discard", args: []string{"dead-letters", "discard", "dl_1"},
			key: "DELETE /v1/tenants/acme/dead-letters/dl_1", resp: response{204, ``}, wantOut: []string{"dl_1 discarded"},
		},
		{
			name: "replay dry run", args: []string{"replay", "--reason", "exhausted", "--endpoint", "ep_1", "--type", "t", "--until", "2026-11-22T10:00:00Z", "--rate", "10", "--dry-run"},
			key: "POST /v1/tenants/acme/replays", resp: response{200, `{"matched":7}`},
			wantBody: map[string]any{"filter": map[string]any{"reason": "exhausted", "endpoint_id": "ep_1", "event_type": "t", "until": "2026-11-22T10:00:00Z"}, "rate_per_second": 10.0, "dry_run": true},
			wantOut:  []string{"7 dead letters match"},
		},
		{
			name: "replay", args: []string{"replay"},
			key: "POST /v1/tenants/acme/replays", resp: response{202, `{"id":"rpl_1","state":"running","matched":3}`},
			wantBody: map[string]any{"filter": map[string]any{}, "rate_per_second": 50.0},
			wantOut:  []string{"3 dead letters match", "rpl_1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake, srv := newFake(t, map[string][]response{tc.key: {tc.resp}})
			code, out, errOut := runCLI(t, srv.URL, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			reqs := fake.requests()
			if len(reqs) != 1 {
				t.Fatalf("requests = %+v, want 1", reqs)
			}
			r := reqs[0]
			if r.Method+" "+r.Path != tc.key {
				t.Errorf("request = %s %s, want %s", r.Method, r.Path, tc.key)
			}
			if r.Auth != "Bearer tok" {
				t.Errorf("Authorization = %q", r.Auth)
			}
			if tc.wantQuery != nil && r.Query.Encode() != tc.wantQuery.Encode() {
				t.Errorf("query = %s, want %s", r.Query.Encode(), tc.wantQuery.Encode())
			}
			if tc.wantBody != nil {
				g, _ := json.Marshal(r.Body)
				w, _ := json.Marshal(tc.wantBody)
				if string(g) != string(w) {
					t.Errorf("body = %s, want %s", g, w)
				}
			}
			for _, s := range tc.wantOut {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
		})
	}
}

func TestJSONOutput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		key  string
		resp response
		want string // compact JSON expected on stdout
	}{
		{"list prints the items", []string{"-o", "json", "dead-letters", "list"}, "GET /v1/tenants/acme/dead-letters", response{200, dlPage},
			`[{"id":"dl_1","event_id":"evt_1","endpoint_id":"ep_1","event_type":"order.created","ordering_key":null,"reason":"exhausted","attempts":8,"last_status_code":503,"last_error":"status 503","dead_at":"2026-11-22T10:00:00Z","replays":0,"resolved_at":null}]`},
		{"empty list", []string{"dead-letters", "list", "-o", "json"}, "GET /v1/tenants/acme/dead-letters", response{200, `{"data":[],"next_cursor":null}`}, `[]`},
		{"dry run", []string{"-o", "json", "replay", "--dry-run"}, "POST /v1/tenants/acme/replays", response{200, `{"matched":2}`}, `{"matched":2}`},
		{"replay object", []string{"-o", "json", "replay"}, "POST /v1/tenants/acme/replays", response{202, `{"id":"rpl_1","state":"running","matched":2}`}, `{"id":"rpl_1","state":"running","matched":2}`},
		{"object", []string{"-o", "json", "tenants", "get", "acme"}, "GET /v1/tenants/acme", response{200, `{"id":"acme","name":"A"}`}, `{"id":"acme","name":"A"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, srv := newFake(t, map[string][]response{tc.key: {tc.resp}})
			code, out, errOut := runCLI(t, srv.URL, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			var buf bytes.Buffer
			if err := json.Compact(&buf, []byte(out)); err != nil {
				t.Fatalf("stdout is not JSON: %q", out)
			}
			if buf.String() != tc.want {
				t.Errorf("stdout = %s, want %s", buf.String(), tc.want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	problem := `{"type":"https://hookline.dev/problems/validation","title":"Unprocessable Entity","status":422,"detail":"url: must be an http or https URL","errors":[{"field":"url","message":"must be an http or https URL"}]}`
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		resp    map[string][]response
		wantErr string
	}{
		{"problem detail", []string{"endpoints", "create", "--url", "ftp://x"}, nil,
			map[string][]response{"POST /v1/tenants/acme/endpoints": {{422, problem}}}, "url: must be an http or https URL"},
		{"not found", []string{"dead-letters", "show", "dl_x"}, nil,
			map[string][]response{"GET /v1/tenants/acme/dead-letters/dl_x": {{404, `{"type":"x","title":"Not Found","status":404,"detail":"dead letter dl_x not found"}`}}}, "dead letter dl_x not found"},
		{"not a problem", []string{"tenants", "list"}, nil,
			map[string][]response{"GET /v1/tenants": {{502, `bad gateway`}}}, "502 Bad Gateway"},
		{"no tenant", []string{"dead-letters", "list"}, map[string]string{"HOOKLINE_TENANT": ""}, nil, "no tenant"},
		{"bad since", []string{"dead-letters", "list", "--since", "yesterday"}, nil, nil, "invalid time"},
		{"bad data", []string{"events", "send", "--type", "t", "--data", "{"}, nil, nil, "--data is not valid JSON"},
		{"bad output", []string{"-o", "yaml", "tenants", "list"}, nil, nil, "invalid --output"},
		{"missing flag", []string{"endpoints", "create"}, nil, nil, `"url" not set`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake, srv := newFake(t, tc.resp)
			env := map[string]string{"HOOKLINE_URL": srv.URL, "HOOKLINE_TOKEN": "tok", "HOOKLINE_TENANT": "acme"}
			for k, v := range tc.env {
				env[k] = v
			}
			var out, errOut bytes.Buffer
			code := execute(t.Context(), tc.args, func(k string) string { return env[k] }, &out, &errOut)
			if code == 0 {
				t.Fatalf("exit 0, stdout %q", out.String())
			}
			if !strings.Contains(errOut.String(), tc.wantErr) {
				t.Errorf("stderr = %q, want %q", errOut.String(), tc.wantErr)
			}
			if tc.resp == nil && len(fake.requests()) != 0 {
				t.Errorf("sent a request for a local error")
			}
		})
	}
}

func TestReplayWait(t *testing.T) {
	t.Parallel()
	fake, srv := newFake(t, map[string][]response{
		"POST /v1/tenants/acme/replays": {{202, `{"id":"rpl_1","state":"running","matched":2}`}},
		"GET /v1/tenants/acme/replays/rpl_1": {
			{200, `{"id":"rpl_1","state":"running","matched":2,"replayed":1,"succeeded":0,"failed":0}`},
			{200, `{"id":"rpl_1","state":"done","matched":2,"replayed":2,"succeeded":1,"failed":0}`},
		},
	})
	start := time.Now()
	code, out, errOut := runCLI(t, srv.URL, "replay", "--wait", "--since", "2h")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, s := range []string{"2 dead letters match", "1/2 replayed", "replay rpl_1 done: 2/2 replayed, 1 succeeded"} {
		if !strings.Contains(out, s) {
			t.Errorf("stdout lacks %q:\n%s", s, out)
		}
	}
	reqs := fake.requests()
	if len(reqs) != 3 {
		t.Fatalf("requests = %d, want 3", len(reqs))
	}
	since, err := time.Parse(time.RFC3339, reqs[0].Body["filter"].(map[string]any)["since"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if d := start.Add(-2 * time.Hour).Sub(since); d < -time.Minute || d > time.Minute {
		t.Errorf("since = %s, want about 2h ago", since)
	}
}

func TestReplayWaitCancelledFails(t *testing.T) {
	t.Parallel()
	_, srv := newFake(t, map[string][]response{
		"POST /v1/tenants/acme/replays":      {{202, `{"id":"rpl_1","state":"running","matched":2}`}},
		"GET /v1/tenants/acme/replays/rpl_1": {{200, `{"id":"rpl_1","state":"cancelled","matched":2,"replayed":1}`}},
	})
	code, out, errOut := runCLI(t, srv.URL, "-o", "json", "replay", "--wait")
	if code == 0 || !strings.Contains(errOut, "replay rpl_1 cancelled") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, `"state": "cancelled"`) {
		t.Errorf("stdout = %q, want the replay object", out)
	}
}

func TestParseSince(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in, want string
		err      bool
	}{
		{"2h", "2026-11-22T10:00:00Z", false},
		{"90m", "2026-11-22T10:30:00Z", false},
		{"7d", "2026-11-15T12:00:00Z", false},
		{"2026-11-22T10:00:00+02:00", "2026-11-22T08:00:00Z", false},
		{"yesterday", "", true},
		{"-2h", "", true},
	}
	for _, tc := range tests {
		got, err := parseSince(tc.in, now)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseSince(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestHelpDoesNotPrintToken(t *testing.T) {
	t.Parallel()
	code, out, _ := runCLI(t, "http://127.0.0.1:1", "--help")
	if code != 0 || strings.Contains(out, "tok") && strings.Contains(out, `default "tok"`) {
		t.Errorf("help shows the token or failed: %d\n%s", code, out)
	}
	if !strings.Contains(out, "completion") || !strings.Contains(out, "dead-letters") {
		t.Errorf("help lacks commands:\n%s", out)
	}
}
