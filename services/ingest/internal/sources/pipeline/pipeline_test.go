package pipeline

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/freeport"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	"github.com/hookline/hookline/pkg/secretbox"
	"github.com/hookline/hookline/pkg/signature"
	"github.com/hookline/hookline/services/dispatcher"
	"github.com/hookline/hookline/services/fanout"
	"github.com/hookline/hookline/services/ingest"
)

const adminToken = "pipeline-admin-token-0123456789"

type delivery struct {
	header http.Header
	body   []byte
}

// TestGitHubPushReachesEndpoint sends a push signed the way GitHub signs it
// to a source and checks that the endpoint receives it as a Hookline
// delivery: Standard Webhooks signature, webhook-id = X-GitHub-Delivery,
// the push payload as data.
func TestGitHubPushReachesEndpoint(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	ns := natstest.Start(t)
	apiAddr := freeport.Addr(t)
	keys := secretbox.NewKey("pipe")
	cfgFor := func(httpAddr string) config.Config {
		env := map[string]string{
			config.EnvNATSURL: ns.URL(), config.EnvDatabaseURL: dbURL, config.EnvAdminToken: adminToken,
			config.EnvAllowPrivate: "true", config.EnvOpsAddr: "off", config.EnvHTTPAddr: httpAddr,
			config.EnvShutdownTimeout: "5s", config.EnvEncryptionKeys: keys,
		}
		cfg, err := config.Load(func(k string) string { return env[k] }, config.Need{NATS: true, Database: true, AdminToken: true})
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	start := func(name string, run func(context.Context, config.Config, *slog.Logger) error, cfg config.Config) {
		wg.Go(func() {
			if err := run(ctx, cfg, log.With("service", name)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	start("ingest", ingest.Run, cfgFor(apiAddr))

	got := make(chan delivery, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- delivery{header: r.Header.Clone(), body: body}
	}))
	t.Cleanup(recv.Close)

	api := "http://" + apiAddr
	call := func(method, url string, body []byte, h http.Header) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	admin := func(method, path string, body any) (int, map[string]any) {
		b, _ := json.Marshal(body)
		return call(method, api+path, b, http.Header{"Authorization": {"Bearer " + adminToken}, "Content-Type": {"application/json"}})
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if code, _ := admin("GET", "/v1/tenants", nil); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ingest API never answered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := admin("POST", "/v1/tenants", map[string]any{"id": "acme"}); code != http.StatusCreated {
		t.Fatalf("create tenant: %d %v", code, body)
	}
	epSecret := signature.NewSecret()
	if code, body := admin("POST", "/v1/tenants/acme/endpoints", map[string]any{
		"url": recv.URL + "/github", "event_types": []string{"github.>"}, "secret": epSecret,
	}); code != http.StatusCreated {
		t.Fatalf("create endpoint: %d %v", code, body)
	}
	const ghSecret = "gh-webhook-secret"
	code, src := admin("POST", "/v1/tenants/acme/sources", map[string]any{
		"name":     "github",
		"verifier": map[string]any{"kind": "github", "secret": ghSecret},
		"mapping": map[string]any{
			"event_type":   map[string]any{"expression": `"github." + headers["x-github-event"]`},
			"ordering_key": map[string]any{"expression": `body.repository.full_name`},
		},
	})
	if code != http.StatusCreated {
		t.Fatalf("create source: %d %v", code, src)
	}
	// Fan-out and the dispatcher start now, so that the endpoint is in
	// their first load of the configuration: one started before would learn
	// of it through its watch, a moment after the API answered, and the push
	// could be fanned out before that.
	start("fanout", fanout.Run, cfgFor("off"))
	start("dispatcher", dispatcher.Run, cfgFor("off"))

	push := []byte(`{"ref":"refs/heads/main","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","repository":{"full_name":"octo/hello"}}`)
	m := hmac.New(sha256.New, []byte(ghSecret))
	m.Write(push)
	deliveryID := "f1f2c3d4-0000-11ef-8000-0242ac120002"
	h := http.Header{
		"Content-Type":        {"application/json"},
		"User-Agent":          {"GitHub-Hookshot/abc123"},
		"X-Github-Event":      {"push"},
		"X-Github-Delivery":   {deliveryID},
		"X-Hub-Signature-256": {"sha256=" + hex.EncodeToString(m.Sum(nil))},
	}
	code, res := call("POST", src["ingest_url"].(string), push, h)
	if code != http.StatusAccepted || res["id"] != deliveryID {
		t.Fatalf("ingest: %d %v", code, res)
	}

	var d delivery
	select {
	case d = <-got:
	case <-time.After(60 * time.Second):
		t.Fatal("the push never reached the endpoint")
	}
	if d.header.Get("webhook-id") != deliveryID {
		t.Fatalf("webhook-id %q, want %q", d.header.Get("webhook-id"), deliveryID)
	}
	if err := signature.Verify([]string{epSecret}, d.header.Get("webhook-id"), d.header.Get("webhook-timestamp"),
		d.header.Get("webhook-signature"), d.body, time.Now()); err != nil {
		t.Fatalf("delivery signature: %v", err)
	}
	var env struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(d.body, &env); err != nil {
		t.Fatal(err)
	}
	if env.Type != "github.push" || !bytes.Equal(env.Data, push) {
		t.Fatalf("delivered %s", d.body)
	}

	// GitHub's redelivery of the same X-GitHub-Delivery is a duplicate and
	// is not delivered twice.
	if code, res := call("POST", src["ingest_url"].(string), push, h); code != http.StatusAccepted || res["duplicate"] != true {
		t.Fatalf("redelivery: %d %v", code, res)
	}
	code, ev := admin("GET", "/v1/tenants/acme/events/"+deliveryID, nil)
	if code != http.StatusOK {
		t.Fatalf("get event: %d %v", code, ev)
	}
	select {
	case d := <-got:
		// The receiver answered 200 the first time: nothing may follow.
		t.Fatalf("a second delivery arrived: webhook-id %q", d.header.Get("webhook-id"))
	case <-time.After(2 * time.Second):
	}
}
