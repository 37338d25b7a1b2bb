package sources_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	"github.com/hookline/hookline/pkg/secretbox"
	"github.com/hookline/hookline/pkg/signature"
	"github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/ingest"
	"github.com/hookline/hookline/services/ingest/internal/events"
)

const adminToken = "sources-admin-token-0123456789"

// bundle is one test's real ingest handler over its own database and NATS.
type bundle struct {
	url  string
	pool *pgxpool.Pool
	js   jetstream.JetStream
}

func setup(t *testing.T, mutate func(*config.Config)) *bundle {
	t.Helper()
	ctx := t.Context()
	pool, dbURL := pgtest.NewPool(t)
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	env := map[string]string{
		config.EnvNATSURL: ns.URL(), config.EnvDatabaseURL: dbURL, config.EnvAdminToken: adminToken,
		config.EnvAllowPrivate: "true", config.EnvEncryptionKeys: secretbox.NewKey("k1"),
	}
	cfg, err := config.Load(func(k string) string { return env[k] }, config.Need{NATS: true, Database: true, AdminToken: true})
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := bus.EnsureStreams(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	kv, err := bus.EnsureEndpointsBucket(ctx, js, bus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := httptest.NewServer(ingest.NewHandler(cfg, pool, kv, events.New(pool, js, cfg, log), log))
	t.Cleanup(srv.Close)
	b := &bundle{url: srv.URL, pool: pool, js: js}
	b.api(t, 201, "POST", "/v1/tenants", adminToken, map[string]any{"id": "acme"})
	return b
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (b *bundle) send(t *testing.T, method, url string, body []byte, h http.Header) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("undecodable body %q", raw)
		}
	}
	return r
}

// api calls the management API and fails unless it answers want.
func (b *bundle) api(t *testing.T, want int, method, path, token string, body any) response {
	t.Helper()
	var raw []byte
	if body != nil {
		raw, _ = json.Marshal(body)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	r := b.send(t, method, b.url+path, raw, h)
	if r.status != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, r.status, want, r.raw)
	}
	return r
}

// source creates a source in acme and returns its id and ingest URL.
func (b *bundle) source(t *testing.T, body map[string]any) (id, url string) {
	t.Helper()
	if body["name"] == nil {
		body["name"] = "test"
	}
	r := b.api(t, 201, "POST", "/v1/tenants/acme/sources", adminToken, body)
	id, _ = r.body["id"].(string)
	url, _ = r.body["ingest_url"].(string)
	if !strings.HasPrefix(id, "src_") || !strings.Contains(url, "/v1/in/hlsrc_") {
		t.Fatalf("created source %v", r.body)
	}
	return id, url
}

// accepted fails unless r is a 202 for a new (or, with dup, duplicate) event.
func accepted(t *testing.T, r response, dup bool) string {
	t.Helper()
	if r.status != http.StatusAccepted || r.body["duplicate"] != dup {
		t.Fatalf("status %d, want 202 with duplicate %v: %s", r.status, dup, r.raw)
	}
	return r.body["id"].(string)
}

func refused(t *testing.T, r response, status int) {
	t.Helper()
	if r.status != status || r.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("status %d (%s), want %d problem: %s", r.status, r.header.Get("Content-Type"), status, r.raw)
	}
}

// streamEvent returns the event id from HOOKLINE_EVENTS, or nil.
func (b *bundle) streamEvent(t *testing.T, id string) *hooklinev1.Event {
	t.Helper()
	st, err := b.js.Stream(t.Context(), bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			continue
		}
		// Events accepted together travel as one message (bus.HeaderEvents).
		var evs []*hooklinev1.Event
		if m.Header.Get(bus.HeaderEvents) != "" {
			var g hooklinev1.Events
			if err := proto.Unmarshal(m.Data, &g); err != nil {
				t.Fatal(err)
			}
			evs = g.GetEvents()
		} else {
			var ev hooklinev1.Event
			if err := proto.Unmarshal(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
			evs = []*hooklinev1.Event{&ev}
		}
		for _, ev := range evs {
			if ev.GetId() == id {
				return ev
			}
		}
	}
	return nil
}

// mustEvent fails unless event id is in HOOKLINE_EVENTS with type typ.
func (b *bundle) mustEvent(t *testing.T, id, typ string) *hooklinev1.Event {
	t.Helper()
	ev := b.streamEvent(t, id)
	if ev == nil {
		t.Fatalf("event %s is not in %s", id, bus.StreamEvents)
	}
	if ev.GetType() != typ || ev.GetTenantId() != "acme" {
		t.Fatalf("event %s: type %q tenant %q, want %q in acme", id, ev.GetType(), ev.GetTenantId(), typ)
	}
	return ev
}

// rejects returns the reasons recorded for a source, oldest first.
func (b *bundle) rejects(t *testing.T, sourceID string) []string {
	t.Helper()
	r := b.api(t, 200, "GET", "/v1/tenants/acme/sources/"+sourceID+"/rejects", adminToken, nil)
	var out []string
	list, _ := r.body["data"].([]any)
	for i := len(list) - 1; i >= 0; i-- {
		out = append(out, list[i].(map[string]any)["reason"].(string))
	}
	return out
}

func (b *bundle) wantRejects(t *testing.T, sourceID string, want ...string) {
	t.Helper()
	got := b.rejects(t, sourceID)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("rejects %v, want %v", got, want)
	}
}

func hdr(kv ...string) http.Header {
	h := http.Header{"Content-Type": {"application/json"}}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// githubSign signs the way GitHub documents it: "sha256=" + hex of
// HMAC-SHA256 over the raw payload, keyed with the webhook secret.
func githubSign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// stripeHeader builds Stripe-Signature as Stripe documents it:
// t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>"> (one v1 per secret).
func stripeHeader(at time.Time, body []byte, secrets ...string) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	parts := []string{"t=" + ts}
	for _, s := range secrets {
		m := hmac.New(sha256.New, []byte(s))
		m.Write([]byte(ts + "." + string(body)))
		parts = append(parts, "v1="+hex.EncodeToString(m.Sum(nil)))
	}
	return strings.Join(parts, ",")
}

func TestGitHub(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const secret = "It's a Secret to Everybody"
	id, url := b.source(t, map[string]any{
		"name": "github", "verifier": map[string]any{"kind": "github", "secret": secret},
		"mapping": map[string]any{
			"event_type":   map[string]any{"expression": `has(body.action) ? "github." + headers["x-github-event"] + "." + body.action : "github." + headers["x-github-event"]`},
			"ordering_key": map[string]any{"expression": `body.repository.full_name`},
		},
	})

	// GitHub's published example: the signature verifies (the answer is not
	// 401); the body is not JSON, so the request is refused as such.
	r := b.send(t, "POST", url, []byte("Hello, World!"),
		hdr(verifyHeader, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"))
	refused(t, r, http.StatusBadRequest)

	push := []byte(`{"ref":"refs/heads/main","repository":{"full_name":"octo/hello","id":1296269}}`)
	delivery := "72d3162e-cc78-11e3-81ab-4c9367dc0958"
	h := hdr("X-GitHub-Event", "push", "X-GitHub-Delivery", delivery, verifyHeader, githubSign(secret, push))
	evID := accepted(t, b.send(t, "POST", url, push, h), false)
	if evID != delivery {
		t.Fatalf("event id %q, want the delivery id", evID)
	}
	ev := b.mustEvent(t, evID, "github.push")
	if ev.GetOrderingKey() != "octo/hello" || string(ev.GetData()) != string(push) {
		t.Fatalf("event %v", ev)
	}
	// GitHub redelivers with the same X-GitHub-Delivery.
	if accepted(t, b.send(t, "POST", url, push, h), true) != delivery {
		t.Fatal("duplicate answered another id")
	}

	pr := []byte(`{"action":"opened","repository":{"full_name":"octo/hello"}}`)
	prID := accepted(t, b.send(t, "POST", url, pr, hdr("X-GitHub-Event", "pull_request", "X-GitHub-Delivery", "d-2", verifyHeader, githubSign(secret, pr))), false)
	b.mustEvent(t, prID, "github.pull_request.opened")

	tampered := bytes.Replace(push, []byte("main"), []byte("evil"), 1)
	refused(t, b.send(t, "POST", url, tampered, hdr("X-GitHub-Event", "push", "X-GitHub-Delivery", "d-3", verifyHeader, githubSign(secret, push))), 401)
	refused(t, b.send(t, "POST", url, push, hdr("X-GitHub-Event", "push", "X-GitHub-Delivery", "d-4", verifyHeader, githubSign("wrong", push))), 401)
	refused(t, b.send(t, "POST", url, push, hdr("X-GitHub-Event", "push", "X-GitHub-Delivery", "d-5")), 401)
	for _, d := range []string{"d-3", "d-4", "d-5"} {
		if b.streamEvent(t, d) != nil {
			t.Fatalf("refused delivery %s became an event", d)
		}
	}
	b.wantRejects(t, id, "invalid_body", "duplicate", "invalid_signature", "invalid_signature", "missing_signature")

	// The reject keeps the payload and the detail, for the tenant to see.
	r = b.api(t, 200, "GET", "/v1/tenants/acme/sources/"+id+"/rejects?reason=invalid_signature&limit=1", adminToken, nil)
	first := r.body["data"].([]any)[0].(map[string]any)
	if first["payload"] != string(push) || first["detail"] == "" {
		t.Fatalf("reject %v", first)
	}
}

const verifyHeader = "X-Hub-Signature-256"

func TestStripe(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const secret = "whsec_stripe_test_0123456789"
	id, url := b.source(t, map[string]any{"verifier": map[string]any{"kind": "stripe", "secret": secret}})
	now := time.Now()
	body := []byte(`{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"invoice.paid","data":{"object":{"amount_paid":2000}}}`)

	evID := accepted(t, b.send(t, "POST", url, body, hdr("Stripe-Signature", stripeHeader(now, body, secret))), false)
	if evID != "evt_1NG8Du2eZvKYlo2CUI79vXWy" {
		t.Fatalf("event id %q, want the Stripe event id", evID)
	}
	b.mustEvent(t, evID, "invoice.paid")
	// Stripe retries the same event id (with a fresh signature).
	accepted(t, b.send(t, "POST", url, body, hdr("Stripe-Signature", stripeHeader(now.Add(time.Second), body, secret))), true)

	body2 := []byte(`{"id":"evt_2","type":"customer.created","data":{}}`)
	// Several v1 entries, as during a Stripe secret roll: one matches.
	accepted(t, b.send(t, "POST", url, body2, hdr("Stripe-Signature", stripeHeader(now, body2, "whsec_other", secret))), false)
	b.mustEvent(t, "evt_2", "customer.created")

	body3 := []byte(`{"id":"evt_3","type":"customer.deleted","data":{}}`)
	refused(t, b.send(t, "POST", url, body3, hdr("Stripe-Signature", stripeHeader(now.Add(-6*time.Minute), body3, secret))), 401)
	refused(t, b.send(t, "POST", url, body3, hdr("Stripe-Signature", stripeHeader(now, body2, secret))), 401)
	refused(t, b.send(t, "POST", url, body3, hdr("Stripe-Signature", stripeHeader(now, body3, "whsec_wrong"))), 401)
	if b.streamEvent(t, "evt_3") != nil {
		t.Fatal("a refused Stripe event was accepted")
	}
	b.wantRejects(t, id, "duplicate", "stale_timestamp", "invalid_signature", "invalid_signature")
}

func TestStandardWebhooks(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	secret := signature.NewSecret()
	id, url := b.source(t, map[string]any{"verifier": map[string]any{"kind": "standard_webhooks", "secret": secret}})
	body := []byte(`{"type":"user.created","data":{"id":"u_1"}}`)
	signed := func(msgID string, at time.Time, content []byte, secret string) http.Header {
		sig, err := signature.Sign(secret, msgID, at, content)
		if err != nil {
			t.Fatal(err)
		}
		return hdr("webhook-id", msgID, "webhook-timestamp", strconv.FormatInt(at.Unix(), 10), "webhook-signature", sig)
	}
	now := time.Now()
	accepted(t, b.send(t, "POST", url, body, signed("msg_1", now, body, secret)), false)
	b.mustEvent(t, "msg_1", "user.created")
	accepted(t, b.send(t, "POST", url, body, signed("msg_1", now, body, secret)), true)
	refused(t, b.send(t, "POST", url, body, signed("msg_2", now.Add(-10*time.Minute), body, secret)), 401)
	refused(t, b.send(t, "POST", url, []byte(`{"type":"user.deleted"}`), signed("msg_3", now, body, secret)), 401)
	refused(t, b.send(t, "POST", url, body, signed("msg_4", now, body, signature.NewSecret())), 401)
	b.wantRejects(t, id, "duplicate", "stale_timestamp", "invalid_signature", "invalid_signature")

	// The published vector verifies with its own secret; its timestamp
	// (2021) is far outside the replay window, so it is refused as stale,
	// not as a bad signature.
	vid, vurl := b.source(t, map[string]any{"verifier": map[string]any{"kind": "standard_webhooks", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	refused(t, b.send(t, "POST", vurl, []byte(`{"test": 2432232314}`), hdr("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek",
		"webhook-timestamp", "1614265330", "webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")), 401)
	b.wantRejects(t, vid, "stale_timestamp")
}

func TestGenericVerifiers(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	body := []byte(`{"kind":"form.submitted","n":1}`)
	typ := map[string]any{"event_type": map[string]any{"expression": "body.kind"}}

	t.Run("hmac template", func(t *testing.T) {
		id, url := b.source(t, map[string]any{"mapping": typ, "verifier": map[string]any{
			"kind": "hmac", "secret": "s3cret", "header": "X-Signature", "algorithm": "sha256", "encoding": "base64",
			"prefix": "v1=", "signed_content": "{timestamp}.{body}", "timestamp_header": "X-Timestamp",
		}})
		sign := func(ts string, content []byte) string {
			m := hmac.New(sha256.New, []byte("s3cret"))
			m.Write([]byte(ts + "." + string(content)))
			return "v1=" + base64.StdEncoding.EncodeToString(m.Sum(nil))
		}
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		evID := accepted(t, b.send(t, "POST", url, body, hdr("X-Signature", sign(ts, body), "X-Timestamp", ts)), false)
		b.mustEvent(t, evID, "form.submitted")
		old := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
		refused(t, b.send(t, "POST", url, body, hdr("X-Signature", sign(old, body), "X-Timestamp", old)), 401)
		refused(t, b.send(t, "POST", url, body, hdr("X-Signature", sign(ts, []byte(`{}`)), "X-Timestamp", ts)), 401)
		b.wantRejects(t, id, "stale_timestamp", "invalid_signature")
	})
	t.Run("basic auth", func(t *testing.T) {
		id, url := b.source(t, map[string]any{"mapping": typ, "verifier": map[string]any{"kind": "basic_auth", "username": "hook", "secret": "pw"}})
		basic := func(u, p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p)) }
		accepted(t, b.send(t, "POST", url, body, hdr("Authorization", basic("hook", "pw"))), false)
		r := b.send(t, "POST", url, body, hdr("Authorization", basic("hook", "nope")))
		refused(t, r, 401)
		if r.header.Get("WWW-Authenticate") == "" {
			t.Fatal("no WWW-Authenticate on a basic-auth 401")
		}
		refused(t, b.send(t, "POST", url, body, hdr()), 401)
		b.wantRejects(t, id, "invalid_credentials", "missing_credentials")
	})
	t.Run("bearer", func(t *testing.T) {
		_, url := b.source(t, map[string]any{"mapping": typ, "verifier": map[string]any{"kind": "bearer", "secret": "tok-123"}})
		accepted(t, b.send(t, "POST", url, body, hdr("Authorization", "Bearer tok-123")), false)
		refused(t, b.send(t, "POST", url, body, hdr("Authorization", "Bearer tok-1234")), 401)
		// The admin token is no credential here.
		refused(t, b.send(t, "POST", url, body, hdr("Authorization", "Bearer "+adminToken)), 401)
	})
	t.Run("none", func(t *testing.T) {
		_, url := b.source(t, map[string]any{"mapping": typ, "verifier": map[string]any{"kind": "none"}})
		accepted(t, b.send(t, "POST", url, body, hdr()), false)
	})
}

func TestSecretRotation(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	id, url := b.source(t, map[string]any{"verifier": map[string]any{"kind": "github", "secret": "old-secret"}})
	n := 0
	post := func(secret string) response {
		n++
		body := []byte(fmt.Sprintf(`{"n":%d}`, n))
		return b.send(t, "POST", url, body, hdr("X-GitHub-Event", "ping", "X-GitHub-Delivery", "rot-"+strconv.Itoa(n), verifyHeader, githubSign(secret, body)))
	}
	accepted(t, post("old-secret"), false)
	r := b.api(t, 200, "POST", "/v1/tenants/acme/sources/"+id+"/secret/rotate", adminToken, map[string]any{"secret": "new-secret", "grace_seconds": 3600})
	if _, err := time.Parse(time.RFC3339, r.body["previous_secret_expires_at"].(string)); err != nil {
		t.Fatalf("rotate answer %v", r.body)
	}
	got := b.api(t, 200, "GET", "/v1/tenants/acme/sources/"+id, adminToken, nil).body
	if got["previous_secret_expires_at"] == nil || strings.Contains(fmt.Sprint(got), "secret\":") {
		t.Fatalf("source during grace %v", got)
	}
	accepted(t, post("old-secret"), false)
	accepted(t, post("new-secret"), false)
	refused(t, post("other-secret"), 401)

	// The grace period ends.
	if _, err := b.pool.Exec(t.Context(), `UPDATE sources SET previous_secret_expires_at = now() - interval '1 second' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	refused(t, post("old-secret"), 401)
	accepted(t, post("new-secret"), false)

	// Secrets are sealed at rest.
	var stored, prev string
	if err := b.pool.QueryRow(t.Context(), `SELECT secret, previous_secret FROM sources WHERE id = $1`, id).Scan(&stored, &prev); err != nil {
		t.Fatal(err)
	}
	if !secretbox.Sealed(stored) || !secretbox.Sealed(prev) || strings.Contains(stored+prev, "secret") {
		t.Fatalf("secrets stored as %q, %q", stored, prev)
	}
	b.api(t, 422, "POST", "/v1/tenants/acme/sources/"+id+"/secret/rotate", adminToken, map[string]any{"secret": "new-secret"})
	b.api(t, 422, "POST", "/v1/tenants/acme/sources/"+id+"/secret/rotate", adminToken, map[string]any{"grace_seconds": 10})
}

func TestMappingAndFilter(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	body := []byte(`{"action":"opened","number":7,"pull_request":{"id":42}}`)

	t.Run("header and constant", func(t *testing.T) {
		_, url := b.source(t, map[string]any{"verifier": map[string]any{"kind": "none"}, "mapping": map[string]any{
			"event_type":   map[string]any{"header": "X-Event-Name"},
			"ordering_key": map[string]any{"value": "all-in-one-lane"},
			"event_id":     map[string]any{"header": "X-Delivery"},
		}})
		evID := accepted(t, b.send(t, "POST", url, body, hdr("x-event-name", "thing.happened", "X-Delivery", "del-1")), false)
		ev := b.mustEvent(t, evID, "thing.happened")
		if evID != "del-1" || ev.GetOrderingKey() != "all-in-one-lane" {
			t.Fatalf("event %v", ev)
		}
		// No header: no event type, refused and recorded.
		refused(t, b.send(t, "POST", url, body, hdr()), 422)
	})
	t.Run("constant type, CEL key", func(t *testing.T) {
		_, url := b.source(t, map[string]any{"verifier": map[string]any{"kind": "none"}, "mapping": map[string]any{
			"event_type":   map[string]any{"value": "pr.event"},
			"ordering_key": map[string]any{"expression": `"pr-" + string(int(body.pull_request.id))`},
		}})
		evID := accepted(t, b.send(t, "POST", url, body, hdr()), false)
		if ev := b.mustEvent(t, evID, "pr.event"); ev.GetOrderingKey() != "pr-42" {
			t.Fatalf("ordering key %q", ev.GetOrderingKey())
		}
	})
	t.Run("CEL type that is not an event type", func(t *testing.T) {
		id, url := b.source(t, map[string]any{"verifier": map[string]any{"kind": "none"}, "mapping": map[string]any{
			"event_type": map[string]any{"expression": `"pr " + body.action`},
		}})
		refused(t, b.send(t, "POST", url, body, hdr()), 422)
		b.wantRejects(t, id, "mapping_failed")
	})
	t.Run("filter", func(t *testing.T) {
		id, url := b.source(t, map[string]any{"verifier": map[string]any{"kind": "none"},
			"mapping": map[string]any{"event_type": map[string]any{"expression": `"pr." + body.action`}},
			"filter":  `body.action == "opened" && !("x-keep" in headers && headers["x-keep"] == "no")`})
		accepted(t, b.send(t, "POST", url, body, hdr()), false)
		r := b.send(t, "POST", url, body, hdr("X-Keep", "no"))
		if r.status != http.StatusOK || r.body["filtered"] != true || r.body["id"] != nil {
			t.Fatalf("filtered answer %d %s", r.status, r.raw)
		}
		r = b.send(t, "POST", url, []byte(`{"other":1}`), hdr())
		if r.status != http.StatusOK || r.body["filtered"] != true {
			t.Fatalf("filter error answer %d %s", r.status, r.raw)
		}
		b.wantRejects(t, id, "filtered", "filtered")
		var n int
		if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM events WHERE source = $1`, "source:"+id).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%d events from the filtered source (%v), want 1", n, err)
		}
	})
	t.Run("form body", func(t *testing.T) {
		_, url := b.source(t, map[string]any{"verifier": map[string]any{"kind": "none"}, "format": "form",
			"mapping": map[string]any{"event_type": map[string]any{"expression": `"form." + body.form`}}})
		evID := accepted(t, b.send(t, "POST", url, []byte("form=contact&email=a%40b.c"), http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}), false)
		if ev := b.mustEvent(t, evID, "form.contact"); !strings.Contains(string(ev.GetData()), `"email":"a@b.c"`) {
			t.Fatalf("data %s", ev.GetData())
		}
	})
}

func TestIngestRoute(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *config.Config) { c.MaxEventBytes = 1024 })
	id, url := b.source(t, map[string]any{"verifier": map[string]any{"kind": "none"}, "mapping": map[string]any{"event_type": map[string]any{"value": "x.y"}}})

	for _, m := range []string{"GET", "PUT", "DELETE", "PATCH"} {
		r := b.send(t, m, url, nil, http.Header{})
		refused(t, r, http.StatusMethodNotAllowed)
		if !strings.Contains(r.header.Get("Allow"), "POST") {
			t.Fatalf("%s: Allow %q", m, r.header.Get("Allow"))
		}
	}
	refused(t, b.send(t, "POST", url, []byte(`{"big":"`+strings.Repeat("x", 2000)+`"}`), hdr()), http.StatusRequestEntityTooLarge)
	refused(t, b.send(t, "POST", url, []byte(`not json`), hdr()), http.StatusBadRequest)
	refused(t, b.send(t, "POST", url, []byte(``), hdr()), http.StatusBadRequest)
	refused(t, b.send(t, "POST", b.url+"/v1/in/hlsrc_unknown", []byte(`{}`), hdr()), http.StatusNotFound)
	refused(t, b.send(t, "POST", b.url+"/v1/in/", []byte(`{}`), hdr()), http.StatusNotFound)
	b.wantRejects(t, id, "too_large", "invalid_body", "invalid_body")

	// A new token replaces the old one at once.
	r := b.api(t, 200, "POST", "/v1/tenants/acme/sources/"+id+"/token/rotate", adminToken, nil)
	newURL, _ := r.body["ingest_url"].(string)
	if newURL == "" || newURL == url {
		t.Fatalf("rotated token: %v", r.body)
	}
	refused(t, b.send(t, "POST", url, []byte(`{}`), hdr()), http.StatusNotFound)
	accepted(t, b.send(t, "POST", newURL, []byte(`{}`), hdr()), false)

	// Deleting the source retires its URL.
	b.api(t, 204, "DELETE", "/v1/tenants/acme/sources/"+id, adminToken, nil)
	refused(t, b.send(t, "POST", newURL, []byte(`{}`), hdr()), http.StatusNotFound)
}

func TestSourceAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.api(t, 201, "POST", "/v1/tenants", adminToken, map[string]any{"id": "other"})
	acmeKey := b.api(t, 201, "POST", "/v1/tenants/acme/api-keys", adminToken, map[string]any{"name": "k"}).body["token"].(string)
	otherKey := b.api(t, 201, "POST", "/v1/tenants/other/api-keys", adminToken, map[string]any{"name": "k"}).body["token"].(string)

	created := b.api(t, 201, "POST", "/v1/tenants/acme/sources", acmeKey, map[string]any{
		"name": "gh", "verifier": map[string]any{"kind": "github", "secret": "s"},
	}).body
	id := created["id"].(string)
	m := created["mapping"].(map[string]any)
	if fmt.Sprint(m["event_type"]) != "map[header:X-GitHub-Event]" || fmt.Sprint(m["event_id"]) != "map[header:X-GitHub-Delivery]" ||
		m["ordering_key"] != nil || created["filter"] != nil || created["format"] != "json" || created["secret_set"] != true {
		t.Fatalf("created %v", created)
	}
	if strings.Contains(fmt.Sprint(created), `secret:s`) {
		t.Fatalf("secret shown: %v", created)
	}
	got := b.api(t, 200, "GET", "/v1/tenants/acme/sources/"+id, acmeKey, nil).body
	if got["ingest_url"] != nil {
		t.Fatalf("ingest_url shown again: %v", got)
	}
	list := b.api(t, 200, "GET", "/v1/tenants/acme/sources?limit=1", acmeKey, nil).body
	if len(list["data"].([]any)) != 1 || list["next_cursor"] != nil {
		t.Fatalf("list %v", list)
	}

	// Tenant isolation: another tenant's key sees nothing.
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/tenants/acme/sources"}, {"GET", "/v1/tenants/acme/sources/" + id},
		{"DELETE", "/v1/tenants/acme/sources/" + id}, {"GET", "/v1/tenants/other/sources/" + id},
		{"POST", "/v1/tenants/acme/sources/" + id + "/token/rotate"}, {"GET", "/v1/tenants/acme/sources/" + id + "/rejects"},
	} {
		b.api(t, 404, c.method, c.path, otherKey, nil)
	}
	b.api(t, 401, "GET", "/v1/tenants/acme/sources", "", nil)

	patched := b.api(t, 200, "PATCH", "/v1/tenants/acme/sources/"+id, acmeKey, map[string]any{
		"name": "gh2", "filter": `headers["x-github-event"] != "ping"`,
	}).body
	if patched["name"] != "gh2" || patched["filter"] == nil || patched["secret_set"] != true {
		t.Fatalf("patched %v", patched)
	}

	invalid := []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"verifier": map[string]any{"kind": "github", "secret": "s"}}, "name"},
		{map[string]any{"name": "x"}, "verifier"},
		{map[string]any{"name": "x", "verifier": map[string]any{"kind": "svix"}}, "verifier.kind"},
		{map[string]any{"name": "x", "verifier": map[string]any{"kind": "github"}}, "verifier.secret"},
		{map[string]any{"name": "x", "verifier": map[string]any{"kind": "standard_webhooks", "secret": "nope"}}, "verifier.secret"},
		{map[string]any{"name": "x", "verifier": map[string]any{"kind": "none", "secret": "s"}}, "verifier.secret"},
		{map[string]any{"name": "x", "verifier": map[string]any{"kind": "hmac", "secret": "s"}, "mapping": map[string]any{"event_type": map[string]any{"value": "a"}}}, "verifier.header"},
		{map[string]any{"name": "x", "verifier": map[string]any{"kind": "bearer", "secret": "s"}}, "mapping.event_type"},
		{map[string]any{"name": "x", "verifier": map[string]any{"kind": "none"}, "mapping": map[string]any{"event_type": map[string]any{"value": "a", "header": "b"}}}, "mapping.event_type"},
		{map[string]any{"name": "x", "verifier": map[string]any{"kind": "none"}, "mapping": map[string]any{"event_type": map[string]any{"expression": "body."}}}, "mapping.event_type.expression"},
		{map[string]any{"name": "x", "verifier": map[string]any{"kind": "github", "secret": "s"}, "filter": `headers["x-a"]`}, "filter"},
		{map[string]any{"name": "x", "verifier": map[string]any{"kind": "github", "secret": "s"}, "format": "xml"}, "format"},
		{map[string]any{"name": "x", "verifier": map[string]any{"kind": "github", "secret": "s"}, "color": "red"}, "color"},
	}
	for _, tc := range invalid {
		r := b.api(t, 422, "POST", "/v1/tenants/acme/sources", acmeKey, tc.body)
		found := false
		for _, e := range r.body["errors"].([]any) {
			found = found || e.(map[string]any)["field"] == tc.field
		}
		if !found {
			t.Errorf("%v: errors %v, want one for %s", tc.body, r.body["errors"], tc.field)
		}
	}
	b.api(t, 400, "POST", "/v1/tenants/acme/sources", acmeKey, "not json")
	b.api(t, 404, "POST", "/v1/tenants/nobody/sources", adminToken, map[string]any{"name": "x", "verifier": map[string]any{"kind": "none"}})
	b.api(t, 204, "DELETE", "/v1/tenants/acme/sources/"+id, acmeKey, nil)
	b.api(t, 404, "GET", "/v1/tenants/acme/sources/"+id, acmeKey, nil)
}
