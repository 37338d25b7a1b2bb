package fanout_test

import (
	"context"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/ids"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/fanout"
	handler "github.com/hookline/hookline/services/fanout/internal/fanout"
)

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
	return &bundle{js: js, kv: kv, pool: pool, cfg: config.Config{
		NATSURL: srv.URL(), DatabaseURL: dbURL, ShutdownTimeout: 5 * time.Second,
		DedupeWindow: time.Minute, DispatchConcurrency: 8,
	}}
}

// start runs the service until the test ends.
func (b *bundle) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- fanout.Run(ctx, b.cfg, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

func (b *bundle) putEndpoint(t *testing.T, ep *hooklinev1.Endpoint) {
	t.Helper()
	ep.TenantId = "acme"
	ep.Version = 1
	if err := endpoints.Put(t.Context(), b.kv, ep); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) publishEvent(t *testing.T, ev *hooklinev1.Event, msgID string) {
	t.Helper()
	data, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.PublishMsg(t.Context(), bus.NewMsg(bus.EventSubject(ev.GetTenantId(), ev.GetOrderingKey()), msgID, data)); err != nil {
		t.Fatal(err)
	}
}

// deliveryID is the id fan-out derives for ev's delivery to endpoint.
func deliveryID(ev *hooklinev1.Event, endpoint string) string {
	return ids.DeliveryForAt(ev.GetTenantId(), ev.GetId(), endpoint, ev.GetAcceptedAt().AsTime())
}

func newEvent(typ, key string) *hooklinev1.Event {
	return &hooklinev1.Event{
		TenantId: "acme", Id: ids.New(ids.Event), Type: typ, Data: []byte(`{"amount":5}`),
		OrderingKey: key, AcceptedAt: timestamppb.New(apitime.Now()),
	}
}

// streamMsgs waits until stream holds want messages (and the events stream
// is empty, so fan-out has acked everything) and returns them.
func (b *bundle) streamMsgs(t *testing.T, stream string, want int) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := t.Context()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := b.js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := b.js.Stream(ctx, bus.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		evInfo, err := ev.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if int(info.State.Msgs) == want && evInfo.State.Msgs == 0 {
			var out []*jetstream.RawStreamMsg
			for seq := info.State.FirstSeq; seq <= info.State.LastSeq && want > 0; seq++ {
				m, err := s.GetMsg(ctx, seq)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, m)
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d messages (events pending %d), want %d", stream, info.State.Msgs, evInfo.State.Msgs, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bundle) deliveryRows(t *testing.T, eventID string) map[string]string {
	t.Helper()
	rows, err := b.pool.Query(t.Context(), `SELECT id, status FROM deliveries WHERE event_id = $1`, eventID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, status string
		if err := rows.Scan(&id, &status); err != nil {
			t.Fatal(err)
		}
		out[id] = status
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFanoutMatchesAndDedupes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.putEndpoint(t, &hooklinev1.Endpoint{Id: "ep_star", EventTypes: []string{"order.*"}})
	b.putEndpoint(t, &hooklinev1.Endpoint{Id: "ep_all"})
	b.putEndpoint(t, &hooklinev1.Endpoint{Id: "ep_user", EventTypes: []string{"user.>"}})
	b.putEndpoint(t, &hooklinev1.Endpoint{Id: "ep_filtered", EventTypes: []string{"order.>"}, Filter: "data.amount > 100"})
	b.start(t)

	ev := newEvent("order.created", "customer-42")
	b.publishEvent(t, ev, "e1")
	msgs := b.streamMsgs(t, bus.StreamDeliveries, 2)

	wantIDs := map[string]string{
		deliveryID(ev, "ep_star"): "ep_star",
		deliveryID(ev, "ep_all"):  "ep_all",
	}
	for _, m := range msgs {
		d := &hooklinev1.Delivery{}
		if err := proto.Unmarshal(m.Data, d); err != nil {
			t.Fatal(err)
		}
		ep, ok := wantIDs[d.GetId()]
		if !ok || d.GetEndpointId() != ep {
			t.Fatalf("unexpected delivery %s to %s", d.GetId(), d.GetEndpointId())
		}
		if got, want := m.Subject, bus.DeliverySubject("acme", ep, "customer-42"); got != want {
			t.Errorf("subject %q, want %q", got, want)
		}
		if got, want := m.Header.Get(bus.HeaderMsgID), bus.DeliveryMsgID(d.GetId(), 0); got != want {
			t.Errorf("Msg-Id %q, want %q", got, want)
		}
		if d.GetAttempts() != 0 || d.GetEventType() != "order.created" || string(d.GetData()) != `{"amount":5}` ||
			d.GetOrderingKey() != "customer-42" || !d.GetAcceptedAt().AsTime().Equal(ev.GetAcceptedAt().AsTime()) || d.GetCreatedAt() == nil {
			t.Errorf("delivery fields not copied: %v", d)
		}
	}
	rows := b.deliveryRows(t, ev.GetId())
	if len(rows) != 2 {
		t.Fatalf("deliveries rows %v, want 2", rows)
	}
	for id, status := range rows {
		if _, ok := wantIDs[id]; !ok || status != "pending" {
			t.Errorf("row %s status %s", id, status)
		}
	}

	// The same event again (a redelivery or a relay's republish): nothing new.
	b.publishEvent(t, ev, "e1-again")
	b.streamMsgs(t, bus.StreamDeliveries, 2)
	if rows := b.deliveryRows(t, ev.GetId()); len(rows) != 2 {
		t.Fatalf("deliveries rows after redelivery %v, want 2", rows)
	}

	// A filter that matches.
	big := newEvent("order.paid", "")
	big.Data = []byte(`{"amount":500}`)
	b.publishEvent(t, big, "e2")
	msgs = b.streamMsgs(t, bus.StreamDeliveries, 5)
	var eps []string
	for _, m := range msgs[2:] {
		d := &hooklinev1.Delivery{}
		if err := proto.Unmarshal(m.Data, d); err != nil {
			t.Fatal(err)
		}
		eps = append(eps, d.GetEndpointId())
		if m.Subject != bus.DeliverySubject("acme", d.GetEndpointId(), "") {
			t.Errorf("keyless subject %q", m.Subject)
		}
	}
	sort.Strings(eps)
	if want := []string{"ep_all", "ep_filtered", "ep_star"}; !equal(eps, want) {
		t.Errorf("filtered fan-out went to %v, want %v", eps, want)
	}
}

func TestFanoutDisabledAndOnlyEndpoint(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.putEndpoint(t, &hooklinev1.Endpoint{Id: "ep_off", Disabled: true})
	b.putEndpoint(t, &hooklinev1.Endpoint{Id: "ep_on", EventTypes: []string{"order.created"}})
	b.start(t)

	ev := newEvent("order.created", "")
	b.publishEvent(t, ev, "e1")
	dead := b.streamMsgs(t, bus.StreamDead, 1)
	dl := &hooklinev1.DeadLetter{}
	if err := proto.Unmarshal(dead[0].Data, dl); err != nil {
		t.Fatal(err)
	}
	did := deliveryID(ev, "ep_off")
	if dl.GetReason() != "endpoint_disabled" || dl.GetDelivery().GetId() != did || dl.GetDeadAt() == nil {
		t.Errorf("dead letter %v", dl)
	}
	if got := dead[0].Header.Get(bus.HeaderMsgID); got != bus.DeadMsgID(did, 0) {
		t.Errorf("dead Msg-Id %q", got)
	}
	if dead[0].Subject != bus.DeadSubject("acme", "ep_off") {
		t.Errorf("dead subject %q", dead[0].Subject)
	}
	b.streamMsgs(t, bus.StreamDeliveries, 1)

	// A test event goes to exactly the endpoint it names, whatever its
	// event types.
	test := newEvent("hookline.test", "")
	test.OnlyEndpointId = "ep_on"
	b.publishEvent(t, test, "e2")
	msgs := b.streamMsgs(t, bus.StreamDeliveries, 2)
	d := &hooklinev1.Delivery{}
	if err := proto.Unmarshal(msgs[1].Data, d); err != nil {
		t.Fatal(err)
	}
	if d.GetEndpointId() != "ep_on" || d.GetEventId() != test.GetId() {
		t.Errorf("test delivery %v", d)
	}
	if rows := b.deliveryRows(t, test.GetId()); len(rows) != 1 {
		t.Errorf("test event rows %v", rows)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A keyless delivery to an endpoint whose circuit is open is only its
// deliveries row, held for the circuit (the dispatchers' schedulers release
// it), instead of going through JetStream; a keyed one, and one to an
// endpoint with a closed circuit, are published as usual.
func TestFanoutParksForOpenCircuit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.putEndpoint(t, &hooklinev1.Endpoint{Id: "ep_open"})
	b.putEndpoint(t, &hooklinev1.Endpoint{Id: "ep_closed"})
	openUntil := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	if _, err := b.pool.Exec(t.Context(), `
INSERT INTO endpoint_circuits (endpoint_id, circuit, open_until, opens) VALUES
    ('ep_open', 'open', $1, 1),
    ('ep_closed', 'closed', NULL, 0)`, openUntil); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	// Fan-out reads the circuits at start.
	keyless := newEvent("order.created", "")
	b.publishEvent(t, keyless, "e1")
	keyed := newEvent("order.created", "customer-1")
	b.publishEvent(t, keyed, "e2")

	msgs := b.streamMsgs(t, bus.StreamDeliveries, 3)
	got := map[string]bool{}
	for _, m := range msgs {
		d := &hooklinev1.Delivery{}
		if err := proto.Unmarshal(m.Data, d); err != nil {
			t.Fatal(err)
		}
		got[d.GetEventId()+"/"+d.GetEndpointId()] = true
	}
	for _, want := range []string{keyless.GetId() + "/ep_closed", keyed.GetId() + "/ep_closed", keyed.GetId() + "/ep_open"} {
		if !got[want] {
			t.Errorf("no delivery %s published; got %v", want, got)
		}
	}

	did := deliveryID(keyless, "ep_open")
	var circuitHold bool
	var traceparent *string
	if err := b.pool.QueryRow(t.Context(), `SELECT circuit_hold, traceparent FROM deliveries WHERE id = $1`, did).
		Scan(&circuitHold, &traceparent); err != nil {
		t.Fatalf("held delivery %s: %v", did, err)
	}
	if !circuitHold {
		t.Error("delivery to the open circuit not held")
	}
	if n := b.count(t, `SELECT count(*) FROM deliveries WHERE circuit_hold`); n != 1 {
		t.Errorf("%d held deliveries rows, want 1", n)
	}
	if n := b.count(t, `SELECT count(*) FROM delivery_retries`); n != 0 {
		t.Errorf("%d delivery_retries rows, want none (the deliveries row is the hold)", n)
	}
	// Every matched endpoint has its pending row.
	if rows := b.deliveryRows(t, keyless.GetId()); len(rows) != 2 || rows[did] != "pending" {
		t.Errorf("delivery rows %v", rows)
	}
}

func (b *bundle) count(t *testing.T, q string) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(t.Context(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFanoutEventsMessage: a message of several keyless events (as ingest
// publishes a batch) is fanned out event by event, each delivery in its
// event's trace, and acknowledged once all are; an event without an id in
// it is skipped.
func TestFanoutEventsMessage(t *testing.T) {
	t.Parallel()
	// Deliveries carry their trace context as the services do once
	// telemetry is started.
	otel.SetTextMapPropagator(propagation.TraceContext{})
	b := setup(t)
	b.putEndpoint(t, &hooklinev1.Endpoint{Id: "ep_a"})
	b.putEndpoint(t, &hooklinev1.Endpoint{Id: "ep_b", EventTypes: []string{"order.paid"}})
	b.start(t)

	evs := []*hooklinev1.Event{newEvent("order.created", ""), newEvent("order.paid", ""), {TenantId: "acme", Type: "order.paid"}, newEvent("user.created", "")}
	traceparents := []string{
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"",
		"",
	}
	data, err := proto.Marshal(&hooklinev1.Events{Events: evs, Traceparents: traceparents})
	if err != nil {
		t.Fatal(err)
	}
	msg := bus.NewMsg(bus.EventSubject("acme", ""), "g1", data)
	msg.Header.Set(bus.HeaderEvents, "4")
	if _, err := b.js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	// ep_a's three deliveries travel in one message, ep_b's one alone.
	msgs := b.streamMsgs(t, bus.StreamDeliveries, 2)
	got := map[string]string{}
	for _, m := range msgs {
		if m.Header.Get(handler.HeaderEventSeq) == "" {
			t.Errorf("deliveries message on %s without its events' sequence", m.Subject)
		}
		for _, d := range unpackDeliveries(t, m) {
			got[d.d.GetEventId()+" "+d.d.GetEndpointId()] = d.traceparent
		}
	}
	if len(got) != 4 {
		t.Errorf("%d deliveries, want 4: %v", len(got), got)
	}
	// The same events fanned out again (a redelivery, here a second copy
	// past ingest's dedupe) make the same messages, which JetStream drops.
	again := bus.NewMsg(bus.EventSubject("acme", ""), "g1-again", data)
	again.Header.Set(bus.HeaderEvents, "4")
	if _, err := b.js.PublishMsg(t.Context(), again); err != nil {
		t.Fatal(err)
	}
	b.streamMsgs(t, bus.StreamDeliveries, 2)
	trace := func(tp string) string {
		if len(tp) < 35 {
			return ""
		}
		return tp[3:35]
	}
	for _, w := range []struct {
		ev    *hooklinev1.Event
		ep    string
		trace string
	}{
		{evs[0], "ep_a", trace(traceparents[0])},
		{evs[1], "ep_a", trace(traceparents[1])},
		{evs[1], "ep_b", trace(traceparents[1])},
		{evs[3], "ep_a", ""},
	} {
		tp, ok := got[w.ev.GetId()+" "+w.ep]
		if !ok {
			t.Errorf("no delivery of %s to %s; got %v", w.ev.GetId(), w.ep, got)
			continue
		}
		if w.trace != "" && trace(tp) != w.trace {
			t.Errorf("delivery of %s to %s in trace %q, want %q", w.ev.GetId(), w.ep, trace(tp), w.trace)
		}
	}
	for _, ev := range []*hooklinev1.Event{evs[0], evs[1], evs[3]} {
		if rows := b.deliveryRows(t, ev.GetId()); len(rows) == 0 {
			t.Errorf("no deliveries rows for %s", ev.GetId())
		}
	}
}

// packed is a delivery as it travels: on its own, or in a message of
// several (bus.HeaderDeliveries), with its trace context.
type packed struct {
	d           *hooklinev1.Delivery
	traceparent string
}

// unpackDeliveries returns the deliveries m carries.
func unpackDeliveries(t *testing.T, m *jetstream.RawStreamMsg) []packed {
	t.Helper()
	if n := m.Header.Get(bus.HeaderDeliveries); n != "" {
		g := &hooklinev1.Deliveries{}
		if err := proto.Unmarshal(m.Data, g); err != nil {
			t.Fatal(err)
		}
		if n != strconv.Itoa(len(g.GetDeliveries())) || len(g.GetDeliveries()) < 2 {
			t.Fatalf("%s header %q on a message of %d deliveries", bus.HeaderDeliveries, n, len(g.GetDeliveries()))
		}
		out := make([]packed, len(g.GetDeliveries()))
		for i, d := range g.GetDeliveries() {
			if d.GetOrderingKey() != "" || bus.DeliverySubject(d.GetTenantId(), d.GetEndpointId(), "") != m.Subject {
				t.Fatalf("delivery %s (key %q, endpoint %s) in a message on %s", d.GetId(), d.GetOrderingKey(), d.GetEndpointId(), m.Subject)
			}
			out[i] = packed{d: d, traceparent: g.GetTraceparents()[i]}
		}
		return out
	}
	d := &hooklinev1.Delivery{}
	if err := proto.Unmarshal(m.Data, d); err != nil {
		t.Fatal(err)
	}
	return []packed{{d: d, traceparent: m.Header.Get("traceparent")}}
}
