package dispatcher_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/ids"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// orderReceiver records, per ordering key, the sequence numbers of the
// events it received, in arrival order.
type orderReceiver struct {
	*httptest.Server
	fail func(key string, n int) bool

	mu       sync.Mutex
	first    map[string][]int // first receipts per key
	seen     map[string]bool  // webhook-id seen
	dups     int
	requests atomic.Int64
	times    []time.Time
}

type orderData struct {
	Key string `json:"key"`
	N   int    `json:"n"`
}

func newOrderReceiver(t *testing.T, fail func(key string, n int) bool) *orderReceiver {
	t.Helper()
	r := &orderReceiver{fail: fail, first: map[string][]int{}, seen: map[string]bool{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var env struct {
			Data orderData `json:"data"`
		}
		_ = json.Unmarshal(body, &env)
		r.requests.Add(1)
		r.mu.Lock()
		r.times = append(r.times, time.Now())
		r.mu.Unlock()
		if r.fail(env.Data.Key, env.Data.N) {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		id := req.Header.Get("Webhook-Id")
		r.mu.Lock()
		if r.seen[id] {
			r.dups++
		} else {
			r.seen[id] = true
			r.first[env.Data.Key] = append(r.first[env.Data.Key], env.Data.N)
		}
		r.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *orderReceiver) delivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *orderReceiver) keyCount(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.first[key])
}

// checkOrder fails unless every key's first receipts are 0, 1, 2, ...
func (r *orderReceiver) checkOrder(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, ns := range r.first {
		if key == "" {
			continue
		}
		for i, n := range ns {
			if n != i {
				t.Errorf("key %s: first receipts out of order: %v", key, ns)
				break
			}
		}
	}
}

// publishOrdered publishes event n of key (""  for none) to endpoint.
func (b *bundle) publishOrdered(t *testing.T, endpointID, key string, n int) {
	t.Helper()
	evID := ids.New(ids.Event)
	data, _ := json.Marshal(orderData{Key: key, N: n})
	d := &hooklinev1.Delivery{
		Id: ids.DeliveryFor("acme", evID, endpointID), TenantId: "acme", EventId: evID, EndpointId: endpointID,
		EventType: "order.created", Data: data, OrderingKey: key,
		AcceptedAt: timestamppb.New(apitime.Now()), CreatedAt: timestamppb.New(apitime.Now()),
	}
	payload, err := proto.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.PublishMsgAsync(bus.NewMsg(bus.DeliverySubject("acme", endpointID, key), bus.DeliveryMsgID(d.GetId(), 0), payload)); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) flush(t *testing.T) {
	t.Helper()
	select {
	case <-b.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishes not acknowledged")
	}
}

func waitWithin(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPerKeyOrderTwoReplicas: two dispatchers, a receiver failing a random
// 20% of requests, 50 keys × 20 events and 200 keyless events. Every event
// arrives, and each key's first receipts are in publish order.
func TestPerKeyOrderTwoReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2)) //nolint:gosec // test randomness
	rcv := newOrderReceiver(t, func(string, int) bool {
		mu.Lock()
		defer mu.Unlock()
		return rng.Float64() < 0.2
	})
	b.putEndpoint(t, "ep_1", rcv.URL, 5, 10, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20)
	b.start(t)
	b.start(t)

	const keys, per, keyless = 50, 20, 200
	start := time.Now()
	for n := range per {
		for k := range keys {
			b.publishOrdered(t, "ep_1", fmt.Sprint("key-", k), n)
		}
		for i := range keyless / per {
			b.publishOrdered(t, "ep_1", "", n*keyless/per+i)
		}
	}
	b.flush(t)
	total := keys*per + keyless
	waitWithin(t, 90*time.Second, "every event delivered", func() bool { return rcv.delivered() >= total })
	elapsed := time.Since(start)
	rcv.checkOrder(t)
	rcv.mu.Lock()
	dups := rcv.dups
	rcv.mu.Unlock()
	t.Logf("%d events (%d keys × %d + %d keyless) delivered by 2 replicas in %s (%.0f/s), %d requests, %d duplicates",
		total, keys, per, keyless, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), rcv.requests.Load(), dups)
	if n := len(b.deadLetters(t)); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}

// TestBlockedKeyDelaysNoOther: one key's receiver path fails until released;
// the other keys and keyless events are all delivered meanwhile, and the
// blocked key's events then arrive in order.
func TestBlockedKeyDelaysNoOther(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var stuck atomic.Bool
	stuck.Store(true)
	rcv := newOrderReceiver(t, func(key string, _ int) bool { return key == "stuck" && stuck.Load() })
	b.putEndpoint(t, "ep_1", rcv.URL, 100, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200)
	b.start(t)

	const keys, per = 10, 10
	for n := range per {
		b.publishOrdered(t, "ep_1", "stuck", n)
		for k := range keys {
			b.publishOrdered(t, "ep_1", fmt.Sprint("key-", k), n)
		}
		b.publishOrdered(t, "ep_1", "", n)
	}
	b.flush(t)
	waitWithin(t, 30*time.Second, "other keys delivered while one is blocked", func() bool {
		return rcv.delivered() >= keys*per+per
	})
	if n := rcv.keyCount("stuck"); n != 0 {
		t.Fatalf("blocked key delivered %d events while failing", n)
	}
	waitWithin(t, 30*time.Second, "the blocked key's deliveries all parked", func() bool {
		var parked int
		_ = b.pool.QueryRow(t.Context(), `SELECT count(*) FROM parked_deliveries`).Scan(&parked)
		return parked == per
	})
	stuck.Store(false)
	waitWithin(t, 60*time.Second, "blocked key drained", func() bool { return rcv.keyCount("stuck") == per })
	rcv.checkOrder(t)
	waitWithin(t, 10*time.Second, "key unblocked", func() bool {
		var n int
		_ = b.pool.QueryRow(t.Context(), `SELECT count(*) FROM blocked_keys`).Scan(&n)
		return n == 0
	})
}

// TestKeyBlockedByItsHeadInOneRun: with one dispatcher, whose deliveries
// come in one run (so most heads are known without a lookup, and so is the
// key's blocked state after a head that left it unblocked), a head that
// fails once blocks its key: the key's later events, already in hand, are
// parked behind it instead of overtaking it, while another key flows.
func TestKeyBlockedByItsHeadInOneRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var failed atomic.Bool
	rcv := newOrderReceiver(t, func(key string, n int) bool {
		return key == "blocked" && n == 2 && failed.CompareAndSwap(false, true)
	})
	b.putEndpoint(t, "ep_1", rcv.URL, 500, 500, 500)
	b.start(t)
	const per = 10
	for n := range per {
		b.publishOrdered(t, "ep_1", "blocked", n)
		b.publishOrdered(t, "ep_1", "flowing", n)
	}
	b.flush(t)
	waitWithin(t, 30*time.Second, "both keys delivered", func() bool {
		return rcv.keyCount("blocked") == per && rcv.keyCount("flowing") == per
	})
	rcv.checkOrder(t)
	if !failed.Load() {
		t.Fatal("the receiver never failed the head")
	}
}

// TestBreakerHoldsWithoutSpendingAttempts: an endpoint failing every request
// opens its circuit after 5 failures; its deliveries then wait without
// attempts (and without a dead letter) until a probe succeeds.
func TestBreakerHoldsWithoutSpendingAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var down atomic.Bool
	down.Store(true)
	rcv := newOrderReceiver(t, func(string, int) bool { return down.Load() })
	sched := make([]uint64, 20)
	for i := range sched {
		sched[i] = 50
	}
	b.putEndpoint(t, "ep_1", rcv.URL, sched...)
	b.start(t)
	b.start(t)
	for n := range 10 {
		b.publishOrdered(t, "ep_1", "", n)
		b.publishOrdered(t, "ep_1", "k", n)
	}
	b.flush(t)
	circuit := func() string {
		var c string
		if err := b.pool.QueryRow(t.Context(), `SELECT circuit FROM endpoint_circuits WHERE endpoint_id = 'ep_1'`).Scan(&c); err != nil {
			return "closed"
		}
		return c
	}
	waitWithin(t, 30*time.Second, "circuit open", func() bool { return circuit() == "open" })
	// While open (5 s cool-down), no request is made once every replica
	// has read the shared state (every 500 ms): the count stays put, but
	// for one probe if this slow machine let the cool-down pass meanwhile.
	time.Sleep(time.Second)
	opened := rcv.requests.Load()
	time.Sleep(2 * time.Second)
	if now := rcv.requests.Load(); now > opened+1 {
		t.Errorf("%d requests while the circuit was open", now-opened)
	}
	if opened > 15 {
		t.Errorf("%d requests before the circuit opened, want about 5 (+ one refresh of the other replica)", opened)
	}
	down.Store(false)
	waitWithin(t, 60*time.Second, "every event delivered after the probe", func() bool { return rcv.delivered() == 20 })
	waitWithin(t, 10*time.Second, "circuit closed", func() bool { return circuit() == "closed" })
	rcv.checkOrder(t)
	if n := len(b.deadLetters(t)); n != 0 {
		t.Errorf("%d dead letters", n)
	}
	// Attempts were not spent while held: 20 attempts each would have
	// exhausted them.
	var maxAttempts int
	waitFor(t, "attempt rows", func() bool {
		_ = b.pool.QueryRow(t.Context(), `SELECT coalesce(max(attempts), 0) FROM deliveries`).Scan(&maxAttempts)
		return maxAttempts > 0
	})
	if maxAttempts > 8 {
		t.Errorf("a delivery spent %d attempts", maxAttempts)
	}
}

// TestRateLimitAcrossReplicas: two replicas share an endpoint's 5 requests
// per second; no one-second window sees more than the rate plus one burst
// per replica.
func TestRateLimitAcrossReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newOrderReceiver(t, func(string, int) bool { return false })
	ep := b.putEndpoint(t, "ep_1", rcv.URL, 100)
	ep.RateLimit = 5
	ep.Version++
	if err := endpoints.Put(t.Context(), b.kv, ep); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	b.start(t)
	// Both replicas must see each other before the rate is shared.
	var hb jetstream.KeyValue
	waitWithin(t, 20*time.Second, "two heartbeats", func() bool {
		kv, err := b.js.KeyValue(t.Context(), "hookline_dispatchers")
		if err != nil {
			return false
		}
		hb = kv
		keys, err := kv.Keys(t.Context())
		return err == nil && len(keys) == 2
	})
	// A replica beats by writing its key and then listing the keys; once
	// each key has been written twice more, each replica has listed both
	// since (a beat can come late on a loaded machine, so this waits for
	// the writes instead of sleeping a beat). A missed change only makes
	// this wait longer.
	revs, changes := map[string]uint64{}, map[string]int{}
	waitWithin(t, 20*time.Second, "each replica counted the other", func() bool {
		keys, err := hb.Keys(t.Context())
		if err != nil {
			return false
		}
		done := len(keys) == 2
		for _, k := range keys {
			e, err := hb.Get(t.Context(), k)
			if err != nil {
				return false
			}
			if last, ok := revs[k]; ok && e.Revision() != last {
				changes[k]++
			}
			revs[k] = e.Revision()
			done = done && changes[k] >= 2
		}
		return done
	})
	const total = 25
	for n := range total {
		b.publishOrdered(t, "ep_1", "", n)
	}
	b.flush(t)
	waitWithin(t, 60*time.Second, "every event delivered", func() bool { return rcv.delivered() == total })
	rcv.mu.Lock()
	times := append([]time.Time(nil), rcv.times...)
	rcv.mu.Unlock()
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	// Receipt times bunch on a loaded machine (the receiver is scheduled
	// late), so the checks allow for it: the busiest two-second window
	// holds at most 2 × rate, one burst per replica and 3 of slack, and the
	// whole run cannot be much shorter than (requests - bursts) / rate.
	worst := 0
	for i := range times {
		j := i
		for j < len(times) && times[j].Sub(times[i]) < 2*time.Second {
			j++
		}
		worst = max(worst, j-i)
	}
	span := times[len(times)-1].Sub(times[0])
	t.Logf("%d requests in %s (limit 5/s over 2 replicas: at least %s); busiest two-second window: %d",
		len(times), span.Round(time.Millisecond), time.Duration(total-2)*time.Second/5, worst)
	if worst > 2*5+2+3 {
		t.Errorf("%d requests in two seconds, limit 5/s", worst)
	}
	least := 4 * time.Duration(total-3) * time.Second / 25 // 0.8 × (total-3) / 5 s
	if span < least {
		t.Errorf("%d requests in %s, want at least %s at 5/s", len(times), span, least)
	}
}

// TestHeldPastHorizonExpires: a delivery the open circuit holds past its
// retry horizon (schedule + 1 day from created_at) is dead as "expired",
// without an attempt; a younger one is held.
func TestHeldPastHorizonExpires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newOrderReceiver(t, func(string, int) bool { return false })
	b.putEndpoint(t, "ep_1", rcv.URL, 1000)
	if _, err := b.pool.Exec(t.Context(), `
INSERT INTO endpoint_circuits (endpoint_id, circuit, open_until, opens) VALUES ('ep_1', 'open', now() + interval '1 hour', 1)`); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	publish := func(key string, created time.Time) *hooklinev1.Delivery {
		evID := ids.New(ids.Event)
		d := &hooklinev1.Delivery{
			Id: ids.DeliveryFor("acme", evID, "ep_1"), TenantId: "acme", EventId: evID, EndpointId: "ep_1",
			EventType: "order.created", Data: []byte(`{}`), OrderingKey: key,
			AcceptedAt: timestamppb.New(created), CreatedAt: timestamppb.New(created),
		}
		payload, err := proto.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.js.PublishMsg(t.Context(), bus.NewMsg(bus.DeliverySubject("acme", "ep_1", key), bus.DeliveryMsgID(d.GetId(), 0), payload)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	oldKeyless := publish("", time.Now().Add(-25*time.Hour))
	oldKeyed := publish("k", time.Now().Add(-25*time.Hour))
	young := publish("", time.Now())
	dls := b.waitDead(t, 2)
	got := map[string]string{}
	for _, dl := range dls {
		got[dl.GetDelivery().GetId()] = dl.GetReason()
		if dl.GetAttempts() != 0 {
			t.Errorf("expired delivery spent %d attempts", dl.GetAttempts())
		}
	}
	if got[oldKeyless.GetId()] != "expired" || got[oldKeyed.GetId()] != "expired" {
		t.Errorf("dead letters %v, want both old deliveries expired", got)
	}
	if _, ok := got[young.GetId()]; ok {
		t.Error("a delivery within its horizon expired")
	}
	waitFor(t, "young delivery held", func() bool {
		var n int
		_ = b.pool.QueryRow(t.Context(), `SELECT count(*) FROM delivery_retries WHERE delivery_id = $1`, young.GetId()).Scan(&n)
		return n == 1
	})
	if n := rcv.requests.Load(); n != 0 {
		t.Errorf("%d requests through an open circuit", n)
	}
}
