package deadletter

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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/auth"
	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/ops"
	"github.com/hookline/hookline/pkg/pgtest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

const adminToken = "test-admin-token-0123456789"

type bundle struct {
	pool     *pgxpool.Pool
	js       jetstream.JetStream
	svc      *service
	srv      *httptest.Server
	acmeKey  string
	otherKey string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	ctx := t.Context()
	pool, _ := pgtest.NewPool(t)
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	if err := bus.EnsureStreams(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := newService(pool, js, log)
	svc.runner.poll = 50 * time.Millisecond
	srv := httptest.NewServer(svc.handler(adminToken))
	t.Cleanup(srv.Close)
	b := &bundle{pool: pool, js: js, svc: svc, srv: srv}
	b.exec(t, `INSERT INTO tenants (id, name) VALUES ('acme', 'Acme'), ('other', 'Other')`)
	b.acmeKey = b.key(t, "acme")
	b.otherKey = b.key(t, "other")
	return b
}

func (b *bundle) key(t *testing.T, tenant string) string {
	t.Helper()
	tok, hash := auth.NewToken()
	b.exec(t, `INSERT INTO api_keys (id, tenant_id, name, token_hash) VALUES ($1, $2, 'k', $3)`, "key_"+tenant, tenant, hash)
	return tok
}

func (b *bundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := b.pool.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (b *bundle) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// background runs f until the test ends and waits for it to return.
func background(t *testing.T, f func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f(ctx)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func (b *bundle) startConsumer(t *testing.T) {
	t.Helper()
	cons, err := bus.EnsureConsumer(t.Context(), b.js, bus.StreamDead, bus.Consumer(bus.ConsumerDeadletter, consumerAckWait, 1000))
	if err != nil {
		t.Fatal(err)
	}
	background(t, func(ctx context.Context) {
		if err := b.svc.consume(ctx, cons, ops.NewHealth(), 5*time.Second); err != nil {
			t.Errorf("consume: %v", err)
		}
	})
}

func (b *bundle) startRunner(t *testing.T) (stop func()) {
	t.Helper()
	return background(t, b.svc.runner.run)
}

// deliveries returns a consumer of every replayed delivery.
func (b *bundle) deliveries(t *testing.T) jetstream.Consumer {
	t.Helper()
	c, err := b.js.CreateOrUpdateConsumer(t.Context(), bus.StreamDeliveries, jetstream.ConsumerConfig{Durable: "test", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fetch returns up to n deliveries, waiting at most wait.
func fetch(t *testing.T, c jetstream.Consumer, n int, wait time.Duration) []*hooklinev1.Delivery {
	t.Helper()
	var out []*hooklinev1.Delivery
	deadline := time.Now().Add(wait)
	for len(out) < n && time.Now().Before(deadline) {
		batch, err := c.Fetch(n-len(out), jetstream.FetchMaxWait(time.Until(deadline)))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			d := &hooklinev1.Delivery{}
			if err := proto.Unmarshal(m.Data(), d); err != nil {
				t.Fatal(err)
			}
			if got, want := m.Headers().Get(bus.HeaderMsgID), bus.DeliveryMsgID(d.Id, 0); got != want {
				t.Errorf("Nats-Msg-Id = %q, want %q", got, want)
			}
			_ = m.Ack()
			out = append(out, d)
		}
	}
	return out
}

func (b *bundle) do(t *testing.T, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, b.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

func (b *bundle) getJSON(t *testing.T, path string, want int, v any) {
	t.Helper()
	status, body := b.do(t, "GET", path, adminToken, nil)
	if status != want {
		t.Fatalf("GET %s = %d %s, want %d", path, status, body, want)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bundle) insertEvent(t *testing.T, tenant, id, typ, data, key string) {
	t.Helper()
	var k *string
	if key != "" {
		k = &key
	}
	b.exec(t, `INSERT INTO events (tenant_id, id, type, data, ordering_key, accepted_at, published) VALUES ($1, $2, $3, $4, $5, now(), true)`,
		tenant, id, typ, data, k)
}

// dlRow inserts a dead letter directly.
type dlRow struct {
	id, tenant, event, endpoint, typ, reason string
	deadAt                                   time.Time
	resolved, discarded                      bool
}

func (b *bundle) insertDL(t *testing.T, r dlRow) {
	t.Helper()
	if r.tenant == "" {
		r.tenant = "acme"
	}
	var resolved, discarded *time.Time
	if r.resolved {
		resolved = &r.deadAt
	}
	if r.discarded {
		discarded = &r.deadAt
	}
	b.exec(t, `
INSERT INTO dead_letters (id, tenant_id, delivery_id, event_id, endpoint_id, event_type, reason, attempts, dead_at, resolved_at, discarded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 3, $8, $9, $10)`,
		r.id, r.tenant, "dlv_"+r.id, r.event, r.endpoint, r.typ, r.reason, r.deadAt, resolved, discarded)
}

func publishDead(t *testing.T, js jetstream.JetStream, dl *hooklinev1.DeadLetter) {
	t.Helper()
	data, err := proto.Marshal(dl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), bus.DeadSubject(dl.Delivery.TenantId, dl.Delivery.EndpointId), data); err != nil {
		t.Fatal(err)
	}
}

type listResp struct {
	Data       []map[string]any `json:"data"`
	NextCursor *string          `json:"next_cursor"`
}

func TestConsumerStoresDeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.startConsumer(t)
	deadAt := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	dl := &hooklinev1.DeadLetter{
		Delivery: &hooklinev1.Delivery{
			Id: "dlv_1", TenantId: "acme", EventId: "evt_1", EndpointId: "ep_1", EventType: "order.created",
			OrderingKey: "customer-42", Attempts: 8, CreatedAt: timestamppb.New(deadAt.Add(-time.Hour)),
		},
		Reason: "exhausted", Attempts: 8, LastStatusCode: 503, LastError: "status 503", DeadAt: timestamppb.New(deadAt),
	}
	publishDead(t, b.js, dl)
	publishDead(t, b.js, dl) // a redelivery: still one dead letter
	other := proto.Clone(dl).(*hooklinev1.DeadLetter)
	other.Delivery.Id, other.Delivery.OrderingKey, other.Reason = "dlv_2", "", "endpoint_disabled"
	other.LastStatusCode, other.LastError, other.Attempts, other.Delivery.Attempts = 0, "", 0, 0
	publishDead(t, b.js, other)

	waitFor(t, "two dead letters", func() bool {
		return b.count(t, `SELECT count(*) FROM dead_letters`) == 2 &&
			b.count(t, `SELECT count(*) FROM deliveries WHERE status = 'dead'`) == 2
	})
	// The duplicate was processed too (the stream is a work queue: empty once all are acked).
	waitFor(t, "all acked", func() bool {
		info, err := b.js.Stream(t.Context(), bus.StreamDead)
		return err == nil && info.CachedInfo().State.Msgs == 0
	})
	if n := b.count(t, `SELECT count(*) FROM dead_letters`); n != 2 {
		t.Fatalf("dead letters = %d, want 2", n)
	}

	var got listResp
	b.getJSON(t, "/v1/tenants/acme/dead-letters?reason=exhausted", 200, &got)
	if len(got.Data) != 1 {
		t.Fatalf("list = %+v", got)
	}
	item := got.Data[0]
	want := map[string]any{
		"event_id": "evt_1", "endpoint_id": "ep_1", "event_type": "order.created", "ordering_key": "customer-42",
		"reason": "exhausted", "attempts": 8.0, "last_status_code": 503.0, "last_error": "status 503",
		"dead_at": "2026-11-22T10:00:00Z", "replays": 0.0, "resolved_at": nil,
	}
	for k, v := range want {
		if item[k] != v {
			t.Errorf("%s = %#v, want %#v", k, item[k], v)
		}
	}
	if id, _ := item["id"].(string); !strings.HasPrefix(id, "dl_") {
		t.Errorf("id = %v, want dl_ prefix", item["id"])
	}
	b.getJSON(t, "/v1/tenants/acme/dead-letters?reason=endpoint_disabled", 200, &got)
	if len(got.Data) != 1 || got.Data[0]["ordering_key"] != nil || got.Data[0]["last_status_code"] != nil || got.Data[0]["last_error"] != nil {
		t.Fatalf("disabled dead letter = %+v, want null ordering_key, last_status_code, last_error", got.Data)
	}
	var attempts int
	var status string
	if err := b.pool.QueryRow(t.Context(), `SELECT status, attempts FROM deliveries WHERE id = 'dlv_1'`).Scan(&status, &attempts); err != nil {
		t.Fatal(err)
	}
	if status != "dead" || attempts != 8 {
		t.Errorf("delivery = %s/%d, want dead/8", status, attempts)
	}

	// A replayed delivery that dies again updates its dead letter.
	dlID := item["id"].(string)
	again := proto.Clone(dl).(*hooklinev1.DeadLetter)
	again.Delivery.Id, again.Delivery.DeadLetterId, again.Delivery.ReplayId = "dlv_replay", dlID, "rpl_x"
	again.Reason, again.Attempts, again.LastStatusCode, again.LastError = "non_retryable_status", 1, 400, "status 400"
	publishDead(t, b.js, again)
	waitFor(t, "dead letter updated", func() bool {
		return b.count(t, `SELECT count(*) FROM dead_letters WHERE id = $1 AND reason = 'non_retryable_status' AND attempts = 1 AND last_status_code = 400`, dlID) == 1
	})
	if n := b.count(t, `SELECT count(*) FROM dead_letters`); n != 2 {
		t.Errorf("dead letters = %d after a replay died, want 2", n)
	}
	if n := b.count(t, `SELECT count(*) FROM deliveries WHERE id = 'dlv_replay' AND status = 'dead' AND replay_id = 'rpl_x'`); n != 1 {
		t.Errorf("replay delivery not marked dead")
	}
}

func TestListFilters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, r := range []dlRow{
		{id: "dl_1", event: "evt_1", endpoint: "ep_a", typ: "order.created", reason: "exhausted", deadAt: t0},
		{id: "dl_2", event: "evt_2", endpoint: "ep_b", typ: "order.created", reason: "non_retryable_status", deadAt: t0.Add(time.Hour)},
		{id: "dl_3", event: "evt_3", endpoint: "ep_a", typ: "user.deleted", reason: "exhausted", deadAt: t0.Add(2 * time.Hour)},
		{id: "dl_4", event: "evt_4", endpoint: "ep_a", typ: "order.created", reason: "exhausted", deadAt: t0.Add(3 * time.Hour), resolved: true},
		{id: "dl_5", event: "evt_5", endpoint: "ep_a", typ: "order.created", reason: "exhausted", deadAt: t0.Add(4 * time.Hour), discarded: true},
		{id: "dl_6", tenant: "other", event: "evt_6", endpoint: "ep_a", typ: "order.created", reason: "exhausted", deadAt: t0},
	} {
		b.insertDL(t, r)
	}
	tests := []struct {
		name  string
		query string
		want  []string
	}{
		{"all unresolved, newest first", "", []string{"dl_3", "dl_2", "dl_1"}},
		{"endpoint", "endpoint_id=ep_a", []string{"dl_3", "dl_1"}},
		{"event type", "event_type=order.created", []string{"dl_2", "dl_1"}},
		{"reason", "reason=non_retryable_status", []string{"dl_2"}},
		{"include resolved", "include_resolved=true", []string{"dl_4", "dl_3", "dl_2", "dl_1"}},
		{"since inclusive", "since=2026-01-01T01:00:00Z", []string{"dl_3", "dl_2"}},
		{"until exclusive", "until=2026-01-01T01:00:00Z", []string{"dl_1"}},
		{"since and until", "since=2026-01-01T01:00:00Z&until=2026-01-01T02:00:00Z", []string{"dl_2"}},
		{"combined", "endpoint_id=ep_a&event_type=order.created&include_resolved=true", []string{"dl_4", "dl_1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got listResp
			b.getJSON(t, "/v1/tenants/acme/dead-letters?"+tc.query, 200, &got)
			var ids []string
			for _, d := range got.Data {
				ids = append(ids, d["id"].(string))
			}
			if strings.Join(ids, ",") != strings.Join(tc.want, ",") {
				t.Errorf("got %v, want %v", ids, tc.want)
			}
			if got.NextCursor != nil {
				t.Errorf("next_cursor = %q, want null", *got.NextCursor)
			}
		})
	}

	t.Run("pagination", func(t *testing.T) {
		var ids []string
		path := "/v1/tenants/acme/dead-letters?include_resolved=true&limit=3"
		for pages := 0; ; pages++ {
			if pages > 3 {
				t.Fatal("too many pages")
			}
			var got listResp
			b.getJSON(t, path, 200, &got)
			for _, d := range got.Data {
				ids = append(ids, d["id"].(string))
			}
			if got.NextCursor == nil {
				break
			}
			path = "/v1/tenants/acme/dead-letters?include_resolved=true&limit=3&cursor=" + *got.NextCursor
		}
		if strings.Join(ids, ",") != "dl_4,dl_3,dl_2,dl_1" {
			t.Errorf("pages = %v", ids)
		}
	})

	t.Run("bad parameters", func(t *testing.T) {
		for q, field := range map[string]string{
			"since=yesterday":            "since",
			"until=2026-13-01T00:00:00Z": "until",
			"include_resolved=maybe":     "include_resolved",
			"limit=0":                    "limit",
			"limit=ten":                  "limit",
			"limit=-5":                   "limit",
			"cursor=zzz":                 "cursor",
			"reason=ssrf_blocked":        "reason",
			"reason=EXHAUSTED":           "reason",
			"endpoint_id=a%00b":          "endpoint_id",
			"event_type=%ff":             "event_type",
		} {
			status, body := b.do(t, "GET", "/v1/tenants/acme/dead-letters?"+q, adminToken, nil)
			if status != 422 || !strings.Contains(string(body), `"field":"`+field+`"`) {
				t.Errorf("%s: %d %s, want 422 naming %s", q, status, body, field)
			}
		}
		// Every bad parameter is named at once.
		status, body := b.do(t, "GET", "/v1/tenants/acme/dead-letters?limit=x&reason=nope&since=y", adminToken, nil)
		for _, field := range []string{"limit", "reason", "since"} {
			if status != 422 || !strings.Contains(string(body), `"field":"`+field+`"`) {
				t.Errorf("several bad: %d %s, want 422 naming %s", status, body, field)
			}
		}
	})

	t.Run("limit is clamped to 500", func(t *testing.T) {
		var got listResp
		b.getJSON(t, "/v1/tenants/acme/dead-letters?limit=100000", 200, &got)
		if len(got.Data) != 3 {
			t.Errorf("got %d items", len(got.Data))
		}
	})
}

func TestShowDeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertEvent(t, "acme", "evt_1", "order.created", `{"amount": 12.50, "b":[1,2]}`, "")
	b.insertDL(t, dlRow{id: "dl_1", event: "evt_1", endpoint: "ep_a", typ: "order.created", reason: "exhausted", deadAt: time.Now()})
	t1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.exec(t, `INSERT INTO attempts (delivery_id, attempt, tenant_id, event_id, endpoint_id, started_at, duration_ms, status_code, error, response_body, succeeded)
VALUES ('dlv_dl_1', 1, 'acme', 'evt_1', 'ep_a', $1, 12, 500, 'status 500', 'oops', false),
       ('dlv_dl_1', 2, 'acme', 'evt_1', 'ep_a', $2, 15000, NULL, 'timeout', NULL, false),
       ('dlv_x', 1, 'acme', 'evt_1', 'ep_other', $2, 5, 200, NULL, 'ok', true)`, t1, t1.Add(time.Minute))

	status, body := b.do(t, "GET", "/v1/tenants/acme/dead-letters/dl_1", adminToken, nil)
	if status != 200 {
		t.Fatalf("show = %d %s", status, body)
	}
	if !strings.Contains(string(body), `"data":{"amount":12.50,"b":[1,2]}`) {
		t.Errorf("data not raw: %s", body)
	}
	var got struct {
		ID             string           `json:"id"`
		AttemptHistory []map[string]any `json:"attempt_history"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != "dl_1" || len(got.AttemptHistory) != 2 {
		t.Fatalf("show = %s", body)
	}
	// Newest first, as in the attempt log (CONTRACT 2.2).
	a2, a1 := got.AttemptHistory[0], got.AttemptHistory[1]
	wantKeys := []string{"delivery_id", "event_id", "attempt", "started_at", "duration_ms", "status_code", "error", "response_body", "succeeded"}
	for _, a := range got.AttemptHistory {
		if len(a) != len(wantKeys) {
			t.Errorf("attempt has fields %v, want %v", a, wantKeys)
		}
		for _, k := range wantKeys {
			if _, ok := a[k]; !ok {
				t.Errorf("attempt lacks %s: %v", k, a)
			}
		}
	}
	if a1["attempt"] != 1.0 || a1["status_code"] != 500.0 || a1["error"] != "status 500" || a1["response_body"] != "oops" ||
		a1["succeeded"] != false || a1["started_at"] != "2026-01-01T00:00:00Z" || a1["duration_ms"] != 12.0 || a1["event_id"] != "evt_1" {
		t.Errorf("attempt 1 = %v", a1)
	}
	if a2["attempt"] != 2.0 || a2["status_code"] != nil || a2["error"] != "timeout" || a2["response_body"] != nil {
		t.Errorf("attempt 2 = %v", a2)
	}

	if status, _ := b.do(t, "GET", "/v1/tenants/acme/dead-letters/dl_nope", adminToken, nil); status != 404 {
		t.Errorf("unknown id = %d, want 404", status)
	}
}

func TestDiscard(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertDL(t, dlRow{id: "dl_1", event: "evt_1", endpoint: "ep_a", typ: "t", reason: "exhausted", deadAt: time.Now()})
	if status, body := b.do(t, "DELETE", "/v1/tenants/acme/dead-letters/dl_1", b.acmeKey, nil); status != 204 {
		t.Fatalf("discard = %d %s", status, body)
	}
	if status, _ := b.do(t, "GET", "/v1/tenants/acme/dead-letters/dl_1", adminToken, nil); status != 404 {
		t.Errorf("show after discard = %d, want 404", status)
	}
	if status, _ := b.do(t, "DELETE", "/v1/tenants/acme/dead-letters/dl_1", adminToken, nil); status != 404 {
		t.Errorf("second discard = %d, want 404", status)
	}
	if status, _ := b.do(t, "POST", "/v1/tenants/acme/dead-letters/dl_1/replay", adminToken, nil); status != 404 {
		t.Errorf("replay after discard = %d, want 404", status)
	}
	var got listResp
	b.getJSON(t, "/v1/tenants/acme/dead-letters?include_resolved=true", 200, &got)
	if len(got.Data) != 0 {
		t.Errorf("list after discard = %v", got.Data)
	}
	if n := b.count(t, `SELECT count(*) FROM dead_letters WHERE id = 'dl_1' AND discarded_by = 'key_acme'`); n != 1 {
		t.Errorf("discarded_by not recorded")
	}
	if n := b.count(t, `SELECT count(*) FROM audit_log WHERE tenant_id = 'acme' AND actor = 'key_acme' AND action = 'dead_letter.discard' AND target = 'dl_1'`); n != 1 {
		t.Errorf("audit rows = %d, want 1", n)
	}
}

func TestReplayOne(t *testing.T) {
	t.Parallel()
	b := setup(t)
	deliveries := b.deliveries(t)
	b.insertEvent(t, "acme", "evt_1", "order.created", `{"n":1}`, "customer-42")
	b.insertDL(t, dlRow{id: "dl_1", event: "evt_1", endpoint: "ep_a", typ: "order.created", reason: "exhausted", deadAt: time.Now()})
	b.exec(t, `UPDATE dead_letters SET ordering_key = 'customer-42' WHERE id = 'dl_1'`)

	status, body := b.do(t, "POST", "/v1/tenants/acme/dead-letters/dl_1/replay", adminToken, nil)
	if status != 202 {
		t.Fatalf("replay = %d %s", status, body)
	}
	var resp struct {
		ReplayID string `json:"replay_id"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || !strings.HasPrefix(resp.ReplayID, "rpl_") {
		t.Fatalf("replay body = %s", body)
	}
	got := fetch(t, deliveries, 1, 5*time.Second)
	if len(got) != 1 {
		t.Fatalf("deliveries = %d, want 1", len(got))
	}
	d := got[0]
	if d.EventId != "evt_1" || d.EndpointId != "ep_a" || d.EventType != "order.created" || string(d.Data) != `{"n":1}` ||
		d.OrderingKey != "customer-42" || d.Attempts != 0 || d.ReplayId != resp.ReplayID || d.DeadLetterId != "dl_1" ||
		!strings.HasPrefix(d.Id, "dlv_") || d.Id == "dlv_dl_1" || d.TenantId != "acme" || d.AcceptedAt == nil {
		t.Errorf("delivery = %v", d)
	}
	if n := b.count(t, `SELECT replays FROM dead_letters WHERE id = 'dl_1'`); n != 1 {
		t.Errorf("replays = %d, want 1", n)
	}
	if n := b.count(t, `SELECT count(*) FROM deliveries WHERE id = $1 AND status = 'pending' AND replay_id = $2`, d.Id, resp.ReplayID); n != 1 {
		t.Errorf("delivery row missing")
	}
	if n := b.count(t, `SELECT count(*) FROM audit_log WHERE actor = 'admin' AND action = 'dead_letter.replay' AND target = 'dl_1'`); n != 1 {
		t.Errorf("audit rows = %d, want 1", n)
	}
	var rp map[string]any
	b.getJSON(t, "/v1/tenants/acme/replays/"+resp.ReplayID, 200, &rp)
	if rp["state"] != "done" || rp["matched"] != 1.0 || rp["replayed"] != 1.0 || rp["created_by"] != "admin" || rp["finished_at"] == nil {
		t.Errorf("replay = %v", rp)
	}
	// The delivery succeeds: succeeded counts it.
	b.exec(t, `UPDATE deliveries SET status = 'succeeded' WHERE id = $1`, d.Id)
	b.getJSON(t, "/v1/tenants/acme/replays/"+resp.ReplayID, 200, &rp)
	if rp["succeeded"] != 1.0 || rp["failed"] != 0.0 {
		t.Errorf("replay counts = %v", rp)
	}
}

func TestBulkReplay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	deliveries := b.deliveries(t)
	now := time.Now()
	for i, id := range []string{"dl_1", "dl_2", "dl_3", "dl_4"} {
		evt := "evt_" + id
		b.insertEvent(t, "acme", evt, "order.created", `{}`, "")
		reason := "exhausted"
		if i == 3 {
			reason = "expired"
		}
		b.insertDL(t, dlRow{id: id, event: evt, endpoint: "ep_a", typ: "order.created", reason: reason, deadAt: now.Add(time.Duration(i) * time.Second)})
	}
	path := "/v1/tenants/acme/replays"

	t.Run("dry run", func(t *testing.T) {
		status, body := b.do(t, "POST", path, adminToken, map[string]any{"filter": map[string]any{"reason": "exhausted"}, "dry_run": true})
		if status != 200 || strings.TrimSpace(string(body)) != `{"matched":3}` {
			t.Fatalf("dry run = %d %s", status, body)
		}
		if n := b.count(t, `SELECT count(*) FROM replays`); n != 0 {
			t.Errorf("dry run created %d replays", n)
		}
	})

	t.Run("invalid", func(t *testing.T) {
		for _, body := range []any{
			map[string]any{"rate_per_second": 0},
			map[string]any{"filter": map[string]any{"since": "nope"}},
			map[string]any{"filter": map[string]any{"colour": "red"}},
			map[string]any{"filter": map[string]any{"reason": "ssrf_blocked"}},
			map[string]any{"filter": map[string]any{"ids": []string{"dl_\u0000"}}},
			map[string]any{"rate_per_second": 1000000},
		} {
			if status, out := b.do(t, "POST", path, adminToken, body); status != 422 {
				t.Errorf("%v = %d %s, want 422", body, status, out)
			}
		}
	})

	// Created while no runner runs, then cancelled: nothing is ever sent.
	status, body := b.do(t, "POST", path, adminToken, map[string]any{"filter": map[string]any{"ids": []string{"dl_4"}}})
	if status != 202 {
		t.Fatalf("create = %d %s", status, body)
	}
	var cancelled map[string]any
	_ = json.Unmarshal(body, &cancelled)
	cid := cancelled["id"].(string)
	if status, body := b.do(t, "DELETE", path+"/"+cid, b.acmeKey, nil); status != 200 || !strings.Contains(string(body), `"state":"cancelled"`) {
		t.Fatalf("cancel = %d %s", status, body)
	}

	status, body = b.do(t, "POST", path, b.acmeKey, map[string]any{"filter": map[string]any{"reason": "exhausted", "endpoint_id": "ep_a"}, "rate_per_second": 20})
	if status != 202 {
		t.Fatalf("create = %d %s", status, body)
	}
	var created map[string]any
	_ = json.Unmarshal(body, &created)
	if created["state"] != "running" || created["matched"] != 3.0 || !strings.HasPrefix(created["id"].(string), "rpl_") {
		t.Fatalf("create = %s", body)
	}
	id := created["id"].(string)

	b.startRunner(t)
	got := fetch(t, deliveries, 3, 10*time.Second)
	seen := map[string]bool{}
	for _, d := range got {
		if d.ReplayId != id || seen[d.DeadLetterId] {
			t.Errorf("unexpected delivery %v", d)
		}
		seen[d.DeadLetterId] = true
	}
	if len(seen) != 3 || seen["dl_4"] {
		t.Fatalf("replayed %v, want dl_1..dl_3", seen)
	}
	waitFor(t, "replay done", func() bool {
		var rp map[string]any
		b.getJSON(t, path+"/"+id, 200, &rp)
		return rp["state"] == "done" && rp["replayed"] == 3.0 && rp["created_by"] == "key_acme"
	})
	if extra := fetch(t, deliveries, 1, 300*time.Millisecond); len(extra) != 0 {
		t.Errorf("extra deliveries: %v", extra)
	}
	var rp map[string]any
	b.getJSON(t, path+"/"+cid, 200, &rp)
	if rp["state"] != "cancelled" || rp["replayed"] != 0.0 {
		t.Errorf("cancelled replay = %v", rp)
	}
	// Cancelling a finished replay changes nothing.
	if status, body := b.do(t, "DELETE", path+"/"+id, adminToken, nil); status != 200 || !strings.Contains(string(body), `"state":"done"`) {
		t.Errorf("cancel done = %d %s", status, body)
	}

	var list listResp
	b.getJSON(t, path+"?limit=1", 200, &list)
	if len(list.Data) != 1 || list.Data[0]["id"] != id || list.NextCursor == nil {
		t.Fatalf("list = %+v", list)
	}
	b.getJSON(t, path+"?limit=1&cursor="+*list.NextCursor, 200, &list)
	if len(list.Data) != 1 || list.Data[0]["id"] != cid || list.NextCursor != nil {
		t.Errorf("page 2 = %+v", list)
	}
	if n := b.count(t, `SELECT count(*) FROM audit_log WHERE action IN ('replay.create', 'replay.cancel')`); n != 3 {
		t.Errorf("audit rows = %d, want 3", n)
	}
}

func TestRunnerResumesWithoutDuplicates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	deliveries := b.deliveries(t)
	dls := []string{"dl_1", "dl_2", "dl_3", "dl_4"}
	for _, id := range dls {
		b.insertEvent(t, "acme", "evt_"+id, "t", `{}`, "")
		b.insertDL(t, dlRow{id: id, event: "evt_" + id, endpoint: "ep_a", typ: "t", reason: "exhausted", deadAt: time.Now()})
	}
	status, body := b.do(t, "POST", "/v1/tenants/acme/replays", adminToken, map[string]any{})
	if status != 202 {
		t.Fatalf("create = %d %s", status, body)
	}
	var created map[string]any
	_ = json.Unmarshal(body, &created)
	rep := replayRef{id: created["id"].(string), tenant: "acme", rate: 50}
	// A runner that sent two items and died.
	for _, dl := range dls[:2] {
		if err := b.svc.runner.send(t.Context(), rep, dl); err != nil {
			t.Fatal(err)
		}
	}
	// Two runners (two replicas) pick it up.
	b.startRunner(t)
	other := newService(b.pool, b.js, b.svc.log)
	other.runner.poll = 30 * time.Millisecond
	background(t, other.runner.run)

	waitFor(t, "replay done", func() bool {
		return b.count(t, `SELECT count(*) FROM replays WHERE id = $1 AND state = 'done' AND replayed = 4`, rep.id) == 1
	})
	got := fetch(t, deliveries, 5, 2*time.Second)
	seen := map[string]int{}
	for _, d := range got {
		seen[d.DeadLetterId]++
	}
	if len(got) != 4 || len(seen) != 4 {
		t.Errorf("deliveries per dead letter = %v, want one each", seen)
	}
	if n := b.count(t, `SELECT count(*) FROM dead_letters WHERE replays = 1`); n != 4 {
		t.Errorf("dead letters replayed once = %d, want 4", n)
	}
}

func TestConcurrentReplaysDoNotDoubleSend(t *testing.T) {
	t.Parallel()
	b := setup(t)
	deliveries := b.deliveries(t)
	b.insertEvent(t, "acme", "evt_1", "t", `{}`, "")
	b.insertDL(t, dlRow{id: "dl_1", event: "evt_1", endpoint: "ep_a", typ: "t", reason: "exhausted", deadAt: time.Now()})
	var ids []string
	for range 2 {
		status, body := b.do(t, "POST", "/v1/tenants/acme/replays", adminToken, map[string]any{"filter": map[string]any{"ids": []string{"dl_1"}}})
		if status != 202 {
			t.Fatalf("create = %d %s", status, body)
		}
		var created map[string]any
		_ = json.Unmarshal(body, &created)
		ids = append(ids, created["id"].(string))
	}
	if ids[0] == ids[1] {
		t.Fatalf("two replays share id %s", ids[0])
	}
	b.startRunner(t)
	waitFor(t, "both done", func() bool {
		return b.count(t, `SELECT count(*) FROM replays WHERE state = 'done'`) == 2
	})
	if got := fetch(t, deliveries, 2, time.Second); len(got) != 1 {
		t.Errorf("deliveries = %d, want 1", len(got))
	}
	// Once that delivery is finished, a new replay sends again.
	b.exec(t, `UPDATE deliveries SET status = 'dead'`)
	if status, body := b.do(t, "POST", "/v1/tenants/acme/dead-letters/dl_1/replay", adminToken, nil); status != 202 {
		t.Fatalf("replay = %d %s", status, body)
	}
	if got := fetch(t, deliveries, 1, 5*time.Second); len(got) != 1 {
		t.Errorf("deliveries after the first finished = %d, want 1", len(got))
	}
}

func TestAuthAndTenants(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertDL(t, dlRow{id: "dl_1", event: "evt_1", endpoint: "ep_a", typ: "t", reason: "exhausted", deadAt: time.Now()})
	tests := []struct {
		name, method, path, token string
		want                      int
	}{
		{"no token", "GET", "/v1/tenants/acme/dead-letters", "", 401},
		{"wrong token", "GET", "/v1/tenants/acme/dead-letters", "hlk_nope", 401},
		{"own key", "GET", "/v1/tenants/acme/dead-letters", "acme", 200},
		{"own key show", "GET", "/v1/tenants/acme/dead-letters/dl_1", "acme", 200},
		{"other tenant's key", "GET", "/v1/tenants/acme/dead-letters", "other", 404},
		{"other tenant's key show", "GET", "/v1/tenants/acme/dead-letters/dl_1", "other", 404},
		{"other tenant's key discard", "DELETE", "/v1/tenants/acme/dead-letters/dl_1", "other", 404},
		{"other tenant's key replay", "POST", "/v1/tenants/acme/dead-letters/dl_1/replay", "other", 404},
		{"other tenant's key replays", "POST", "/v1/tenants/acme/replays", "other", 404},
		{"dead letter of another tenant", "GET", "/v1/tenants/other/dead-letters/dl_1", "admin", 404},
		{"unknown tenant", "GET", "/v1/tenants/nope/dead-letters", "admin", 404},
		{"unknown route", "GET", "/v1/tenants/acme/nothing", "admin", 404},
		{"wrong method", "PUT", "/v1/tenants/acme/dead-letters", "admin", 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			token := map[string]string{"admin": adminToken, "acme": b.acmeKey, "other": b.otherKey}[tc.token]
			if token == "" {
				token = tc.token
			}
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, b.srv.URL+tc.path, nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("= %d %s, want %d", resp.StatusCode, body, tc.want)
			}
			if tc.want >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("content type = %q", resp.Header.Get("Content-Type"))
			}
		})
	}
	if n := b.count(t, `SELECT count(*) FROM dead_letters WHERE discarded_at IS NULL`); n != 1 {
		t.Errorf("another tenant's key changed something")
	}
}
