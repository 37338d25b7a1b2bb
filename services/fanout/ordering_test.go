package fanout_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
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
	checkKeyOrder(t, msgs, false)
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
	next := checkKeyOrder(t, msgs, true)
	if len(next) != keys {
		t.Errorf("deliveries of %d keys, want %d", len(next), keys)
	}
}

// checkKeyOrder fails unless msgs, delivery messages in stream order, hold
// each key's events in order (an event's data is its number within its
// key, from 0) and carry their event's stream sequence, rising per key
// (or not falling, when sharedSeq: several events of a key in one message
// share it). It returns how many deliveries each key has.
func checkKeyOrder(t *testing.T, msgs []*jetstream.RawStreamMsg, sharedSeq bool) map[string]int {
	t.Helper()
	next := map[string]int{}
	lastSeq := map[string]uint64{}
	for _, m := range msgs {
		d := &hooklinev1.Delivery{}
		if err := proto.Unmarshal(m.Data, d); err != nil {
			t.Fatal(err)
		}
		key := d.GetOrderingKey()
		n, _ := strconv.Atoi(string(d.GetData()))
		if n != next[key] {
			t.Fatalf("key %s: event %d stored after %d", key, n, next[key]-1)
		}
		next[key]++
		seq, err := strconv.ParseUint(m.Header.Get(fanout.HeaderEventSeq), 10, 64)
		if err != nil || seq < lastSeq[key] || (seq == lastSeq[key] && !sharedSeq) {
			t.Errorf("key %s: event seq header %q after %d", key, m.Header.Get(fanout.HeaderEventSeq), lastSeq[key])
		}
		lastSeq[key] = seq
	}
	return next
}
