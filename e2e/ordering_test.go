package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/freeport"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
)

type ordSizes struct {
	keys, perKey, keyless int
	endpoints             int
	fanouts, dispatchers  int
	// down: endpoint 0 answers 503 to everything for this long mid-run.
	down   time.Duration
	within time.Duration
}

// ordReceiver records first receipts per ordering key and counts
// duplicates; it fails a random 20% of requests with 500, and everything
// while down.
type ordReceiver struct {
	url string

	mu       sync.Mutex
	rng      *rand.Rand
	down     bool
	first    map[string][]int
	seen     map[string]bool
	dups     int
	requests int
}

func newOrdReceiver(t *testing.T, seed uint64) *ordReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &ordReceiver{url: "http://" + ln.Addr().String() + "/hook", rng: rand.New(rand.NewPCG(seed, 7)), //nolint:gosec // test
		first: map[string][]int{}, seen: map[string]bool{}}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		var env struct {
			Data struct {
				Key string `json:"key"`
				N   int    `json:"n"`
			} `json:"data"`
		}
		_ = json.Unmarshal(b, &env)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.requests++
		if r.down || r.rng.Float64() < 0.2 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		id := req.Header.Get("webhook-id")
		if r.seen[id] {
			r.dups++
		} else {
			r.seen[id] = true
			r.first[env.Data.Key] = append(r.first[env.Data.Key], env.Data.N)
		}
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

func (r *ordReceiver) setDown(down bool) {
	r.mu.Lock()
	r.down = down
	r.mu.Unlock()
}

func (r *ordReceiver) delivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// TestOrderingProperty is issue 5's property test with separate processes:
// fan-out and dispatcher replicas, receivers failing 20% at random, one
// dispatcher killed with SIGKILL and another added mid-run. Every event
// reaches every endpoint, and per key the first receipts are in acceptance
// order.
func TestOrderingProperty(t *testing.T) {
	sc := ordScale
	srv := natstest.Start(t)
	dbURL := pgtest.NewDatabase(t)
	const admin = "e2e-ordering-admin-token-0123456789"
	env := func(ops, httpAddr string) map[string]string {
		return map[string]string{
			"HOOKLINE_NATS_URL":                   srv.URL(),
			"HOOKLINE_DATABASE_URL":               dbURL,
			"HOOKLINE_ADMIN_TOKEN":                admin,
			"HOOKLINE_ALLOW_PRIVATE_DESTINATIONS": "true",
			"HOOKLINE_LOG_LEVEL":                  "warn",
			"HOOKLINE_SHUTDOWN_TIMEOUT":           "10s",
			"HOOKLINE_OPS_ADDR":                   ops,
			"HOOKLINE_HTTP_ADDR":                  httpAddr,
		}
	}
	run := func(name, httpAddr string) *proc {
		ops := freeport.Addr(t)
		p := start(t, name, env(ops, httpAddr))
		waitReady(t, p, ops)
		return p
	}
	ingestAddr := freeport.Addr(t)
	run("hookline-ingest", ingestAddr)
	for range sc.fanouts {
		run("hookline-fanout", "off")
	}
	var dispatchers []*proc
	for range sc.dispatchers {
		dispatchers = append(dispatchers, run("hookline-dispatcher", "off"))
	}
	a := api{base: "http://" + ingestAddr, token: admin}
	a.must(t, "POST", "/v1/tenants", map[string]any{"id": "ord", "name": "Ordering"}, http.StatusCreated, nil)
	schedule := make([]string, 20)
	for i := range schedule {
		schedule[i] = []string{"50ms", "100ms", "250ms", "500ms", "1s"}[min(i, 4)]
		if i >= 10 {
			schedule[i] = "3s"
		}
	}
	var rcvs []*ordReceiver
	for i := range sc.endpoints {
		r := newOrdReceiver(t, uint64(i+1)) //nolint:gosec // small
		rcvs = append(rcvs, r)
		a.must(t, "POST", "/v1/tenants/ord/endpoints", map[string]any{"url": r.url, "retry_schedule": schedule}, http.StatusCreated, nil)
	}
	time.Sleep(2500 * time.Millisecond) // endpoint configuration reaches every replica

	// Events in acceptance order: round n of every key, with keyless
	// events spread between rounds.
	type item struct {
		Type        string         `json:"type"`
		Data        map[string]any `json:"data"`
		OrderingKey string         `json:"ordering_key,omitempty"`
	}
	var all []item
	for n := range sc.perKey {
		for k := range sc.keys {
			all = append(all, item{Type: "order.updated", Data: map[string]any{"key": fmt.Sprint("key-", k), "n": n}, OrderingKey: fmt.Sprint("key-", k)})
		}
		for i := range sc.keyless / sc.perKey {
			all = append(all, item{Type: "order.updated", Data: map[string]any{"key": "", "n": n*sc.keyless/sc.perKey + i}})
		}
	}
	total := len(all)
	begin := time.Now()
	killed := false
	var downSince time.Time
	for off := 0; off < total; off += 500 {
		batch := all[off:min(off+500, total)]
		var res struct {
			Results []struct {
				ID    string          `json:"id"`
				Error json.RawMessage `json:"error"`
			} `json:"results"`
		}
		a.must(t, "POST", "/v1/tenants/ord/events/batch", map[string]any{"events": batch}, http.StatusAccepted, &res)
		for i, r := range res.Results {
			if r.ID == "" || len(r.Error) > 0 && string(r.Error) != "null" {
				t.Fatalf("event %d refused: %s", off+i, r.Error)
			}
		}
		if !killed && off+500 >= total/2 {
			killed = true
			// Mid-run: one dispatcher dies hard, a new one joins.
			if err := dispatchers[0].cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			<-dispatchers[0].done
			dispatchers = append(dispatchers, run("hookline-dispatcher", "off"))
			if sc.down > 0 {
				rcvs[0].setDown(true)
				downSince = time.Now()
			}
		}
	}
	if sc.down > 0 {
		time.Sleep(time.Until(downSince.Add(sc.down)))
		rcvs[0].setDown(false)
	}
	deadline := time.Now().Add(sc.within)
	for {
		done := true
		for _, r := range rcvs {
			if r.delivered() < total {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			for i, r := range rcvs {
				t.Logf("endpoint %d: %d of %d delivered", i, r.delivered(), total)
			}
			t.Fatalf("not every event delivered within %s", sc.within)
		}
		time.Sleep(250 * time.Millisecond)
	}
	elapsed := time.Since(begin)
	dups, requests, missing, violations := 0, 0, 0, 0
	for i, r := range rcvs {
		r.mu.Lock()
		missing += total - len(r.seen)
		keyless := len(r.first[""])
		if keyless != sc.keyless/sc.perKey*sc.perKey {
			t.Errorf("endpoint %d: %d keyless events received, want %d", i, keyless, sc.keyless/sc.perKey*sc.perKey)
		}
		for k := range sc.keys {
			key := fmt.Sprint("key-", k)
			ns := r.first[key]
			if len(ns) != sc.perKey {
				missing += max(sc.perKey-len(ns), 0)
				t.Errorf("endpoint %d key %s: %d first receipts, want %d", i, key, len(ns), sc.perKey)
			}
			// A violation is a first receipt that arrives after a later
			// event of its key.
			for j := 1; j < len(ns); j++ {
				if ns[j] <= ns[j-1] {
					violations++
				}
			}
			for j, n := range ns {
				if n != j {
					t.Errorf("endpoint %d key %s: first receipts out of order: %v", i, key, ns)
					break
				}
			}
		}
		dups += r.dups
		requests += r.requests
		r.mu.Unlock()
	}
	t.Logf("ordering property: %d events × %d endpoints (%d keys × %d + %d keyless), %d fan-outs, %d dispatchers (one SIGKILLed, one added), "+
		"endpoint 0 down %s: all delivered in %s, %d requests", total, sc.endpoints, sc.keys, sc.perKey, sc.keyless, sc.fanouts, sc.dispatchers,
		sc.down, elapsed.Round(time.Second), requests)
	t.Logf("ordering property figures: missing = %d, order violations = %d, duplicates = %d (allowed: at-least-once)", missing, violations, dups)
	if missing != 0 || violations != 0 {
		t.Errorf("missing = %d, order violations = %d: want 0 and 0", missing, violations)
	}
}
