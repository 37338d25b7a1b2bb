package dispatcher_test

import (
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/ids"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// publishGroup publishes n keyless deliveries to endpointID in one message,
// as fan-out does, each with a trace context of its own.
func (b *bundle) publishGroup(t *testing.T, endpointID string, n int) ([]*hooklinev1.Delivery, []string) {
	t.Helper()
	g := &hooklinev1.Deliveries{}
	idList := make([]string, n)
	for i := range n {
		evID := ids.New(ids.Event)
		d := &hooklinev1.Delivery{
			Id: ids.DeliveryFor("acme", evID, endpointID), TenantId: "acme", EventId: evID, EndpointId: endpointID,
			EventType: "order.created", Data: []byte(`{"n":` + strconv.Itoa(i) + `}`),
			AcceptedAt: timestamppb.New(apitime.Now()), CreatedAt: timestamppb.New(apitime.Now()),
		}
		g.Deliveries = append(g.Deliveries, d)
		g.Traceparents = append(g.Traceparents, fmt.Sprintf("00-%032x-%016x-01", i+1, i+1))
		idList[i] = d.GetId()
	}
	data, err := proto.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	m := bus.NewMsg(bus.DeliverySubject("acme", endpointID, ""), bus.DeliveriesMsgID(idList), data)
	m.Header.Set(bus.HeaderDeliveries, strconv.Itoa(n))
	if _, err := b.js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	return g.GetDeliveries(), g.GetTraceparents()
}

// deliveryMsgs returns the single deliveries waiting in
// HOOKLINE_DELIVERIES, and how many messages of several deliveries (groups)
// wait with them. An acknowledged message leaves the stream a moment after
// the dispatcher's ack reached the server (the server removes it on its own
// goroutine), so callers poll until the stream shows what they expect.
func (b *bundle) deliveryMsgs(t *testing.T) (singles []*hooklinev1.Delivery, groups int) {
	t.Helper()
	s, err := b.js.Stream(t.Context(), bus.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			continue // removed meanwhile
		}
		if m.Header.Get(bus.HeaderDeliveries) != "" {
			groups++
			continue
		}
		d := &hooklinev1.Delivery{}
		if err := proto.Unmarshal(m.Data, d); err != nil {
			t.Fatal(err)
		}
		singles = append(singles, d)
	}
	return singles, groups
}

// streamEmpty reports whether HOOKLINE_DELIVERIES holds no message.
func (b *bundle) streamEmpty(t *testing.T) bool {
	t.Helper()
	singles, groups := b.deliveryMsgs(t)
	return len(singles) == 0 && groups == 0
}

// TestDeliveriesMessage: a message of several deliveries is attempted as
// that many deliveries, each in its own trace, a failed one retried on its
// own, and the message acknowledged once all are settled.
func TestDeliveriesMessage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 6
	rcv := newReceiver(t, func(k int, w http.ResponseWriter) {
		if k == 3 { // one of the first attempts fails, and is retried
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	b.putEndpoint(t, "ep_1", rcv.URL, 100)
	b.start(t)
	ds, traceparents := b.publishGroup(t, "ep_1", n)
	for _, d := range ds {
		waitFor(t, "succeeded delivery "+d.GetId(), func() bool { r, ok := b.delivery(t, d.GetId()); return ok && r.status == "succeeded" })
	}
	reqs := rcv.requests()
	if len(reqs) != n+1 {
		t.Fatalf("%d requests, want %d (each delivery once, one of them twice)", len(reqs), n+1)
	}
	traces := map[string]int{}
	for _, r := range reqs {
		traces[r.header.Get("Traceparent")[3:35]]++
	}
	for i, tp := range traceparents {
		if traces[tp[3:35]] == 0 {
			t.Errorf("delivery %d not attempted in its own trace %s: %v", i, tp, traces)
		}
	}
	waitFor(t, "deliveries stream empty", func() bool { return b.streamEmpty(t) })
}

// TestDeliveriesMessageHandedBackAtShutdown: a dispatcher stopping with a
// message of several deliveries part-way finishes those in flight and
// publishes the rest again, each on its own, instead of handing the whole
// message back: after a restart every delivery arrives, none twice.
func TestDeliveriesMessageHandedBackAtShutdown(t *testing.T) {
	t.Parallel()
	b := setup(t) // DispatchConcurrency 4: four attempts in flight at most
	const n = 12
	var slow atomic.Bool
	slow.Store(true)
	rcv := newReceiver(t, func(_ int, w http.ResponseWriter) {
		if slow.Load() {
			time.Sleep(400 * time.Millisecond)
		}
		w.WriteHeader(http.StatusOK)
	})
	b.putEndpoint(t, "ep_1", rcv.URL)
	stop := b.start(t)
	ds, _ := b.publishGroup(t, "ep_1", n)
	waitFor(t, "first attempts in flight", func() bool { return len(rcv.requests()) >= 1 })
	stop()
	before := len(rcv.requests())
	if before >= n {
		t.Fatalf("all %d delivered before the stop took effect; the test needs a slower receiver", before)
	}
	// The group's ack reached the server before stop returned; the server
	// removes the message a moment later.
	var left []*hooklinev1.Delivery
	waitFor(t, "the group's message removed after the stop", func() bool {
		var groups int
		left, groups = b.deliveryMsgs(t)
		return groups == 0
	})
	if len(left)+before != n {
		t.Fatalf("after the stop: %d delivered and %d handed back, want %d in all", before, len(left), n)
	}
	slow.Store(false)
	b.start(t)
	for _, d := range ds {
		waitFor(t, "succeeded delivery "+d.GetId(), func() bool { r, ok := b.delivery(t, d.GetId()); return ok && r.status == "succeeded" })
	}
	seen := map[string]int{}
	for _, r := range rcv.requests() {
		seen[r.header.Get("Webhook-Id")]++
	}
	for _, d := range ds {
		if seen[d.GetEventId()] != 1 {
			t.Errorf("delivery of %s arrived %d times, want once", d.GetEventId(), seen[d.GetEventId()])
		}
	}
	t.Logf("%d delivered before the stop, %d handed back on their own", before, len(left))
}

// TestRedeliveredDeliveriesMessageSkipsSettled: a message of several
// deliveries delivered again (its first replica never acknowledged it)
// sends only what the attempt log does not show as settled.
func TestRedeliveredDeliveriesMessageSkipsSettled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rcv := newReceiver(t, status(http.StatusOK))
	b.putEndpoint(t, "ep_1", rcv.URL)
	stop := b.start(t)
	ds, traceparents := b.publishGroup(t, "ep_1", 3)
	for _, d := range ds {
		waitFor(t, "succeeded delivery "+d.GetId(), func() bool { r, ok := b.delivery(t, d.GetId()); return ok && r.status == "succeeded" })
	}
	stop()

	// The same three and a fourth, in a message that a replica took and
	// did not acknowledge: here the test takes it and NAKs it.
	evID := ids.New(ids.Event)
	fourth := &hooklinev1.Delivery{
		Id: ids.DeliveryFor("acme", evID, "ep_1"), TenantId: "acme", EventId: evID, EndpointId: "ep_1",
		EventType: "order.created", Data: []byte(`{"n":4}`),
		AcceptedAt: timestamppb.New(apitime.Now()), CreatedAt: timestamppb.New(apitime.Now()),
	}
	g := &hooklinev1.Deliveries{Deliveries: append(ds, fourth), Traceparents: append(traceparents, "")}
	data, err := proto.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	m := bus.NewMsg(bus.DeliverySubject("acme", "ep_1", ""), "again", data)
	m.Header.Set(bus.HeaderDeliveries, "4")
	if _, err := b.js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	cons, err := b.js.Consumer(t.Context(), bus.StreamDeliveries, bus.ConsumerDispatcher)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	taken := 0
	for msg := range batch.Messages() {
		taken++
		if err := msg.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	if taken != 1 {
		t.Fatalf("took %d messages, want the one published", taken)
	}

	b.start(t)
	waitFor(t, "fourth delivery", func() bool { r, ok := b.delivery(t, fourth.GetId()); return ok && r.status == "succeeded" })
	waitFor(t, "deliveries stream empty", func() bool { return b.streamEmpty(t) })
	seen := map[string]int{}
	for _, r := range rcv.requests() {
		seen[r.header.Get("Webhook-Id")]++
	}
	for _, d := range g.GetDeliveries() {
		if seen[d.GetEventId()] != 1 {
			t.Errorf("delivery of %s arrived %d times, want once", d.GetEventId(), seen[d.GetEventId()])
		}
	}
}
