package keylane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
)

// TestRuns: consecutive first deliveries share a run; a gap, a redelivery,
// a stream sequence that goes back (a recreated consumer) or a lost
// connection starts a new one, and a redelivery belongs to none.
func TestRuns(t *testing.T) {
	t.Parallel()
	type delivery struct {
		consumer, stream, delivered uint64
		disconnects                 uint64
		want                        Run
	}
	cases := []struct {
		name string
		seq  []delivery
	}{
		{"consecutive", []delivery{{1, 10, 1, 0, 1}, {2, 11, 1, 0, 1}, {3, 15, 1, 0, 1}}},
		{"first seen late", []delivery{{7, 10, 1, 0, 1}, {8, 12, 1, 0, 1}}},
		{"gap", []delivery{{1, 10, 1, 0, 1}, {2, 11, 1, 0, 1}, {4, 13, 1, 0, 2}, {5, 14, 1, 0, 2}}},
		{"redelivery", []delivery{{1, 10, 1, 0, 1}, {2, 8, 2, 0, 0}, {3, 11, 1, 0, 2}, {4, 12, 1, 0, 2}}},
		{"two redeliveries", []delivery{{1, 10, 1, 0, 1}, {2, 8, 2, 0, 0}, {3, 9, 3, 0, 0}, {4, 11, 1, 0, 2}}},
		{"stream goes back", []delivery{{1, 10, 1, 0, 1}, {2, 4, 1, 0, 2}, {3, 5, 1, 0, 2}}},
		{"disconnected", []delivery{{1, 10, 1, 0, 1}, {2, 11, 1, 1, 2}, {3, 12, 1, 1, 2}, {4, 13, 1, 3, 3}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r runs
			for i, d := range c.seq {
				meta := &jetstream.MsgMetadata{NumDelivered: d.delivered,
					Sequence: jetstream.SequencePair{Consumer: d.consumer, Stream: d.stream}}
				if got := r.observe(meta, d.disconnects); got != d.want {
					t.Fatalf("delivery %d (%+v): run %d, want %d", i, d, got, d.want)
				}
			}
		})
	}
	t.Run("current ends with a disconnection", func(t *testing.T) {
		var r runs
		r.observe(&jetstream.MsgMetadata{NumDelivered: 1, Sequence: jetstream.SequencePair{Consumer: 1, Stream: 1}}, 0)
		if got := r.current(0); got != 1 {
			t.Fatalf("current %d, want 1", got)
		}
		if got := r.current(1); got != 0 {
			t.Fatalf("current after a disconnection %d, want 0", got)
		}
	})
}

// fetch takes exactly n messages from c.
func fetch(t *testing.T, c jetstream.Consumer, n int) []jetstream.Msg {
	t.Helper()
	var msgs []jetstream.Msg
	for deadline := time.Now().Add(10 * time.Second); len(msgs) < n && time.Now().Before(deadline); {
		batch, err := c.Fetch(n-len(msgs), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
	}
	if len(msgs) != n {
		t.Fatalf("fetched %d of %d", len(msgs), n)
	}
	return msgs
}

// recorder is the work of lanes in these tests: it records each message's
// data (or what record returns for it) per subject and acknowledges it,
// waiting for the server.
type recorder struct {
	t      *testing.T
	mu     sync.Mutex
	got    map[string][]string
	gate   chan struct{}
	record func(jetstream.Msg) string
}

func newRecorder(t *testing.T) *recorder {
	return &recorder{t: t, got: map[string][]string{}}
}

func (r *recorder) work(_ context.Context, m jetstream.Msg) {
	if r.gate != nil {
		<-r.gate
	}
	v := string(m.Data())
	if r.record != nil {
		v = r.record(m)
	}
	r.mu.Lock()
	r.got[m.Subject()] = append(r.got[m.Subject()], v)
	r.mu.Unlock()
	if err := m.DoubleAck(context.Background()); err != nil {
		r.t.Error(err)
	}
}

func (r *recorder) of(subject string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got[subject])
}

// waitFor waits until subject's record is want.
func (r *recorder) waitFor(subject string, want ...string) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(r.of(subject), want) {
		if time.Now().After(deadline) {
			r.t.Fatalf("%s handled %v, want %v", subject, r.of(subject), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func publish(t *testing.T, js jetstream.JetStream, subject string, data ...string) {
	t.Helper()
	for _, d := range data {
		if _, err := js.Publish(t.Context(), subject, []byte(d)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLanesKnowHeadsInOneRun: one replica receiving every delivery looks
// up each subject's first head only; the rest follow in order without a
// lookup.
func TestLanesKnowHeadsInOneRun(t *testing.T) {
	t.Parallel()
	js, s, c := setupStream(t)
	const subjects, per = 3, 10
	for i := range per {
		for k := range subjects {
			publish(t, js, bus.DeliverySubject("acme", "ep", fmt.Sprint("key", k)), fmt.Sprint(i))
		}
	}
	rec := newRecorder(t)
	rec.gate = make(chan struct{})
	l := New(StreamHead(s), rec.work, discard())
	for _, m := range fetch(t, c, subjects*per) {
		l.Add(t.Context(), m, l.Observe(m, true))
	}
	close(rec.gate)
	want := make([]string, per)
	for i := range want {
		want[i] = fmt.Sprint(i)
	}
	for k := range subjects {
		rec.waitFor(bus.DeliverySubject("acme", "ep", fmt.Sprint("key", k)), want...)
	}
	if lookups, skipped := l.Counts(); lookups != subjects || skipped != subjects*(per-1) {
		t.Errorf("%d lookups and %d heads known, want %d and %d", lookups, skipped, subjects, subjects*(per-1))
	}
	l.Stop()
	l.Wait(5 * time.Second)
}

// TestLanesWaitForMessagesInTransit: a message observed but not yet added
// (still on its way to the lane) holds back the later messages of its
// subject, and so does one that was observed and then forgotten.
func TestLanesWaitForMessagesInTransit(t *testing.T) {
	t.Parallel()
	js, _, c := setupStream(t)
	s, err := js.Stream(t.Context(), bus.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	subject := bus.DeliverySubject("acme", "ep", "k")
	publish(t, js, subject, "1", "2", "3", "4")
	msgs := fetch(t, c, 4)
	rec := newRecorder(t)
	l := New(StreamHead(s), rec.work, discard())
	var obs []Observed
	for _, m := range msgs {
		obs = append(obs, l.Observe(m, true))
	}
	l.Add(t.Context(), msgs[0], obs[0])
	rec.waitFor(subject, "1")
	// 2 is in transit: 3 must wait for it.
	l.Add(t.Context(), msgs[2], obs[2])
	time.Sleep(200 * time.Millisecond)
	if got := rec.of(subject); len(got) != 1 {
		t.Fatalf("handled %v while 2 was on its way", got)
	}
	l.Add(t.Context(), msgs[1], obs[1])
	rec.waitFor(subject, "1", "2", "3")

	// 4 was forgotten by this replica (handed back): the next message
	// must wait for whoever finishes it.
	publish(t, js, subject, "5")
	five := fetch(t, c, 1)[0]
	o5 := l.Observe(five, true)
	if err := msgs[3].Nak(); err != nil {
		t.Fatal(err)
	}
	l.Forget(msgs[3], obs[3])
	l.Add(t.Context(), five, o5)
	time.Sleep(200 * time.Millisecond)
	if got := rec.of(subject); len(got) != 3 {
		t.Fatalf("handled %v while 4 was held elsewhere", got)
	}
	again := fetch(t, c, 1)[0] // 4, redelivered
	if string(again.Data()) != "4" {
		t.Fatalf("redelivered %q, want 4", again.Data())
	}
	l.Add(t.Context(), again, l.Observe(again, true))
	rec.waitFor(subject, "1", "2", "3", "4", "5")
	l.Stop()
	l.Wait(5 * time.Second)
}

// TestLanesLookUpAfterAGap: when another replica took deliveries in
// between, a replica's run ends, and its next message of a subject waits
// for the messages the other replica holds.
func TestLanesLookUpAfterAGap(t *testing.T) {
	t.Parallel()
	js, s, c := setupStream(t)
	subject := bus.DeliverySubject("acme", "ep", "k")
	publish(t, js, subject, "1", "2", "3", "4", "5", "6")
	rec := newRecorder(t)
	a := New(StreamHead(s), rec.work, discard())
	b := New(StreamHead(s), rec.work, discard())
	first := fetch(t, c, 2)  // 1, 2 to a
	middle := fetch(t, c, 2) // 3, 4 to b
	last := fetch(t, c, 2)   // 5, 6 to a
	var (
		oa = []Observed{a.Observe(first[0], true), a.Observe(first[1], true), a.Observe(last[0], true), a.Observe(last[1], true)}
		ob = []Observed{b.Observe(middle[0], true), b.Observe(middle[1], true)}
	)
	a.Add(t.Context(), first[0], oa[0])
	a.Add(t.Context(), first[1], oa[1])
	rec.waitFor(subject, "1", "2")
	a.Add(t.Context(), last[0], oa[2])
	a.Add(t.Context(), last[1], oa[3])
	time.Sleep(200 * time.Millisecond)
	if got := rec.of(subject); len(got) != 2 {
		t.Fatalf("handled %v while 3 and 4 were held elsewhere", got)
	}
	b.Add(t.Context(), middle[0], ob[0])
	b.Add(t.Context(), middle[1], ob[1])
	rec.waitFor(subject, "1", "2", "3", "4", "5", "6")
	for _, l := range []*Lanes{a, b} {
		l.Stop()
		l.Wait(5 * time.Second)
	}
}

// TestLanesPassClearToTheNextHead: a head learns through FollowsClear
// whether the head just before it, finished here in the same run, called
// LeaveClear; a head that was looked up learns nothing.
func TestLanesPassClearToTheNextHead(t *testing.T) {
	t.Parallel()
	js, s, c := setupStream(t)
	subject := bus.DeliverySubject("acme", "ep", "k")
	publish(t, js, subject, "0", "1", "2", "3", "4")
	rec := newRecorder(t)
	rec.gate = make(chan struct{})
	rec.record = func(m jetstream.Msg) string {
		follows := FollowsClear(m)
		// 0, 2 and 4 leave the subject clear; 1 and 3 do not.
		if string(m.Data()) != "1" && string(m.Data()) != "3" {
			LeaveClear(m)
		}
		return fmt.Sprint(follows)
	}
	l := New(StreamHead(s), rec.work, discard())
	for _, m := range fetch(t, c, 5) {
		l.Add(t.Context(), m, l.Observe(m, true))
	}
	close(rec.gate)
	rec.waitFor(subject, "false", "true", "false", "true", "false")
	l.Stop()
	l.Wait(5 * time.Second)
}
