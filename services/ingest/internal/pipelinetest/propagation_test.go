package pipelinetest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/freeport"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	"github.com/hookline/hookline/pkg/secretbox"
	"github.com/hookline/hookline/pkg/signature"
	"github.com/hookline/hookline/services/dispatcher"
	"github.com/hookline/hookline/services/fanout"
	"github.com/hookline/hookline/services/ingest"
)

const adminToken = "propagation-admin-token-0123456789"

// maxLag is how long a change may take to reach every replica. CONTRACT 2.2
// allows 2 s; the design aims at about 1 s. Six engineers share two cores
// while tests run, so the assertion uses the contract's bound and the
// measured figure is logged.
const maxLag = 2 * time.Second

// received is one request the receiver got.
type received struct {
	id, typ  string
	keep     bool
	at       time.Time
	ts, sigs string
	body     []byte
}

// sent is one event the producer had accepted.
type sent struct {
	id, typ    string
	keep       bool
	acceptedAt time.Time
}

// TestConfigPropagation changes an endpoint's event_types, filter and secret
// while events flow through ingest, two fan-out replicas and a dispatcher,
// and checks that deliveries follow each change within maxLag of the API's
// answer.
func TestConfigPropagation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the pipeline for ~15 s")
	}
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	ns := natstest.Start(t)
	apiAddr := freeport.Addr(t)
	keys := secretbox.NewKey("prop")
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
			if err := run(ctx, cfg, log.With("replica", name)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	start("ingest", ingest.Run, cfgFor(apiAddr))
	start("fanout-1", fanout.Run, cfgFor("off"))
	start("fanout-2", fanout.Run, cfgFor("off"))
	start("dispatcher", dispatcher.Run, cfgFor("off"))

	var mu sync.Mutex
	var got []received
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var env struct {
			Type string `json:"type"`
			Data struct {
				Keep bool `json:"keep"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &env)
		mu.Lock()
		got = append(got, received{id: r.Header.Get("webhook-id"), typ: env.Type, keep: env.Data.Keep, at: time.Now(),
			ts: r.Header.Get("webhook-timestamp"), sigs: r.Header.Get("webhook-signature"), body: body})
		mu.Unlock()
	}))
	t.Cleanup(recv.Close)

	api := "http://" + apiAddr
	call := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequestWithContext(ctx, method, api+path, rd)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := call("GET", "/v1/tenants", nil); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ingest API never answered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := call("POST", "/v1/tenants", map[string]any{"id": "acme"}); code != http.StatusCreated {
		t.Fatalf("create tenant: %d %v", code, body)
	}
	s1, s2 := signature.NewSecret(), signature.NewSecret()
	code, ep := call("POST", "/v1/tenants/acme/endpoints", map[string]any{
		"url": recv.URL + "/hook", "event_types": []string{"order.*"}, "secret": s1, "ordering": "none", "retry_schedule": []string{"1s"},
	})
	if code != http.StatusCreated {
		t.Fatalf("create endpoint: %d %v", code, ep)
	}
	epPath := "/v1/tenants/acme/endpoints/" + ep["id"].(string)

	// The producer alternates order.created and invoice.paid, keep true and
	// false, so that every phase has events that should and should not go.
	var sentMu sync.Mutex
	var all []sent
	prodCtx, stopProducer := context.WithCancel(ctx)
	var prod sync.WaitGroup
	prod.Go(func() {
		for i := 0; prodCtx.Err() == nil; i++ {
			typ := []string{"order.created", "invoice.paid"}[i%2]
			keep := (i/2)%2 == 0
			code, body := call("POST", "/v1/tenants/acme/events", map[string]any{"type": typ, "data": map[string]any{"seq": i, "keep": keep}})
			if code == http.StatusAccepted {
				at, _ := time.Parse(time.RFC3339Nano, body["accepted_at"].(string))
				sentMu.Lock()
				all = append(all, sent{id: body["id"].(string), typ: typ, keep: keep, acceptedAt: at})
				sentMu.Unlock()
			}
			select {
			case <-prodCtx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	})

	// Warm up: wait for the first delivery, so every service is consuming.
	waitFor(t, 60*time.Second, "first delivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 })

	type phase struct {
		name   string
		change map[string]any
		types  string // prefix a delivered event's type must have
		filter bool   // only keep == true
		secret string
		at     time.Time // when the API answered the change
	}
	phases := []*phase{
		{name: "initial", types: "order.", secret: s1, at: time.Now()},
		{name: "event_types", change: map[string]any{"event_types": []string{"invoice.*"}}, types: "invoice.", secret: s1},
		{name: "filter", change: map[string]any{"filter": "data.keep == true"}, types: "invoice.", filter: true, secret: s1},
		{name: "secret", change: map[string]any{"secret": s2}, types: "invoice.", filter: true, secret: s2},
	}
	time.Sleep(2 * time.Second)
	// A cache like the hot path's, to time how long a change takes to
	// arrive from the moment the PATCH is sent.
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	kv, err := bus.EnsureEndpointsBucket(ctx, js, bus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := secretbox.Parse(keys)
	cache := endpoints.NewCache(kv, log, endpoints.WithSecrets(ring))
	go func() { _ = cache.Run(ctx) }()
	epID := ep["id"].(string)
	for i, p := range phases[1:] {
		sentAt := time.Now()
		if code, body := call("PATCH", epPath, p.change); code != http.StatusOK {
			t.Fatalf("%s: PATCH %d %v", p.name, code, body)
		}
		p.at = time.Now()
		want := uint64(i + 2)
		waitFor(t, 10*time.Second, "the change in a cache", func() bool {
			e, _ := cache.Get(ctx, epID)
			return e.GetVersion() >= want
		})
		t.Logf("change %-11s: PATCH answered in %v, in a watching cache %v after it was sent",
			p.name, p.at.Sub(sentAt).Round(time.Millisecond), time.Since(sentAt).Round(time.Millisecond))
		time.Sleep(3 * time.Second)
	}
	stopProducer()
	prod.Wait()
	last := phases[len(phases)-1]

	matches := func(p *phase, typ string, keep bool) bool {
		return strings.HasPrefix(typ, p.types) && (!p.filter || keep)
	}
	// Every event of the last phase that matches, accepted once the change
	// had time to arrive, is delivered.
	sentMu.Lock()
	var want []sent
	for _, s := range all {
		if s.acceptedAt.After(last.at.Add(maxLag)) && matches(last, s.typ, s.keep) {
			want = append(want, s)
		}
	}
	sentMu.Unlock()
	if len(want) < 5 {
		t.Fatalf("only %d events to check in the last phase; the producer was too slow", len(want))
	}
	waitFor(t, 30*time.Second, "deliveries of the last phase", func() bool {
		mu.Lock()
		defer mu.Unlock()
		seen := map[string]bool{}
		for _, r := range got {
			seen[r.id] = true
		}
		for _, s := range want {
			if !seen[s.id] {
				return false
			}
		}
		return true
	})
	time.Sleep(500 * time.Millisecond) // let stragglers of earlier events arrive

	sentMu.Lock()
	acceptedAt := map[string]time.Time{}
	for _, s := range all {
		acceptedAt[s.id] = s.acceptedAt
	}
	sentMu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	// secretsFrom(k): the secrets of phase k and every later one.
	secretsFrom := func(k int) []string {
		var out []string
		for _, ph := range phases[k:] {
			out = append(out, ph.secret)
		}
		return out
	}
	// lag[k]: the latest an event accepted after change k was still handled
	// by the old configuration, counted from the API's answer.
	for k := 1; k < len(phases); k++ {
		p, prev := phases[k], phases[k-1]
		var lag time.Duration
		stale := 0
		for _, r := range got {
			at, ok := acceptedAt[r.id]
			if !ok || !at.After(p.at) {
				continue
			}
			if k+1 < len(phases) && !at.Before(phases[k+1].at) {
				continue
			}
			// An attempt is signed when it is made, with the secret of that
			// moment: an event accepted in this phase and delivered after
			// a later change of secret carries the later one.
			signedNew := signature.Verify(secretsFrom(k), r.id, r.ts, r.sigs, r.body, time.Now()) == nil
			if matches(p, r.typ, r.keep) && signedNew {
				continue
			}
			// Not what the new configuration says: it must be what the old one said.
			signedOld := signature.Verify(secretsFrom(k-1), r.id, r.ts, r.sigs, r.body, time.Now()) == nil
			if !matches(prev, r.typ, r.keep) || !signedOld {
				t.Errorf("%s: event %s (%s, keep %v) delivered, matching neither the old nor the new configuration", p.name, r.id, r.typ, r.keep)
				continue
			}
			stale++
			lag = max(lag, at.Sub(p.at))
		}
		t.Logf("change %-11s: %d deliveries under the old configuration, last accepted %v after the API answered", p.name, stale, lag.Round(time.Millisecond))
		if lag > maxLag {
			t.Errorf("change %s took %v to reach the hot path, want at most %v", p.name, lag, maxLag)
		}
	}
	if t.Failed() {
		t.Logf("%d events sent, %d deliveries received", len(acceptedAt), len(got))
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
