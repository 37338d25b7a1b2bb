package fanout_test

import (
	"fmt"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/bus"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/fanout/internal/fanout"
)

// TestKeyOrderAcrossReplicas: two fan-out replicas; each key's deliveries
// are stored in HOOKLINE_DELIVERIES in the order of the key's events, and
// carry their event's stream sequence.
func TestKeyOrderAcrossReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.putEndpoint(t, &hooklinev1.Endpoint{Id: "ep_all"})
	const keys, per = 8, 25
	for n := range per {
		for k := range keys {
			ev := newEvent("order.created", fmt.Sprint("key-", k))
			ev.Data = []byte(strconv.Itoa(n))
			b.publishEvent(t, ev, ev.GetId())
		}
	}
	b.start(t)
	b.start(t)
	msgs := b.streamMsgs(t, bus.StreamDeliveries, keys*per)
	next := map[string]int{}
	lastSeq := map[string]uint64{}
	for _, m := range msgs {
		d := &hooklinev1.Delivery{}
		if err := proto.Unmarshal(m.Data, d); err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(string(d.GetData()))
		if n != next[d.GetOrderingKey()] {
			t.Fatalf("key %s: event %d stored after %d", d.GetOrderingKey(), n, next[d.GetOrderingKey()]-1)
		}
		next[d.GetOrderingKey()]++
		seq, err := strconv.ParseUint(m.Header.Get(fanout.HeaderEventSeq), 10, 64)
		if err != nil || seq <= lastSeq[d.GetOrderingKey()] {
			t.Errorf("key %s: event seq header %q after %d", d.GetOrderingKey(), m.Header.Get(fanout.HeaderEventSeq), lastSeq[d.GetOrderingKey()])
		}
		lastSeq[d.GetOrderingKey()] = seq
	}
}

// TestKeyOrderOfEventsMessages: keyed events grouped as ingest publishes
// them (one message per key partition, several events of a key in one
// message) keep each key's order through two fan-out replicas.
func TestKeyOrderOfEventsMessages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.putEndpoint(t, &hooklinev1.Endpoint{Id: "ep_all"})
	const keys, msgsPerSubject, perMsg = 12, 10, 3
	bySubject := map[string][]string{}
	var subjects []string
	for k := range keys {
		key := fmt.Sprint("key-", k)
		subj := bus.EventSubject("acme", key)
		if _, ok := bySubject[subj]; !ok {
			subjects = append(subjects, subj)
		}
		bySubject[subj] = append(bySubject[subj], key)
	}
	total := 0
	for n := range msgsPerSubject {
		for i, subj := range subjects {
			g := &hooklinev1.Events{}
			for j := range perMsg {
				for _, key := range bySubject[subj] {
					ev := newEvent("order.created", key)
					ev.Data = []byte(strconv.Itoa(n*perMsg + j))
					g.Events = append(g.Events, ev)
					g.Traceparents = append(g.Traceparents, "")
				}
			}
			data, err := proto.Marshal(g)
			if err != nil {
				t.Fatal(err)
			}
			msg := bus.NewMsg(subj, fmt.Sprintf("g-%d-%d", n, i), data)
			msg.Header.Set(bus.HeaderEvents, strconv.Itoa(len(g.Events)))
			if _, err := b.js.PublishMsg(t.Context(), msg); err != nil {
				t.Fatal(err)
			}
			total += len(g.Events)
		}
	}
	b.start(t)
	b.start(t)
	msgs := b.streamMsgs(t, bus.StreamDeliveries, total)
	next := map[string]int{}
	lastSeq := map[string]uint64{}
	for _, m := range msgs {
		d := &hooklinev1.Delivery{}
		if err := proto.Unmarshal(m.Data, d); err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(string(d.GetData()))
		if n != next[d.GetOrderingKey()] {
			t.Fatalf("key %s: event %d stored after %d", d.GetOrderingKey(), n, next[d.GetOrderingKey()]-1)
		}
		next[d.GetOrderingKey()]++
		seq, err := strconv.ParseUint(m.Header.Get(fanout.HeaderEventSeq), 10, 64)
		if err != nil || seq < lastSeq[d.GetOrderingKey()] {
			t.Errorf("key %s: event seq header %q after %d", d.GetOrderingKey(), m.Header.Get(fanout.HeaderEventSeq), lastSeq[d.GetOrderingKey()])
		}
		lastSeq[d.GetOrderingKey()] = seq
	}
	if len(next) != keys {
		t.Errorf("deliveries of %d keys, want %d", len(next), keys)
	}
}
