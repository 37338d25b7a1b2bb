package fanout

import (
	"context"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/bus"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// TestGroupedMessages: an endpoint's keyless deliveries travel together in
// messages of at most groupDeliveries and about groupBytes, in order; a
// lone one, a keyed one and a dead letter each go alone.
func TestGroupedMessages(t *testing.T) {
	t.Parallel()
	delivery := func(ep, key string, n, size int) outgoing {
		return outgoing{ctx: context.Background(), d: &hooklinev1.Delivery{
			Id: ep + "-" + strconv.Itoa(n), TenantId: "acme", EventId: "evt" + strconv.Itoa(n), EndpointId: ep,
			OrderingKey: key, Data: make([]byte, size),
		}}
	}
	var fans []*fanning
	n := 0
	add := func(outs ...outgoing) {
		fans = append(fans, &fanning{out: outs})
	}
	// ep_a: groupDeliveries+3 small ones; ep_b: big ones that split by
	// bytes; ep_c: one alone; plus a keyed one and a dead letter.
	for range groupDeliveries + 3 {
		n++
		add(delivery("ep_a", "", n, 10), delivery("ep_b", "", n, groupBytes/3))
	}
	n++
	add(delivery("ep_c", "", n, 10))
	n++
	keyed := delivery("ep_a", "k1", n, 10)
	dead := delivery("ep_d", "", n, 10)
	dead.dead = true
	add(keyed, dead)

	msgs, err := groupedMessages(fans, 7)
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		subject string
		ids     []string
	}
	var out []got
	for _, m := range msgs {
		if m.Header.Get(HeaderEventSeq) != "7" {
			t.Errorf("message on %s without the events' sequence", m.Subject)
		}
		if m.Header.Get(bus.HeaderDeliveries) == "" {
			out = append(out, got{m.Subject, nil})
			continue
		}
		g := &hooklinev1.Deliveries{}
		if err := proto.Unmarshal(m.Data, g); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range g.GetDeliveries() {
			ids = append(ids, d.GetId())
		}
		if m.Header.Get(bus.HeaderDeliveries) != strconv.Itoa(len(ids)) || len(g.GetTraceparents()) != len(ids) {
			t.Errorf("header %q, %d traceparents for %d deliveries", m.Header.Get(bus.HeaderDeliveries), len(g.GetTraceparents()), len(ids))
		}
		out = append(out, got{m.Subject, ids})
	}
	sizes := map[string][]int{}
	singles := map[string]int{}
	var aOrder []string
	for _, o := range out {
		if o.ids == nil {
			singles[o.subject]++
			continue
		}
		sizes[o.subject] = append(sizes[o.subject], len(o.ids))
		if o.subject == bus.DeliverySubject("acme", "ep_a", "") {
			aOrder = append(aOrder, o.ids...)
		}
	}
	subjA, subjB := bus.DeliverySubject("acme", "ep_a", ""), bus.DeliverySubject("acme", "ep_b", "")
	if s := sizes[subjA]; len(s) != 2 || s[0] != groupDeliveries || s[1] != 3 {
		t.Errorf("ep_a in messages of %v, want [%d 3]", s, groupDeliveries)
	}
	for i, id := range aOrder {
		if id != "ep_a-"+strconv.Itoa(i+1) {
			t.Fatalf("ep_a's deliveries out of order at %d: %v", i, aOrder)
		}
	}
	total := singles[subjB] // a last message of one goes alone
	for _, k := range sizes[subjB] {
		total += k
	}
	if total != groupDeliveries+3 {
		t.Errorf("ep_b: %d deliveries in its messages, want %d", total, groupDeliveries+3)
	}
	for _, k := range sizes[subjB] {
		if k > 3 {
			t.Errorf("ep_b's messages hold %v deliveries of a third of groupBytes each, want at most 3", sizes[subjB])
			break
		}
	}
	for subject, want := range map[string]int{
		bus.DeliverySubject("acme", "ep_c", ""):   1,
		bus.DeliverySubject("acme", "ep_a", "k1"): 1,
		bus.DeadSubject("acme", "ep_d"):           1,
	} {
		if singles[subject] != want {
			t.Errorf("%d messages of one on %s, want %d", singles[subject], subject, want)
		}
	}
}
