package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// TestTraceOfReplayedDeadLetter runs the four services exporting OTLP to a
// collector and follows an event whose endpoint answers 400: the dead
// letter is stored in the event's trace, and its replay starts a new trace,
// linked to that one, in which the dispatcher delivers it again.
func TestTraceOfReplayedDeadLetter(t *testing.T) {
	col := newCollector(t)
	p, ops := startTracedPipeline(t, col)
	var status atomic.Int32
	status.Store(http.StatusBadRequest)
	rc := newReceiver(t, func() int { return int(status.Load()) })
	p.ingest.must(t, "POST", "/v1/tenants", map[string]any{"id": "acme", "name": "Acme Inc"}, http.StatusCreated, nil)
	ep := p.createEndpoint(t, "acme", map[string]any{"url": rc.URL})
	// Endpoint changes reach fan-out and the dispatcher within 2 s (CONTRACT 2.2).
	time.Sleep(2 * time.Second)

	// request sends an authenticated request with a traceparent and returns
	// the status and body.
	request := func(method, base, path, body, traceparent string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+p.ingest.token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("traceparent", traceparent)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	waitSpan := func(trace, service, name string) span {
		t.Helper()
		var got []span
		eventually(t, 15*time.Second, fmt.Sprintf("span %s %q in trace %s", service, name, trace), func() error {
			if got = col.find(trace, service, name); len(got) == 0 {
				return fmt.Errorf("none yet")
			}
			return nil
		})
		if len(got) != 1 {
			t.Fatalf("trace %s: %d spans %s %q, want 1; spans:\n%s", trace, len(got), service, name, col.dump(trace))
		}
		return got[0]
	}
	childOf := func(child, parent span) {
		t.Helper()
		if child.parent != parent.spanID {
			t.Fatalf("%s %q: parent %s, want %s %q (%s)", child.service, child.name, child.parent, parent.service, parent.name, parent.spanID)
		}
	}

	traceEvt := randomHex(t, 16)
	code, body := request("POST", p.ingest.base, "/v1/tenants/acme/events", `{"type":"order.created","data":{"n":1}}`,
		"00-"+traceEvt+"-"+randomHex(t, 8)+"-01")
	if code != http.StatusAccepted {
		t.Fatalf("POST event = %d: %s", code, body)
	}
	var accepted struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &accepted); err != nil {
		t.Fatal(err)
	}

	// The 400 makes a dead letter, stored in the event's trace, under the
	// attempt that ended the delivery.
	var dlID string
	eventually(t, 15*time.Second, "the dead letter", func() error {
		var list struct {
			Data []struct {
				ID      string `json:"id"`
				EventID string `json:"event_id"`
				Reason  string `json:"reason"`
			} `json:"data"`
		}
		if code := p.dead.do(t, "GET", "/v1/tenants/acme/dead-letters", nil, &list); code != http.StatusOK {
			return fmt.Errorf("list dead letters = %d", code)
		}
		if len(list.Data) != 1 {
			return fmt.Errorf("%d dead letters", len(list.Data))
		}
		if d := list.Data[0]; d.EventID != accepted.ID || d.Reason != "non_retryable_status" {
			t.Fatalf("dead letter %+v, want event %s, reason non_retryable_status", d, accepted.ID)
		}
		dlID = list.Data[0].ID
		return nil
	})
	deliver := waitSpan(traceEvt, "hookline-dispatcher", "deliver")
	store := waitSpan(traceEvt, "hookline-deadletter", "store dead letter")
	childOf(store, deliver)
	if store.kind != tracepb.Span_SPAN_KIND_CONSUMER || store.attrs["hookline.event_id"] != accepted.ID || store.attrs["hookline.endpoint_id"] != ep.ID {
		t.Fatalf("store span: kind %v, attributes %v", store.kind, store.attrs)
	}

	// The replay, requested with a traceparent of its own.
	status.Store(http.StatusOK)
	traceReq, callerSpan := randomHex(t, 16), randomHex(t, 8)
	code, body = request("POST", p.dead.base, "/v1/tenants/acme/dead-letters/"+dlID+"/replay", "", "00-"+traceReq+"-"+callerSpan+"-01")
	if code != http.StatusAccepted {
		t.Fatalf("replay = %d: %s", code, body)
	}
	server := waitSpan(traceReq, "hookline-deadletter", "POST /v1/tenants/{tenant}/dead-letters/{id}/replay")
	if server.parent != callerSpan || server.kind != tracepb.Span_SPAN_KIND_SERVER || server.attrs["http.response.status_code"] != "202" {
		t.Fatalf("server span: parent %s (caller %s), kind %v, attributes %v", server.parent, callerSpan, server.kind, server.attrs)
	}
	for k := range server.attrs {
		if strings.HasPrefix(k, "url.") {
			t.Fatalf("server span records the URL: %v", server.attrs)
		}
	}

	// The replayed delivery's trace: a root linked to the store span, the
	// dispatcher's attempt under it, the traceparent the endpoint received.
	var replayed receipt
	eventually(t, 15*time.Second, "the replayed delivery", func() error {
		rs := rc.byID(accepted.ID)
		if len(rs) < 2 {
			return fmt.Errorf("%d receipts", len(rs))
		}
		replayed = rs[1]
		return nil
	})
	parts := strings.Split(replayed.header.Get("traceparent"), "-")
	if len(parts) != 4 || parts[1] == traceEvt || parts[1] == traceReq {
		t.Fatalf("replayed delivery's traceparent %q: want a new trace", replayed.header.Get("traceparent"))
	}
	traceReplay := parts[1]
	replay := waitSpan(traceReplay, "hookline-deadletter", "replay dead letter")
	if replay.parent != "" || !slices.Contains(replay.links, traceEvt+"/"+store.spanID) {
		t.Fatalf("replay span: parent %q, links %v; want a root linked to %s/%s", replay.parent, replay.links, traceEvt, store.spanID)
	}
	if replay.attrs["hookline.dead_letter_id"] != dlID || replay.attrs["hookline.event_id"] != accepted.ID {
		t.Fatalf("replay span attributes %v", replay.attrs)
	}
	deliver2 := waitSpan(traceReplay, "hookline-dispatcher", "deliver")
	childOf(deliver2, replay)
	out := waitSpan(traceReplay, "hookline-dispatcher", "POST")
	childOf(out, deliver2)
	if parts[2] != out.spanID {
		t.Fatalf("the endpoint's traceparent names span %s, want the outgoing HTTP span %s", parts[2], out.spanID)
	}
	t.Logf("trace of the replay:\n%s", col.dump(traceReplay))

	// The dead-letter service's counters.
	dead := ops["hookline-deadletter"]
	for _, w := range []struct {
		name   string
		labels []string
		value  float64
	}{
		{"hookline_dead_letters_created_total", []string{`reason="non_retryable_status"`}, 1},
		{"hookline_replay_items_total", []string{`result="sent"`}, 1},
		{"hookline_ready", nil, 1},
	} {
		eventually(t, 10*time.Second, w.name+fmt.Sprint(w.labels), func() error {
			if got := scrape(t, dead, w.name, w.labels...); got != w.value {
				return fmt.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
			}
			return nil
		})
	}
	for _, name := range []string{"hookline_dead_letters_pending", "hookline_consumer_pending_messages"} {
		if got := scrape(t, dead, name); got < 0 {
			t.Errorf("%s is not exported by the dead-letter service", name)
		}
	}
}
