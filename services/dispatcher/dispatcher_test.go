package dispatcher_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/ids"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	"github.com/hookline/hookline/pkg/signature"
	"github.com/hookline/hookline/pkg/version"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/dispatcher"
)

func TestMain(m *testing.M) {
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
	otel.SetTextMapPropagator(propagation.TraceContext{})
	os.Exit(m.Run())
}

type request struct {
	header http.Header
	body   []byte
	at     time.Time
}

// receiver is a webhook endpoint answering with respond(n) to its n-th
// request (1-based).
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []request
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter)) *receiver {
	t.Helper()
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, request{header: req.Header.Clone(), body: body, at: time.Now()})
		n := len(r.reqs)
		r.mu.Unlock()
		respond(n, w)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.reqs...)
}

func status(code int) func(int, http.ResponseWriter) {
	return func(_ int, w http.ResponseWriter) { w.WriteHeader(code) }
}

type bundle struct {
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	pool *pgxpool.Pool
	cfg  config.Config
}

func setup(t *testing.T) *bundle {
	t.Helper()
	srv := natstest.Start(t)
	pool, dbURL := pgtest.NewPool(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	opts := bus.Options{DedupeWindow: time.Minute}
	if err := bus.EnsureStreams(t.Context(), js, opts); err != nil {
		t.Fatal(err)
	}
	kv, err := bus.EnsureEndpointsBucket(t.Context(), js, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `INSERT INTO tenants (id, name) VALUES ('acme', 'Acme')`); err != nil {
		t.Fatal(err)
	}
	return &bundle{js: js, kv: kv, pool: pool, cfg: config.Config{
		NATSURL: srv.URL(), DatabaseURL: dbURL, ShutdownTimeout: 5 * time.Second,
		DedupeWindow: time.Minute, DispatchConcurrency: 4, AllowPrivateDestinations: true,
	}}
}

// start runs the dispatcher; the returned function stops it and waits.
func (b *bundle) start(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var w io.Writer = io.Discard
	if os.Getenv("HOOKLINE_TEST_LOG") != "" {
		w = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { done <- dispatcher.Run(ctx, b.cfg, log) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

var (
	secretA = signature.NewSecret()
	secretB = signature.NewSecret()
)

func (b *bundle) putEndpoint(t *testing.T, id, url string, scheduleMS ...uint64) *hooklinev1.Endpoint {
	t.Helper()
	ep := &hooklinev1.Endpoint{
		Id: id, TenantId: "acme", Url: url, Secrets: []*hooklinev1.Secret{{Value: secretA}},
		TimeoutMs: 2000, RetryScheduleMs: scheduleMS, Ordering: "key", PropagateTrace: true, Version: 1,
		Headers: map[string]string{"X-Custom": "yes"},
	}
	if err := endpoints.Put(t.Context(), b.kv, ep); err != nil {
		t.Fatal(err)
	}
	return ep
}

func (b *bundle) publish(t *testing.T, endpointID string) *hooklinev1.Delivery {
	t.Helper()
	return b.publishKey(t, endpointID, "k1")
}

// publishKey publishes a delivery with ordering key key ("" for none).
func (b *bundle) publishKey(t *testing.T, endpointID, key string) *hooklinev1.Delivery {
	t.Helper()
	evID := ids.New(ids.Event)
	d := &hooklinev1.Delivery{
		Id: ids.DeliveryFor("acme", evID, endpointID), TenantId: "acme", EventId: evID, EndpointId: endpointID,
		EventType: "order.created", Data: []byte(`{"amount": 5, "currency":"EUR"}`), OrderingKey: key,
		AcceptedAt: timestamppb.New(apitime.Now()), CreatedAt: timestamppb.New(apitime.Now()),
	}
	data, err := proto.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.PublishMsg(t.Context(), bus.NewMsg(bus.DeliverySubject("acme", endpointID, key), bus.DeliveryMsgID(d.GetId(), 0), data)); err != nil {
		t.Fatal(err)
	}
	return d
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type deliveryRow struct {
	status   string
	attempts int
	code     *int32
	lastErr  *string
}

func (b *bundle) delivery(t *testing.T, id string) (deliveryRow, bool) {
	t.Helper()
	var r deliveryRow
	err := b.pool.QueryRow(t.Context(), `SELECT status, attempts, last_status_code, last_error FROM deliveries WHERE id = $1`, id).
		Scan(&r.status, &r.attempts, &r.code, &r.lastErr)
	if err != nil {
		return r, false
	}
	return r, true
}

func (b *bundle) attemptErrors(t *testing.T, id string) []string {
	t.Helper()
	rows, err := b.pool.Query(t.Context(), `SELECT coalesce(error, '') FROM attempts WHERE delivery_id = $1 ORDER BY attempt`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// deadLetters returns the dead letters published so far.
func (b *bundle) deadLetters(t *testing.T) []*hooklinev1.DeadLetter {
	t.Helper()
	s, err := b.js.Stream(t.Context(), bus.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []*hooklinev1.DeadLetter
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		dl := &hooklinev1.DeadLetter{}
		if err := proto.Unmarshal(m.Data, dl); err != nil {
			t.Fatal(err)
		}
		out = append(out, dl)
	}
	return out
}

func (b *bundle) waitDead(t *testing.T, n int) []*hooklinev1.DeadLetter {
	t.Helper()
	var dls []*hooklinev1.DeadLetter
	waitFor(t, "dead letters", func() bool { dls = b.deadLetters(t); return len(dls) >= n })
	return dls
}

func TestDeliversPerContract(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newReceiver(t, func(_ int, w http.ResponseWriter) { _, _ = w.Write([]byte("thanks")) })
	ep := b.putEndpoint(t, "ep_1", rcv.URL)
	// A rotation in progress: both secrets sign.
	ep.Secrets = []*hooklinev1.Secret{{Value: secretB}, {Value: secretA, ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))},
		{Value: signature.NewSecret(), ExpiresAt: timestamppb.New(time.Now().Add(-time.Hour))}}
	if err := endpoints.Put(t.Context(), b.kv, ep); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	d := b.publish(t, "ep_1")

	waitFor(t, "succeeded delivery row", func() bool { r, ok := b.delivery(t, d.GetId()); return ok && r.status == "succeeded" })
	reqs := rcv.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	req := reqs[0]
	wantBody := `{"type":"order.created","timestamp":"` + apitime.Format(d.GetAcceptedAt().AsTime()) + `","data":{"amount": 5, "currency":"EUR"}}`
	if string(req.body) != wantBody {
		t.Errorf("body\n got %s\nwant %s", req.body, wantBody)
	}
	h := req.header
	for name, want := range map[string]string{
		"Content-Type": "application/json",
		"User-Agent":   version.UserAgent(),
		"Webhook-Id":   d.GetEventId(),
		"X-Custom":     "yes",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if h.Get("Traceparent") == "" || h.Get("Baggage") != "" {
		t.Errorf("traceparent %q baggage %q", h.Get("Traceparent"), h.Get("Baggage"))
	}
	if len(h.Values("Webhook-Signature")) != 1 || len(splitSpace(h.Get("Webhook-Signature"))) != 2 {
		t.Errorf("webhook-signature %q: want two signatures", h.Get("Webhook-Signature"))
	}
	for _, s := range []string{secretA, secretB} {
		if err := signature.Verify([]string{s}, h.Get("Webhook-Id"), h.Get("Webhook-Timestamp"), h.Get("Webhook-Signature"), req.body, time.Now()); err != nil {
			t.Errorf("signature does not verify with one of the rotation's secrets: %v", err)
		}
	}
	waitFor(t, "attempt row", func() bool { return len(b.attemptErrors(t, d.GetId())) == 1 })
	var body string
	var ok bool
	if err := b.pool.QueryRow(t.Context(), `SELECT response_body, succeeded FROM attempts WHERE delivery_id = $1`, d.GetId()).Scan(&body, &ok); err != nil {
		t.Fatal(err)
	}
	if body != "thanks" || !ok {
		t.Errorf("attempt body %q succeeded %v", body, ok)
	}
}

func splitSpace(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ' ' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

func TestRetryThenSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	b.putEndpoint(t, "ep_1", rcv.URL, 100)
	b.start(t)
	d := b.publish(t, "ep_1")

	waitFor(t, "succeeded delivery row", func() bool { r, ok := b.delivery(t, d.GetId()); return ok && r.status == "succeeded" })
	r, _ := b.delivery(t, d.GetId())
	if r.attempts != 2 || r.code == nil || *r.code != 204 || r.lastErr != nil {
		t.Errorf("delivery row %+v", r)
	}
	waitFor(t, "two attempt rows", func() bool { return len(b.attemptErrors(t, d.GetId())) == 2 })
	if got := b.attemptErrors(t, d.GetId()); got[0] != "status 500" || got[1] != "" {
		t.Errorf("attempt errors %q", got)
	}
	reqs := rcv.requests()
	if reqs[0].header.Get("Webhook-Id") != reqs[1].header.Get("Webhook-Id") {
		t.Error("webhook-id changed between attempts")
	}
	if gap := reqs[1].at.Sub(reqs[0].at); gap < 90*time.Millisecond {
		t.Errorf("retry after %s, want at least 90ms", gap)
	}
	if n := len(b.deadLetters(t)); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}

func TestExhausted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newReceiver(t, status(http.StatusInternalServerError))
	b.putEndpoint(t, "ep_1", rcv.URL, 100, 100)
	b.start(t)
	d := b.publish(t, "ep_1")

	dls := b.waitDead(t, 1)
	dl := dls[0]
	if dl.GetReason() != "exhausted" || dl.GetAttempts() != 3 || dl.GetLastStatusCode() != 500 || dl.GetLastError() != "status 500" ||
		dl.GetDelivery().GetId() != d.GetId() {
		t.Errorf("dead letter %v", dl)
	}
	if n := len(rcv.requests()); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	waitFor(t, "dead delivery row", func() bool { r, ok := b.delivery(t, d.GetId()); return ok && r.status == "dead" && r.attempts == 3 })
}

func TestNonRetryableAndDeleted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newReceiver(t, status(http.StatusBadRequest))
	b.putEndpoint(t, "ep_1", rcv.URL, 100, 100)
	b.start(t)
	d := b.publish(t, "ep_1")
	dl := b.waitDead(t, 1)[0]
	if dl.GetReason() != "non_retryable_status" || dl.GetAttempts() != 1 || dl.GetLastStatusCode() != 400 || dl.GetDelivery().GetId() != d.GetId() {
		t.Errorf("dead letter %v", dl)
	}

	// An endpoint nobody knows is dead at once, without an attempt.
	gone := b.publish(t, "ep_unknown")
	dl = b.waitDead(t, 2)[1]
	if dl.GetReason() != "endpoint_deleted" || dl.GetAttempts() != 0 || dl.GetDelivery().GetId() != gone.GetId() {
		t.Errorf("dead letter %v", dl)
	}
	if n := len(rcv.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestGoneDisablesEndpoint(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newReceiver(t, status(http.StatusGone))
	if _, err := b.pool.Exec(t.Context(), `
INSERT INTO endpoints (id, tenant_id, url, secret, retry_schedule) VALUES ('ep_1', 'acme', $1, $2, '{"100ms"}')`, rcv.URL, secretA); err != nil {
		t.Fatal(err)
	}
	if err := endpoints.Sync(t.Context(), b.pool, b.kv, "ep_1"); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	b.publish(t, "ep_1")
	dl := b.waitDead(t, 1)[0]
	if dl.GetReason() != "non_retryable_status" || dl.GetLastStatusCode() != 410 {
		t.Errorf("dead letter %v", dl)
	}
	var disabled bool
	var reason *string
	if err := b.pool.QueryRow(t.Context(), `SELECT disabled, disabled_reason FROM endpoints WHERE id = 'ep_1'`).Scan(&disabled, &reason); err != nil {
		t.Fatal(err)
	}
	if !disabled || reason == nil {
		t.Errorf("endpoint not disabled in the database")
	}
	e, err := b.kv.Get(t.Context(), "ep_1")
	if err != nil {
		t.Fatal(err)
	}
	ep := &hooklinev1.Endpoint{}
	if err := proto.Unmarshal(e.Value(), ep); err != nil {
		t.Fatal(err)
	}
	if !ep.GetDisabled() {
		t.Error("endpoint not disabled in KV")
	}
	// Later deliveries are dead letters without an attempt.
	b.publish(t, "ep_1")
	dl = b.waitDead(t, 2)[1]
	if dl.GetReason() != "endpoint_disabled" {
		t.Errorf("later dead letter reason %q", dl.GetReason())
	}
	if n := len(rcv.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rcv := newReceiver(t, func(_ int, w http.ResponseWriter) {
		select {
		case <-release:
		case <-time.After(2 * time.Second):
		}
		w.WriteHeader(http.StatusOK)
	})
	ep := b.putEndpoint(t, "ep_1", rcv.URL, 100)
	ep.TimeoutMs = 200
	if err := endpoints.Put(t.Context(), b.kv, ep); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	d := b.publish(t, "ep_1")
	dl := b.waitDead(t, 1)[0]
	if dl.GetReason() != "exhausted" || dl.GetAttempts() != 2 || dl.GetLastError() != "timeout" || dl.GetLastStatusCode() != 0 {
		t.Errorf("dead letter %v", dl)
	}
	waitFor(t, "two attempt rows", func() bool { return len(b.attemptErrors(t, d.GetId())) == 2 })
	if got := b.attemptErrors(t, d.GetId()); got[0] != "timeout" || got[1] != "timeout" {
		t.Errorf("attempt errors %q", got)
	}
}

func TestParkedRetrySurvivesRestart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, key, table string
	}{
		{"keyless", "", "delivery_retries"},
		{"keyed", "k1", "parked_deliveries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			rcv := newReceiver(t, func(n int, w http.ResponseWriter) {
				if n == 1 {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				w.WriteHeader(http.StatusOK)
			})
			b.putEndpoint(t, "ep_1", rcv.URL, 1500)
			stop := b.start(t)
			d := b.publishKey(t, "ep_1", tc.key)
			waitFor(t, "parked retry", func() bool {
				var n int
				_ = b.pool.QueryRow(t.Context(), `SELECT count(*) FROM `+tc.table+` WHERE delivery_id = $1`, d.GetId()).Scan(&n)
				return n == 1
			})
			stop()
			if n := len(rcv.requests()); n != 1 {
				t.Fatalf("%d requests before restart, want 1", n)
			}
			b.start(t)
			waitFor(t, "succeeded delivery row", func() bool {
				r, ok := b.delivery(t, d.GetId())
				return ok && r.status == "succeeded" && r.attempts == 2
			})
			for _, table := range []string{"delivery_retries", "parked_deliveries", "blocked_keys"} {
				var left int
				waitFor(t, table+" empty", func() bool {
					if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM `+table).Scan(&left); err != nil {
						t.Fatal(err)
					}
					return left == 0
				})
			}
		})
	}
}
