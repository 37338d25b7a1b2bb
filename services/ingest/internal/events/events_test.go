package events

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/auth"
	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/ids"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/ops"
	"github.com/hookline/hookline/pkg/pgtest"
	"github.com/hookline/hookline/proto/hooklinev1"
)

const (
	adminToken    = "admin-token-0123456789"
	testMaxEvent  = 4096
	tenantID      = "acme"
	otherTenantID = "globex"
)

type bundle struct {
	svc    *Service
	pool   *pgxpool.Pool
	nats   *natstest.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	url    string
	token  string // acme's API key
	other  string // globex's API key
	mux    http.Handler
	stream jetstream.Stream
}

func setup(t testing.TB) *bundle {
	t.Helper()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	if err := bus.EnsureStreams(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{pool: pool, nats: ns, nc: nc, js: js, stream: stream}
	b.token = addTenant(t, pool, tenantID)
	b.other = addTenant(t, pool, otherTenantID)

	cfg := config.Config{MaxEventBytes: testMaxEvent, ShutdownTimeout: 5 * time.Second}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.svc = New(pool, js, cfg, log)
	b.svc.publishTimeout = 2 * time.Second
	b.svc.nakDelay = 100 * time.Millisecond
	mux := http.NewServeMux()
	b.svc.Register(mux)
	b.mux = auth.New(adminToken, pool).Middleware(mux)
	srv := httptest.NewServer(b.mux)
	t.Cleanup(srv.Close)
	b.url = srv.URL
	return b
}

func addTenant(t testing.TB, pool *pgxpool.Pool, id string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ($1, $1)`, id); err != nil {
		t.Fatalf("insert tenant: %v", err)
	}
	token, hash := auth.NewToken()
	if _, err := pool.Exec(ctx, `INSERT INTO api_keys (id, tenant_id, name, token_hash) VALUES ($1, $2, 'test', $3)`,
		ids.New(ids.APIKey), id, hash); err != nil {
		t.Fatalf("insert api key: %v", err)
	}
	return token
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return m
}

func (b *bundle) do(t testing.TB, method, path, token, body string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, b.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: data}
}

func (b *bundle) post(t testing.TB, body string, hdr ...string) response {
	t.Helper()
	return b.do(t, http.MethodPost, "/v1/tenants/acme/events", b.token, body, hdr...)
}

func (b *bundle) streamMsgs(t testing.TB) uint64 {
	t.Helper()
	info, err := b.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// eventMsgs returns the messages in HOOKLINE_EVENTS in stream order.
func (b *bundle) eventMsgs(t testing.TB) []*jetstream.RawStreamMsg {
	t.Helper()
	info, err := b.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := b.stream.GetMsg(context.Background(), seq)
		if err != nil {
			continue
		}
		out = append(out, m)
	}
	return out
}

// partitionKeys returns two ordering keys that share an event subject and a
// third on another.
func partitionKeys(t testing.TB) (a, b, c string) {
	t.Helper()
	bySubject := map[string][]string{}
	for i := range 1000 {
		k := fmt.Sprintf("key-%d", i)
		subj := bus.EventSubject(tenantID, k)
		bySubject[subj] = append(bySubject[subj], k)
		if len(bySubject[subj]) == 2 {
			a, b = bySubject[subj][0], bySubject[subj][1]
			break
		}
	}
	for i := range 1000 {
		if k := fmt.Sprintf("other-%d", i); bus.EventSubject(tenantID, k) != bus.EventSubject(tenantID, a) {
			return a, b, k
		}
	}
	t.Fatal("no keys found")
	return
}

// TestBatchGroupedPerSubject: a batch's events go to HOOKLINE_EVENTS as one
// message (hooklinev1.Events) per subject, in input order: the tenant's
// keyless events, and its keyed events of each key partition; an event
// alone on its subject is a plain event message under its own Msg-Id.
func TestBatchGroupedPerSubject(t *testing.T) {
	t.Parallel()
	b := setup(t)
	keyA, keyB, keyC := partitionKeys(t)
	keys := []string{"", "", keyA, "", keyB, keyC, keyA}
	var items []string
	for i, key := range keys {
		if key != "" {
			key = fmt.Sprintf(`,"ordering_key":%q`, key)
		}
		items = append(items, fmt.Sprintf(`{"type":"order.created","data":{"i":%d},"id":"g-%d"%s}`, i, i, key))
	}
	res := b.do(t, http.MethodPost, "/v1/tenants/acme/events/batch", b.token, `{"events":[`+strings.Join(items, ",")+`]}`)
	if res.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	msgs := b.eventMsgs(t)
	want := []struct {
		subject string
		ids     []string
	}{
		{bus.EventSubject(tenantID, ""), []string{"g-0", "g-1", "g-3"}},
		{bus.EventSubject(tenantID, keyA), []string{"g-2", "g-4", "g-6"}},
		{bus.EventSubject(tenantID, keyC), []string{"g-5"}},
	}
	if len(msgs) != len(want) {
		t.Fatalf("%d stream messages, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		w := want[i]
		if m.Subject != w.subject {
			t.Errorf("message %d on %s, want %s", i, m.Subject, w.subject)
		}
		if len(w.ids) == 1 {
			ev := decodeEventMsg(t, m)
			if ev.GetId() != w.ids[0] || m.Header.Get(bus.HeaderEvents) != "" || m.Header.Get(bus.HeaderMsgID) != bus.EventMsgID(tenantID, ev.GetId()) ||
				ev.GetOrderingKey() != keyC {
				t.Errorf("message %d: event %s (key %q), headers %v", i, ev.GetId(), ev.GetOrderingKey(), m.Header)
			}
			continue
		}
		var g hooklinev1.Events
		if err := proto.Unmarshal(m.Data, &g); err != nil {
			t.Fatal(err)
		}
		var got []string
		for j, ev := range g.GetEvents() {
			got = append(got, ev.GetId())
			n, _ := strconv.Atoi(strings.TrimPrefix(ev.GetId(), "g-"))
			if ev.GetTenantId() != tenantID || ev.GetOrderingKey() != keys[n] || ev.GetAcceptedAt() == nil {
				t.Errorf("message %d, event %d: %+v", i, j, ev)
			}
		}
		if !slices.Equal(got, w.ids) || len(g.GetTraceparents()) != len(w.ids) {
			t.Errorf("message %d holds %v (%d traceparents), want %v", i, got, len(g.GetTraceparents()), w.ids)
		}
		if m.Header.Get(bus.HeaderEvents) != strconv.Itoa(len(w.ids)) || m.Header.Get(bus.HeaderMsgID) != bus.EventsMsgID(tenantID, got) {
			t.Errorf("message %d: headers %v", i, m.Header)
		}
	}
}

// streamEvents returns the events of msgs in stream order, groups taken
// apart, each checked to be on its subject.
func streamEvents(t testing.TB, msgs []*jetstream.RawStreamMsg) []*hooklinev1.Event {
	t.Helper()
	var out []*hooklinev1.Event
	for _, m := range msgs {
		evs := []*hooklinev1.Event{}
		if m.Header.Get(bus.HeaderEvents) == "" {
			evs = append(evs, decodeEventMsg(t, m))
		} else {
			var g hooklinev1.Events
			if err := proto.Unmarshal(m.Data, &g); err != nil {
				t.Fatal(err)
			}
			evs = g.GetEvents()
		}
		for _, ev := range evs {
			if want := bus.EventSubject(ev.GetTenantId(), ev.GetOrderingKey()); m.Subject != want {
				t.Errorf("event %s on %s, want %s", ev.GetId(), m.Subject, want)
			}
		}
		out = append(out, evs...)
	}
	return out
}

// TestSinglesPublishedTogether: keyless single events published together
// (as concurrent requests' are) make one message; a copy of an event
// published before (a duplicate request's) goes alone, under the event's
// own Nats-Msg-Id, so JetStream drops it.
func TestSinglesPublishedTogether(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var items []published
	for i := range 3 {
		items = append(items, published{ev: &hooklinev1.Event{TenantId: tenantID, Id: fmt.Sprint("s-", i), Type: "a",
			Data: []byte(`{}`), AcceptedAt: timestamppb.Now()}, trace: t.Context()})
	}
	if err := b.svc.publishTogether(t.Context(), items); err != nil {
		t.Fatal(err)
	}
	msgs := b.eventMsgs(t)
	if len(msgs) != 1 || msgs[0].Header.Get(bus.HeaderEvents) != "3" {
		t.Fatalf("%d messages (first's headers %v), want one of 3 events", len(msgs), msgs[0].Header)
	}
	ev := items[0].ev
	for range 2 {
		errs := b.svc.publish(t.Context(), []*hooklinev1.Event{ev}, nil, []bool{false})
		if errs[0] != nil {
			t.Fatal(errs[0])
		}
	}
	if msgs := b.eventMsgs(t); len(msgs) != 2 || msgs[1].Header.Get(bus.HeaderMsgID) != bus.EventMsgID(tenantID, ev.GetId()) {
		t.Errorf("after publishing a copy twice: %d messages, want 2 (the copy once, under its own Msg-Id)", len(msgs))
	}
}

// TestChunkEvents: groups hold at most groupMaxEvents events and
// groupMaxBytes of data; an event larger than that goes alone.
func TestChunkEvents(t *testing.T) {
	t.Parallel()
	sized := func(sizes ...int) ([]*hooklinev1.Event, []int) {
		var evs []*hooklinev1.Event
		var idx []int
		for i, n := range sizes {
			evs = append(evs, &hooklinev1.Event{Data: make([]byte, n)})
			idx = append(idx, i)
		}
		return evs, idx
	}
	evs, idx := sized(make([]int, groupMaxEvents+1)...)
	if got := chunkEvents(evs, idx); len(got) != 2 || len(got[0]) != groupMaxEvents || len(got[1]) != 1 {
		t.Errorf("%d events: chunks of %v", len(idx), got)
	}
	evs, idx = sized(groupMaxBytes/2, groupMaxBytes/2, 1, groupMaxBytes+1, 1)
	got := chunkEvents(evs, idx)
	if want := [][]int{{0, 1}, {2}, {3}, {4}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("chunks by size %v, want %v", got, want)
	}
}

func decodeEventMsg(t testing.TB, m *jetstream.RawStreamMsg) *hooklinev1.Event {
	t.Helper()
	var ev hooklinev1.Event
	if err := proto.Unmarshal(m.Data, &ev); err != nil {
		t.Fatalf("decode event message: %v", err)
	}
	return &ev
}

func (b *bundle) count(t testing.TB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// inOutbox holds for an events row whose outbox row is still there: the
// event waits for JetStream's acknowledgement.
const inOutbox = `EXISTS (SELECT 1 FROM event_outbox o WHERE o.tenant_id = events.tenant_id AND o.id = events.id)`

// eventually polls cond until it holds or 10 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCreateEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := b.post(t, `{"type":"order.created","data":{"amount": 42, "nested": [1, "x"]},"ordering_key":"customer-42"}`)
	if res.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	got := res.json(t)
	id, _ := got["id"].(string)
	if !strings.HasPrefix(id, ids.Event) || got["type"] != "order.created" || got["duplicate"] != false {
		t.Fatalf("response %s", res.body)
	}
	acceptedAt, err := time.Parse(time.RFC3339Nano, got["accepted_at"].(string))
	if err != nil || time.Since(acceptedAt) > time.Minute {
		t.Fatalf("accepted_at %v: %v", got["accepted_at"], err)
	}

	msgs := b.eventMsgs(t)
	if len(msgs) != 1 {
		t.Fatalf("%d messages in %s, want 1", len(msgs), bus.StreamEvents)
	}
	m := msgs[0]
	if want := bus.EventSubject(tenantID, "customer-42"); m.Subject != want {
		t.Errorf("subject %q, want %q", m.Subject, want)
	}
	if got, want := m.Header.Get(bus.HeaderMsgID), bus.EventMsgID(tenantID, id); got != want {
		t.Errorf("Nats-Msg-Id %q, want %q", got, want)
	}
	ev := decodeEventMsg(t, m)
	if ev.GetId() != id || ev.GetTenantId() != tenantID || ev.GetType() != "order.created" ||
		ev.GetOrderingKey() != "customer-42" || string(ev.GetData()) != `{"amount": 42, "nested": [1, "x"]}` ||
		!ev.GetAcceptedAt().AsTime().Equal(acceptedAt) {
		t.Errorf("event message %v", ev)
	}
	if err := b.svc.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE tenant_id = 'acme' AND id = $1 AND source = 'http' AND NOT `+inOutbox, id); n != 1 {
		t.Errorf("published rows %d, want 1", n)
	}
}

func TestProducerIDAndDuplicates(t *testing.T) {
	t.Parallel()
	b := setup(t)

	first := b.post(t, `{"type":"order.created","data":{"n":1},"id":"order-1"}`)
	if first.status != http.StatusAccepted || first.json(t)["id"] != "order-1" {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	// The same id again, even with another body, answers the first response.
	again := b.post(t, `{"type":"order.updated","data":{"n":2},"id":"order-1"}`)
	if again.status != http.StatusAccepted {
		t.Fatalf("again: %d %s", again.status, again.body)
	}
	f, a := first.json(t), again.json(t)
	if a["duplicate"] != true || a["id"] != f["id"] || a["type"] != "order.created" || a["accepted_at"] != f["accepted_at"] {
		t.Errorf("duplicate response %s, first %s", again.body, first.body)
	}

	k1 := b.post(t, `{"type":"order.created","data":{"n":3}}`, "Idempotency-Key", "key-1")
	k2 := b.post(t, `{"type":"order.created","data":{"n":3}}`, "Idempotency-Key", "key-1")
	if k1.status != http.StatusAccepted || k2.status != http.StatusAccepted {
		t.Fatalf("idempotency: %d %s / %d %s", k1.status, k1.body, k2.status, k2.body)
	}
	j1, j2 := k1.json(t), k2.json(t)
	if j1["duplicate"] != false || j2["duplicate"] != true || j1["id"] != j2["id"] || j1["accepted_at"] != j2["accepted_at"] {
		t.Errorf("idempotent responses %s / %s", k1.body, k2.body)
	}
	// The key is per tenant.
	other := b.do(t, http.MethodPost, "/v1/tenants/globex/events", b.other, `{"type":"order.created","data":{}}`, "Idempotency-Key", "key-1")
	if other.status != http.StatusAccepted || other.json(t)["duplicate"] != false {
		t.Errorf("other tenant: %d %s", other.status, other.body)
	}

	if n := b.streamMsgs(t); n != 3 {
		t.Errorf("%d stream messages, want 3", n)
	}
	if n := b.count(t, `SELECT count(*) FROM events`); n != 3 {
		t.Errorf("%d event rows, want 3", n)
	}
}

// TestIdempotencyKeyExpires: an Idempotency-Key is a duplicate within 24
// hours only; an event id stays a duplicate forever.
func TestIdempotencyKeyExpires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := b.post(t, `{"type":"order.created","data":{"n":1},"id":"evt-old"}`, "Idempotency-Key", "k-old").json(t)
	if first["duplicate"] != false {
		t.Fatalf("first %v", first)
	}
	if _, err := b.pool.Exec(t.Context(), `UPDATE events SET accepted_at = accepted_at - interval '25 hours' WHERE id = 'evt-old'`); err != nil {
		t.Fatal(err)
	}
	again := b.post(t, `{"type":"order.created","data":{"n":2}}`, "Idempotency-Key", "k-old").json(t)
	if again["duplicate"] != false || again["id"] == "evt-old" {
		t.Fatalf("a key older than 24 h must start a new event: %v", again)
	}
	third := b.post(t, `{"type":"order.created","data":{"n":3}}`, "Idempotency-Key", "k-old").json(t)
	if third["duplicate"] != true || third["id"] != again["id"] {
		t.Fatalf("the key now names the new event: %v", third)
	}
	byID := b.post(t, `{"type":"order.created","data":{"n":4},"id":"evt-old"}`).json(t)
	if byID["duplicate"] != true || byID["id"] != "evt-old" {
		t.Fatalf("an old id stays a duplicate: %v", byID)
	}
	if n := b.streamMsgs(t); n != 2 {
		t.Errorf("%d stream messages, want 2", n)
	}
}

func TestConcurrentDuplicates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		body string
		hdr  []string
	}{
		{"same id", `{"type":"order.created","data":{},"id":"evt-race"}`, nil},
		{"same idempotency key", `{"type":"order.created","data":{}}`, []string{"Idempotency-Key", "race-key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			var wg sync.WaitGroup
			var mu sync.Mutex
			seen := map[string]int{}
			dups := 0
			for range 100 {
				wg.Go(func() {
					res := b.post(t, tc.body, tc.hdr...)
					if res.status != http.StatusAccepted {
						t.Errorf("status %d: %s", res.status, res.body)
						return
					}
					m := res.json(t)
					mu.Lock()
					defer mu.Unlock()
					seen[m["id"].(string)+" "+m["accepted_at"].(string)]++
					if m["duplicate"] == true {
						dups++
					}
				})
			}
			wg.Wait()
			if len(seen) != 1 || dups != 99 {
				t.Errorf("responses %v, %d duplicates; want one event and 99 duplicates", seen, dups)
			}
			if n := b.count(t, `SELECT count(*) FROM events`); n != 1 {
				t.Errorf("%d rows, want 1", n)
			}
			if n := b.streamMsgs(t); n != 1 {
				t.Errorf("%d stream messages, want 1", n)
			}
		})
	}
}

func TestCreateEventValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	big := `{"type":"a","data":"` + strings.Repeat("x", testMaxEvent) + `"}`
	huge := `{"type":"a","data":"` + strings.Repeat("x", testMaxEvent+envelopeBytes) + `"}`
	for _, tc := range []struct {
		name   string
		body   string
		hdr    []string
		status int
		field  string
	}{
		{"type missing", `{"data":{}}`, nil, 422, "type"},
		{"type invalid", `{"type":"order..created","data":{}}`, nil, 422, "type"},
		{"type with space", `{"type":"order created","data":{}}`, nil, 422, "type"},
		{"type not a string", `{"type":5,"data":{}}`, nil, 422, "type"},
		{"data missing", `{"type":"order.created"}`, nil, 422, "data"},
		{"id pattern", `{"type":"a","data":1,"id":"bad id!"}`, nil, 422, "id"},
		{"id too long", `{"type":"a","data":1,"id":"` + strings.Repeat("a", 65) + `"}`, nil, 422, "id"},
		{"id empty", `{"type":"a","data":1,"id":""}`, nil, 422, "id"},
		{"ordering key too long", `{"type":"a","data":1,"ordering_key":"` + strings.Repeat("k", 257) + `"}`, nil, 422, "ordering_key"},
		{"idempotency key too long", `{"type":"a","data":1}`, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 422, "Idempotency-Key"},
		{"unknown field", `{"type":"a","data":1,"extra":true}`, nil, 422, "extra"},
		{"data too large", big, nil, 413, ""},
		{"body too large", huge, nil, 413, ""},
		{"malformed JSON", `{"type":"a","data":`, nil, 400, ""},
		{"not an object", `[1,2]`, nil, 400, ""},
		{"empty body", ``, nil, 400, ""},
		{"trailing data", `{"type":"a","data":1} {}`, nil, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := b.post(t, tc.body, tc.hdr...)
			if res.status != tc.status {
				t.Fatalf("status %d, want %d: %s", res.status, tc.status, res.body)
			}
			if ct := res.header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("content type %q", ct)
			}
			if tc.field == "" {
				return
			}
			var p struct {
				Errors []struct{ Field string } `json:"errors"`
			}
			_ = json.Unmarshal(res.body, &p)
			if len(p.Errors) == 0 || p.Errors[0].Field != tc.field {
				t.Errorf("errors %s, want field %s", res.body, tc.field)
			}
		})
	}
	if n := b.count(t, `SELECT count(*) FROM events`); n != 0 {
		t.Errorf("%d events stored from invalid requests", n)
	}
	// Any JSON value is data.
	for _, data := range []string{`null`, `"text"`, `[1,2]`, `3.5e2`, `true`} {
		if res := b.post(t, `{"type":"a","data":`+data+`}`); res.status != http.StatusAccepted {
			t.Errorf("data %s: %d %s", data, res.status, res.body)
		}
	}
}

func TestTenantAccess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := `{"type":"a","data":1}`
	if res := b.do(t, http.MethodPost, "/v1/tenants/globex/events", b.token, body); res.status != http.StatusNotFound {
		t.Errorf("other tenant's key: %d", res.status)
	}
	if res := b.do(t, http.MethodPost, "/v1/tenants/nope/events", adminToken, body); res.status != http.StatusNotFound {
		t.Errorf("unknown tenant: %d", res.status)
	}
	if res := b.do(t, http.MethodPost, "/v1/tenants/acme/events", "wrong", body); res.status != http.StatusUnauthorized {
		t.Errorf("bad token: %d", res.status)
	}
	if res := b.do(t, http.MethodPost, "/v1/tenants/acme/events", adminToken, body); res.status != http.StatusAccepted {
		t.Errorf("admin: %d %s", res.status, res.body)
	}
	if res := b.do(t, http.MethodGet, "/v1/rejected-events", b.token, ""); res.status != http.StatusForbidden {
		t.Errorf("rejected events with a tenant key: %d", res.status)
	}
}

func TestBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var items []string
	for i := range 20 {
		items = append(items, fmt.Sprintf(`{"type":"order.created","data":{"i":%d},"ordering_key":"k%d","id":"b-%02d"}`, i, i%2, i))
	}
	items[5] = `{"type":"bad type","data":{}}`
	items[7] = `"not an object"`
	items[9] = `{"type":"order.created","data":{},"id":"b-00"}` // duplicate of item 0
	res := b.do(t, http.MethodPost, "/v1/tenants/acme/events/batch", b.token, `{"events":[`+strings.Join(items, ",")+`]}`)
	if res.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	var got struct {
		Results []struct {
			ID        string
			Duplicate bool
			Error     *struct {
				Status int
				Errors []struct{ Field string }
			}
		}
	}
	if err := json.Unmarshal(res.body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Results) != 20 {
		t.Fatalf("%d results", len(got.Results))
	}
	for i, r := range got.Results {
		switch i {
		case 5:
			if r.Error == nil || r.Error.Status != 422 || r.Error.Errors[0].Field != "type" {
				t.Errorf("item 5: %+v", r)
			}
		case 7:
			if r.Error == nil || r.Error.Status != 400 {
				t.Errorf("item 7: %+v", r)
			}
		case 9:
			if r.Error != nil || r.ID != "b-00" || !r.Duplicate {
				t.Errorf("item 9: %+v", r)
			}
		default:
			if r.Error != nil || r.ID != fmt.Sprintf("b-%02d", i) || r.Duplicate {
				t.Errorf("item %d: %+v", i, r)
			}
		}
	}
	// Per ordering key, the stream holds the items in order: the 17 events,
	// one group per key partition; item 9, a duplicate of item 0 in the
	// same batch, published no copy of it.
	msgs := b.eventMsgs(t)
	wantMsgs := 2
	if bus.EventSubject(tenantID, "k0") == bus.EventSubject(tenantID, "k1") {
		wantMsgs = 1
	}
	if len(msgs) != wantMsgs {
		t.Fatalf("%d stream messages, want %d", len(msgs), wantMsgs)
	}
	evs := streamEvents(t, msgs)
	if len(evs) != 17 {
		t.Fatalf("%d events in the stream, want 17", len(evs))
	}
	last := map[string]string{}
	for _, ev := range evs {
		if prev := last[ev.GetOrderingKey()]; prev >= ev.GetId() {
			t.Errorf("key %s: %s after %s", ev.GetOrderingKey(), ev.GetId(), prev)
		}
		last[ev.GetOrderingKey()] = ev.GetId()
	}

	// A value the event store refuses (here, data that skipped the JSON
	// check) fails alone; the others of its statement are stored.
	outs := b.svc.acceptAll(t.Context(), []Input{
		{TenantID: tenantID, ID: "d-1", Type: "a", Data: []byte(`1`)},
		{TenantID: tenantID, ID: "d-2", Type: "a", Data: []byte(`{`), jsonChecked: true},
		{TenantID: tenantID, ID: "d-3", Type: "a", Data: []byte(`3`)},
	})
	if outs[0].err != nil || outs[2].err != nil || outs[0].res.ID != "d-1" || outs[2].res.ID != "d-3" {
		t.Errorf("good events of a statement with a refused one: %+v", outs)
	}
	if p := problem(outs[1].err); p == nil || p.Status != 422 {
		t.Errorf("refused event: %v", outs[1].err)
	}

	for _, tc := range []struct{ name, body string }{
		{"missing events", `{}`},
		{"too many", `{"events":[` + strings.TrimSuffix(strings.Repeat(`{"type":"a","data":1},`, MaxBatch+1), ",") + `]}`},
		{"unknown field", `{"events":[],"x":1}`},
	} {
		if res := b.do(t, http.MethodPost, "/v1/tenants/acme/events/batch", b.token, tc.body); res.status != 422 {
			t.Errorf("%s: %d %s", tc.name, res.status, res.body)
		}
	}
}

func TestGetEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	res := b.post(t, `{"type":"order.created","data":{"a":[1,2]},"id":"e1","ordering_key":"k"}`)
	if res.status != http.StatusAccepted {
		t.Fatalf("%d %s", res.status, res.body)
	}
	acceptedAt := res.json(t)["accepted_at"]

	get := b.do(t, http.MethodGet, "/v1/tenants/acme/events/e1", b.token, "")
	if get.status != http.StatusOK {
		t.Fatalf("%d %s", get.status, get.body)
	}
	m := get.json(t)
	if m["id"] != "e1" || m["type"] != "order.created" || m["ordering_key"] != "k" || m["accepted_at"] != acceptedAt {
		t.Errorf("event %s", get.body)
	}
	if data, _ := json.Marshal(m["data"]); string(data) != `{"a":[1,2]}` {
		t.Errorf("data %s", data)
	}
	if d, ok := m["deliveries"].([]any); !ok || len(d) != 0 {
		t.Errorf("deliveries %v, want []", m["deliveries"])
	}

	// An older delivery to ep_1 was replayed; ep_2 is pending.
	for _, q := range []string{
		`INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, last_status_code, last_error, created_at)
		 VALUES ('dlv_1', 'acme', 'e1', 'ep_1', 'dead', 3, 500, 'status 500', now() - interval '1 hour')`,
		`INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, last_status_code, delivered_at, created_at)
		 VALUES ('dlv_2', 'acme', 'e1', 'ep_1', 'succeeded', 1, 200, '2026-11-22T10:00:00Z', now())`,
		`INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id) VALUES ('dlv_3', 'acme', 'e1', 'ep_2')`,
		`INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id) VALUES ('dlv_4', 'globex', 'e1', 'ep_3')`,
	} {
		if _, err := b.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	get = b.do(t, http.MethodGet, "/v1/tenants/acme/events/e1", b.token, "")
	var ev struct {
		Deliveries []map[string]any `json:"deliveries"`
	}
	if err := json.Unmarshal(get.body, &ev); err != nil {
		t.Fatal(err)
	}
	if len(ev.Deliveries) != 2 {
		t.Fatalf("deliveries %s", get.body)
	}
	d1, d2 := ev.Deliveries[0], ev.Deliveries[1]
	if d1["endpoint_id"] != "ep_1" || d1["status"] != "succeeded" || d1["attempts"] != 1.0 || d1["last_status_code"] != 200.0 ||
		d1["last_error"] != nil || d1["delivered_at"] != "2026-11-22T10:00:00Z" {
		t.Errorf("ep_1 delivery %v", d1)
	}
	for _, k := range []string{"last_status_code", "last_error", "delivered_at"} {
		if v, ok := d2[k]; !ok || v != nil {
			t.Errorf("ep_2 %s = %v, want null", k, v)
		}
	}
	if d2["status"] != "pending" || d2["attempts"] != 0.0 {
		t.Errorf("ep_2 delivery %v", d2)
	}

	if res := b.do(t, http.MethodGet, "/v1/tenants/acme/events/nope", b.token, ""); res.status != http.StatusNotFound {
		t.Errorf("unknown event: %d", res.status)
	}
	if res := b.do(t, http.MethodGet, "/v1/tenants/globex/events/e1", b.other, ""); res.status != http.StatusNotFound {
		t.Errorf("other tenant's event: %d", res.status)
	}
}

func TestListEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for i := range 7 {
		typ := "order.created"
		if i%2 == 1 {
			typ = "order.paid"
		}
		if _, err := b.pool.Exec(ctx, `
INSERT INTO events (tenant_id, id, type, data, accepted_at, published) VALUES ('acme', $1, $2, '{"i":1}', $3, true)`,
			fmt.Sprintf("e%d", i), typ, base.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	list := func(query string) ([]string, *string) {
		t.Helper()
		res := b.do(t, http.MethodGet, "/v1/tenants/acme/events?"+query, b.token, "")
		if res.status != http.StatusOK {
			t.Fatalf("%s: %d %s", query, res.status, res.body)
		}
		var page struct {
			Data []struct {
				ID         string          `json:"id"`
				Data       json.RawMessage `json:"data"`
				Deliveries any             `json:"deliveries"`
			} `json:"data"`
			NextCursor *string `json:"next_cursor"`
		}
		if err := json.Unmarshal(res.body, &page); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range page.Data {
			out = append(out, e.ID)
			if string(e.Data) != `{"i":1}` || e.Deliveries != nil {
				t.Errorf("item %s: data %s deliveries %v", e.ID, e.Data, e.Deliveries)
			}
		}
		return out, page.NextCursor
	}

	got, next := list("limit=3")
	if strings.Join(got, ",") != "e6,e5,e4" || next == nil {
		t.Fatalf("page 1 %v %v", got, next)
	}
	got, next = list("limit=3&cursor=" + *next)
	if strings.Join(got, ",") != "e3,e2,e1" || next == nil {
		t.Fatalf("page 2 %v", got)
	}
	got, next = list("limit=3&cursor=" + *next)
	if strings.Join(got, ",") != "e0" || next != nil {
		t.Fatalf("page 3 %v %v", got, next)
	}
	since := url.QueryEscape(base.Add(2 * time.Minute).Format(time.RFC3339))
	until := url.QueryEscape(base.Add(5 * time.Minute).Format(time.RFC3339))
	if got, _ := list("since=" + since + "&until=" + until); strings.Join(got, ",") != "e4,e3,e2" {
		t.Errorf("since/until %v", got)
	}
	if got, _ := list("type=order.paid"); strings.Join(got, ",") != "e5,e3,e1" {
		t.Errorf("type %v", got)
	}
	for _, q := range []string{"since=yesterday", "limit=0", "cursor=zzz", "type=a..b"} {
		if res := b.do(t, http.MethodGet, "/v1/tenants/acme/events?"+q, b.token, ""); res.status != 422 {
			t.Errorf("%s: %d", q, res.status)
		}
	}
}

func runIntake(t *testing.T, b *bundle) *ops.Health {
	t.Helper()
	health := ops.NewHealth()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.svc.RunIntake(ctx, health) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunIntake: %v", err)
		}
		if len(health.Failing()) == 0 {
			t.Error("intake still reported consuming after it stopped")
		}
	})
	eventually(t, "intake consuming", func() bool { return len(health.Failing()) == 0 })
	return health
}

func TestIntake(t *testing.T) {
	t.Parallel()
	b := setup(t)
	runIntake(t, b)
	ctx := t.Context()

	pub := func(subject, id, key string, data []byte) {
		t.Helper()
		msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		if id != "" {
			msg.Header.Set(bus.HeaderMsgID, id)
		}
		if key != "" {
			msg.Header.Set(bus.HeaderOrderingKey, key)
		}
		if _, err := b.js.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
	}
	pub("hookline.publish.acme.order.created", "nats-1", "cust-7", []byte(`{"total":10}`))
	eventually(t, "event row", func() bool {
		return b.count(t, `SELECT count(*) FROM events WHERE id = 'nats-1' AND source = 'nats' AND NOT `+inOutbox) == 1
	})
	msgs := b.eventMsgs(t)
	if len(msgs) != 1 {
		t.Fatalf("%d event messages", len(msgs))
	}
	ev := decodeEventMsg(t, msgs[0])
	if ev.GetId() != "nats-1" || ev.GetType() != "order.created" || ev.GetOrderingKey() != "cust-7" || string(ev.GetData()) != `{"total":10}` {
		t.Errorf("event %v", ev)
	}
	if msgs[0].Subject != bus.EventSubject(tenantID, "cust-7") || msgs[0].Header.Get(bus.HeaderMsgID) != bus.EventMsgID(tenantID, "nats-1") {
		t.Errorf("message %s %v", msgs[0].Subject, msgs[0].Header)
	}

	// Rejects.
	pub("hookline.publish.nobody.order.created", "", "", []byte(`{}`))
	pub("hookline.publish.acme.order.created", "", "", []byte(`{not json`))
	pub("hookline.publish.acme.order.created", "", "", bytes.Repeat([]byte("1"), testMaxEvent+1))
	pub("hookline.publish.acme.order.created", "bad id!", "", []byte(`{}`))
	pub("hookline.publish.acme.order$created", "", "", []byte(`{}`))
	pub("hookline.publish.acme", "", "", []byte(`{}`))
	eventually(t, "rejected events", func() bool { return b.count(t, `SELECT count(*) FROM rejected_events`) == 6 })
	eventually(t, "intake stream drained", func() bool {
		s, err := b.js.Stream(ctx, bus.StreamIntake)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})

	res := b.do(t, http.MethodGet, "/v1/rejected-events", adminToken, "")
	if res.status != http.StatusOK {
		t.Fatalf("%d %s", res.status, res.body)
	}
	var page struct {
		Data []map[string]any `json:"data"`
	}
	if err := json.Unmarshal(res.body, &page); err != nil {
		t.Fatal(err)
	}
	reasons := map[string]map[string]any{}
	for _, r := range page.Data {
		reasons[r["reason"].(string)] = r
	}
	for _, want := range []string{"unknown_tenant", "invalid_json", "too_large", "invalid_id", "invalid_type"} {
		if reasons[want] == nil {
			t.Errorf("no %s in %s", want, res.body)
		}
	}
	if r := reasons["unknown_tenant"]; r != nil && (r["tenant_id"] != "nobody" || r["subject"] != "hookline.publish.nobody.order.created" ||
		r["event_type"] != "order.created" || r["size_bytes"] != 2.0 || r["detail"] == "" || r["received_at"] == nil) {
		t.Errorf("unknown_tenant record %v", r)
	}
	if n := b.count(t, `SELECT count(*) FROM rejected_events WHERE reason = 'invalid_type' AND tenant_id = 'acme'`); n != 2 {
		t.Errorf("%d invalid_type records for acme, want 2", n)
	}
	if r := reasons["too_large"]; r != nil && r["size_bytes"] != float64(testMaxEvent+1) {
		t.Errorf("too_large record %v", r)
	}
	if r := reasons["invalid_id"]; r != nil && r["event_id"] != "bad id!" {
		t.Errorf("invalid_id record %v", r)
	}
	var payloadLen int
	if err := b.pool.QueryRow(ctx, `SELECT length(payload) FROM rejected_events WHERE reason = 'too_large'`).Scan(&payloadLen); err != nil || payloadLen != rejectPayloadBytes {
		t.Errorf("stored payload %d bytes (%v), want %d", payloadLen, err, rejectPayloadBytes)
	}
	if res := b.do(t, http.MethodGet, "/v1/rejected-events?reason=too_large&limit=1", adminToken, ""); !bytes.Contains(res.body, []byte(`"too_large"`)) ||
		bytes.Contains(res.body, []byte(`"invalid_json"`)) {
		t.Errorf("filtered list %s", res.body)
	}
}

func TestIntakeOrderPerKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	runIntake(t, b)
	ctx := t.Context()
	const n = 60
	for i := range n {
		msg := &nats.Msg{Subject: "hookline.publish.acme.order.updated", Data: []byte(fmt.Sprintf(`{"i":%d}`, i)), Header: nats.Header{}}
		msg.Header.Set(bus.HeaderMsgID, fmt.Sprintf("o-%03d", i))
		msg.Header.Set(bus.HeaderOrderingKey, fmt.Sprintf("key-%d", i%3))
		if _, err := b.js.PublishMsgAsync(msg); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-b.js.PublishAsyncComplete():
	case <-ctx.Done():
	}
	eventually(t, "all events", func() bool { return len(streamEvents(t, b.eventMsgs(t))) == n })
	last := map[string]string{}
	for _, ev := range streamEvents(t, b.eventMsgs(t)) {
		if prev := last[ev.GetOrderingKey()]; prev >= ev.GetId() {
			t.Errorf("key %s: %s after %s", ev.GetOrderingKey(), ev.GetId(), prev)
		}
		last[ev.GetOrderingKey()] = ev.GetId()
	}
}

func TestRelay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	// A crash between INSERT and publish left these rows.
	if _, err := b.pool.Exec(ctx, `
WITH e AS (
    INSERT INTO events (tenant_id, id, type, data, ordering_key, accepted_at, only_endpoint_id)
    VALUES ('acme', 'lost-1', 'order.created', '{"x":1}', 'k', now() - interval '1 minute', 'ep_9')
    RETURNING tenant_id, id, accepted_at
)
INSERT INTO event_outbox (tenant_id, id, accepted_at) SELECT * FROM e`); err != nil {
		t.Fatal(err)
	}
	// A fresh unpublished row is left to the request that is publishing it.
	if _, err := b.pool.Exec(ctx, `
WITH e AS (
    INSERT INTO events (tenant_id, id, type, data, accepted_at) VALUES ('acme', 'fresh', 'a', '1', now())
    RETURNING tenant_id, id, accepted_at
)
INSERT INTO event_outbox (tenant_id, id, accepted_at) SELECT * FROM e`); err != nil {
		t.Fatal(err)
	}
	// The event of this outbox row is gone (its tenant was deleted).
	if _, err := b.pool.Exec(ctx, `
INSERT INTO event_outbox (tenant_id, id, accepted_at) VALUES ('gone', 'orphan', now() - interval '1 minute')`); err != nil {
		t.Fatal(err)
	}
	// An ingest older than the outbox (a rolling upgrade) left this row
	// unpublished, with no outbox row.
	if _, err := b.pool.Exec(ctx, `
INSERT INTO events (tenant_id, id, type, data, accepted_at, published)
VALUES ('acme', 'legacy-1', 'order.created', '{"y":2}', now() - interval '1 minute', false)`); err != nil {
		t.Fatal(err)
	}
	b.svc.relayEvery = 50 * time.Millisecond
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.svc.RunRelay(rctx) }()
	eventually(t, "relay", func() bool {
		return b.count(t, `SELECT count(*) FROM events WHERE id = 'lost-1' AND NOT `+inOutbox) == 1 &&
			b.count(t, `SELECT count(*) FROM events WHERE id = 'legacy-1' AND published AND NOT `+inOutbox) == 1 &&
			b.count(t, `SELECT count(*) FROM event_outbox WHERE id = 'orphan'`) == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("RunRelay: %v", err)
	}
	msgs := b.eventMsgs(t)
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	relayed := map[string]bool{}
	for _, m := range msgs {
		ev := decodeEventMsg(t, m)
		relayed[ev.GetId()] = true
		if ev.GetId() == "lost-1" && (ev.GetOnlyEndpointId() != "ep_9" || string(ev.GetData()) != `{"x":1}` || m.Subject != bus.EventSubject(tenantID, "k")) {
			t.Errorf("relayed %v on %s", ev, m.Subject)
		}
		if ev.GetId() == "legacy-1" && string(ev.GetData()) != `{"y":2}` {
			t.Errorf("relayed %v", ev)
		}
	}
	if !relayed["lost-1"] || !relayed["legacy-1"] {
		t.Errorf("relayed %v, want lost-1 and legacy-1", relayed)
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE id = 'fresh' AND `+inOutbox); n != 1 {
		t.Error("the fresh row was relayed")
	}
}

// Concurrent single events are inserted together; one the event store
// refuses fails alone.
func TestConcurrentSingles(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 40
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			in := Input{TenantID: tenantID, ID: fmt.Sprintf("s-%02d", i), Type: "a", Data: []byte(`{"i":1}`)}
			if i == 7 {
				in.Data, in.jsonChecked = []byte(`{`), true // skipped the JSON check
			}
			_, errs[i] = b.svc.Accept(t.Context(), in)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i == 7 {
			if p := problem(err); p == nil || p.Status != 422 {
				t.Errorf("refused event: %v", err)
			}
			continue
		}
		if err != nil {
			t.Errorf("event %d: %v", i, err)
		}
	}
	if got := b.count(t, `SELECT count(*) FROM events WHERE id LIKE 's-%'`); got != n-1 {
		t.Errorf("%d events stored, want %d", got, n-1)
	}
}

func TestUnavailableWithoutNATS(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.nats.Stop()
	eventually(t, "disconnect", func() bool { return !b.nc.IsConnected() })
	res := b.post(t, `{"type":"a","data":1,"id":"retry-me"}`)
	if res.status != http.StatusServiceUnavailable || res.header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q: %s", res.status, res.header.Get("Retry-After"), res.body)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("content type %q", ct)
	}
	// The row waits for the relay or a retry.
	if n := b.count(t, `SELECT count(*) FROM events WHERE id = 'retry-me' AND `+inOutbox); n != 1 {
		t.Errorf("%d unpublished rows", n)
	}
	batch := b.do(t, http.MethodPost, "/v1/tenants/acme/events/batch", b.token, `{"events":[{"type":"a","data":1}]}`)
	if batch.status != http.StatusServiceUnavailable {
		t.Errorf("batch: %d %s", batch.status, batch.body)
	}
}

func TestAcceptErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	_, err := b.svc.Accept(ctx, Input{TenantID: "nobody", Type: "a", Data: []byte(`1`)})
	if p := problem(err); p == nil || p.Status != http.StatusNotFound {
		t.Errorf("unknown tenant: %v", err)
	}
	_, err = b.svc.Accept(ctx, Input{TenantID: tenantID, Type: "a", Data: []byte("\"\xff\"")})
	if p := problem(err); p == nil || p.Status != 422 {
		t.Errorf("invalid UTF-8: %v", err)
	}
	res, err := b.svc.Accept(ctx, Input{TenantID: tenantID, Type: "hookline.test", Data: []byte(`{}`), OnlyEndpointID: "ep_1"})
	if err != nil {
		t.Fatal(err)
	}
	msgs := b.eventMsgs(t)
	if len(msgs) != 1 || decodeEventMsg(t, msgs[0]).GetOnlyEndpointId() != "ep_1" || decodeEventMsg(t, msgs[0]).GetId() != res.ID {
		t.Errorf("test event messages %v", msgs)
	}
}

func FuzzDecodeEvent(f *testing.F) {
	b := setup(f)
	for _, seed := range []string{
		`{"type":"order.created","data":{"a":1}}`,
		`{"type":"order.created","data":{"a":1},"id":"x","ordering_key":"k"}`,
		`{"type":"a","data":"\u0000"}`,
		`{"type":"a","data":"\ud800"}`,
		`{"type":"a","data":1e999999}`,
		`{"type":"a","data":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`,
		`{"type":"a","data":1,"ordering_key":"\u0000"}`,
		`{"type":"a","data":1,"id":null,"ordering_key":null}`,
		`{"type":null,"data":null}`,
		`{"type":"a","data":{}`,
		`null`, `[]`, `"x"`, ``, "\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/tenants/acme/events", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+b.token)
		rec := httptest.NewRecorder()
		b.mux.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		if rec.Code != http.StatusAccepted && rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Fatalf("status %d without a problem: %s", rec.Code, rec.Body)
		}
	})
}
