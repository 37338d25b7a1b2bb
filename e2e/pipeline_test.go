package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hookline/hookline/pkg/freeport"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
)

// pipeline is the four services running as separate processes.
type pipeline struct {
	ingest, dead api
	procs        []*proc
	natsURL      string
}

func startPipeline(t *testing.T) *pipeline {
	t.Helper()
	srv := natstest.Start(t)
	dbURL := pgtest.NewDatabase(t)
	const admin = "e2e-admin-token-0123456789"
	common := map[string]string{
		"HOOKLINE_NATS_URL":                   srv.URL(),
		"HOOKLINE_DATABASE_URL":               dbURL,
		"HOOKLINE_ADMIN_TOKEN":                admin,
		"HOOKLINE_ALLOW_PRIVATE_DESTINATIONS": "true",
		"HOOKLINE_LOG_LEVEL":                  "debug",
		"HOOKLINE_SHUTDOWN_TIMEOUT":           "10s",
	}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range common {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}

	// The schema is already migrated by pgtest; the migrate command must be
	// a no-op on it and need nothing but the database URL.
	mig := start(t, "hookline-ingest", map[string]string{"HOOKLINE_DATABASE_URL": dbURL}, "migrate")
	<-mig.done
	if mig.err != nil {
		t.Fatalf("hookline-ingest migrate: %v\n%s", mig.err, mig.log.String())
	}

	p := &pipeline{natsURL: srv.URL()}
	ingestHTTP, deadHTTP := freeport.Addr(t), freeport.Addr(t)
	for _, svc := range []struct{ name, http string }{
		{"hookline-ingest", ingestHTTP},
		{"hookline-fanout", ""},
		{"hookline-dispatcher", ""},
		{"hookline-deadletter", deadHTTP},
	} {
		ops := freeport.Addr(t)
		env := with(map[string]string{"HOOKLINE_OPS_ADDR": ops, "HOOKLINE_HTTP_ADDR": svc.http})
		if svc.http == "" {
			env["HOOKLINE_HTTP_ADDR"] = "off"
		}
		pr := start(t, svc.name, env)
		p.procs = append(p.procs, pr)
		waitReady(t, pr, ops)
	}
	p.ingest = api{base: "http://" + ingestHTTP, token: admin}
	p.dead = api{base: "http://" + deadHTTP, token: admin}
	return p
}

type endpointResp struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
}

func (p *pipeline) createEndpoint(t *testing.T, tenant string, body map[string]any) endpointResp {
	t.Helper()
	var created endpointResp
	p.ingest.must(t, "POST", "/v1/tenants/"+tenant+"/endpoints", body, http.StatusCreated, &created)
	var full endpointResp
	p.ingest.must(t, "GET", "/v1/tenants/"+tenant+"/endpoints/"+created.ID, nil, http.StatusOK, &full)
	if full.Secret == "" {
		t.Fatalf("GET endpoint shows no secret")
	}
	return full
}

// verify checks a receipt with the independent Standard Webhooks library.
func verify(t *testing.T, secret string, r receipt) {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(r.body, r.header); err != nil {
		t.Fatalf("Standard Webhooks verifier rejects the delivery: %v (headers %v)", err, r.header)
	}
}

func TestPipelineEndToEnd(t *testing.T) {
	p := startPipeline(t)
	ok := newReceiver(t, func() int { return http.StatusOK })
	failing := newReceiver(t, func() int { return http.StatusInternalServerError })

	p.ingest.must(t, "POST", "/v1/tenants", map[string]any{"id": "acme", "name": "Acme Inc"}, http.StatusCreated, nil)
	good := p.createEndpoint(t, "acme", map[string]any{"url": ok.URL, "event_types": []string{"order.*"}})
	bad := p.createEndpoint(t, "acme", map[string]any{"url": failing.URL, "event_types": []string{"payment.>"}, "retry_schedule": []string{"100ms", "100ms"}})
	// Let the endpoint configuration reach fan-out and the dispatcher.
	time.Sleep(1500 * time.Millisecond)

	t.Run("event over HTTP is delivered, signed", func(t *testing.T) {
		var accepted struct {
			ID         string `json:"id"`
			AcceptedAt string `json:"accepted_at"`
			Duplicate  bool   `json:"duplicate"`
		}
		p.ingest.must(t, "POST", "/v1/tenants/acme/events",
			map[string]any{"type": "order.created", "data": map[string]any{"amount": 42}}, http.StatusAccepted, &accepted)
		if accepted.ID == "" || accepted.Duplicate {
			t.Fatalf("accepted = %+v", accepted)
		}
		eventually(t, 20*time.Second, "delivery of "+accepted.ID, func() error {
			if n := len(ok.byID(accepted.ID)); n == 0 {
				return fmt.Errorf("no receipt yet")
			}
			return nil
		})
		r := ok.byID(accepted.ID)[0]
		verify(t, good.Secret, r)
		var body struct {
			Type      string          `json:"type"`
			Timestamp string          `json:"timestamp"`
			Data      json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil {
			t.Fatal(err)
		}
		if body.Type != "order.created" || body.Timestamp != accepted.AcceptedAt || string(body.Data) != `{"amount":42}` {
			t.Fatalf("body = %s (accepted_at %s)", r.body, accepted.AcceptedAt)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("content-type %q", ct)
		}
		if ua := r.header.Get("User-Agent"); !contains(ua, "Hookline/") {
			t.Fatalf("user-agent %q", ua)
		}
		if len(failing.byID(accepted.ID)) != 0 {
			t.Fatal("an endpoint not subscribed to order.* received the event")
		}
		// The event shows its delivery.
		eventually(t, 10*time.Second, "delivery status", func() error {
			var ev struct {
				Deliveries []struct {
					EndpointID string `json:"endpoint_id"`
					Status     string `json:"status"`
				} `json:"deliveries"`
			}
			p.ingest.must(t, "GET", "/v1/tenants/acme/events/"+accepted.ID, nil, http.StatusOK, &ev)
			if len(ev.Deliveries) != 1 || ev.Deliveries[0].EndpointID != good.ID || ev.Deliveries[0].Status != "succeeded" {
				return fmt.Errorf("deliveries = %+v", ev.Deliveries)
			}
			return nil
		})
	})

	t.Run("event published over NATS is delivered, signed", func(t *testing.T) {
		nc, err := nats.Connect(p.natsURL)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg("hookline.publish.acme.order.shipped")
		msg.Header.Set("Nats-Msg-Id", "nats-evt-1")
		msg.Data = []byte(`{"carrier":"ups"}`)
		if _, err := js.PublishMsg(t.Context(), msg); err != nil {
			t.Fatalf("publish: %v", err)
		}
		eventually(t, 20*time.Second, "delivery of nats-evt-1", func() error {
			if len(ok.byID("nats-evt-1")) == 0 {
				return fmt.Errorf("no receipt yet")
			}
			return nil
		})
		r := ok.byID("nats-evt-1")[0]
		verify(t, good.Secret, r)
		if !contains(string(r.body), `"type":"order.shipped"`) || !contains(string(r.body), `{"carrier":"ups"}`) {
			t.Fatalf("body = %s", r.body)
		}
	})

	t.Run("an endpoint answering 500 ends as a dead letter", func(t *testing.T) {
		var accepted struct {
			ID string `json:"id"`
		}
		p.ingest.must(t, "POST", "/v1/tenants/acme/events",
			map[string]any{"type": "payment.failed", "data": map[string]any{"id": "pay_1"}}, http.StatusAccepted, &accepted)
		type deadLetter struct {
			ID         string `json:"id"`
			EventID    string `json:"event_id"`
			EndpointID string `json:"endpoint_id"`
			Reason     string `json:"reason"`
			Attempts   int    `json:"attempts"`
			LastStatus *int   `json:"last_status_code"`
		}
		var found deadLetter
		eventually(t, 30*time.Second, "dead letter", func() error {
			var page struct {
				Data []deadLetter `json:"data"`
			}
			p.dead.must(t, "GET", "/v1/tenants/acme/dead-letters?endpoint_id="+bad.ID, nil, http.StatusOK, &page)
			for _, d := range page.Data {
				if d.EventID == accepted.ID {
					found = d
					return nil
				}
			}
			return fmt.Errorf("not dead yet: %+v", page.Data)
		})
		if found.Reason != "exhausted" || found.Attempts != 3 || found.LastStatus == nil || *found.LastStatus != 500 {
			t.Fatalf("dead letter = %+v", found)
		}
		if n := len(failing.byID(accepted.ID)); n != 3 {
			t.Fatalf("receiver saw %d attempts, want 3", n)
		}
		for _, r := range failing.byID(accepted.ID) {
			verify(t, bad.Secret, r)
		}
	})

	t.Run("SIGTERM stops every service with exit status 0", func(t *testing.T) {
		for _, pr := range p.procs {
			if err := pr.stop(t, 20*time.Second); err != nil {
				t.Errorf("%s: %v", pr.name, err)
			}
		}
	})
}
