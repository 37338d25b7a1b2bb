package keylane_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/keylane"
	"github.com/hookline/hookline/pkg/natstest"
)

func deliveriesStream(t testing.TB) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	if err := bus.EnsureStreams(context.Background(), js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), bus.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	return js, s
}

// TestLookupAgreesWithStreamHead: the cheap lookup answers what
// keylane.StreamHead answers, for present, absent and advanced heads.
func TestLookupAgreesWithStreamHead(t *testing.T) {
	t.Parallel()
	t.Run("direct get", func(t *testing.T) {
		t.Parallel()
		js, s := deliveriesStream(t)
		if !s.CachedInfo().Config.AllowDirect {
			t.Fatal("a single-replica stream does not allow direct gets")
		}
		lookupAgrees(t, js, s)
	})
	t.Run("stream msg get", func(t *testing.T) {
		t.Parallel()
		js, s := deliveriesStream(t)
		cfg := s.CachedInfo().Config
		cfg.AllowDirect = false // as on several replicas
		s, err := js.UpdateStream(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		lookupAgrees(t, js, s)
	})
}

func lookupAgrees(t *testing.T, js jetstream.JetStream, s jetstream.Stream) {
	ctx := t.Context()
	subj := func(k int) string { return bus.DeliverySubject("acme", "ep_1", bus.KeyToken(fmt.Sprint("key", k))) }
	data := bytes.Repeat([]byte(`{"x":"\u00e9\"quoted\""}`), 50)
	for i := range 3 {
		for k := range 3 {
			if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subj(k), Data: data, Header: nats.Header{"Seq": []string{fmt.Sprint(i)}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Advance key 1's head past its first message.
	seq, found, err := keylane.StreamHead(s)(ctx, subj(1))
	if err != nil || !found {
		t.Fatal(found, err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		t.Fatal(err)
	}
	want := keylane.StreamHead(s)
	got, err := keylane.Lookup(ctx, js, bus.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	for k := range 5 { // keys 3 and 4 have no message
		ws, wf, werr := want(ctx, subj(k))
		gs, gf, gerr := got(ctx, subj(k))
		if werr != nil || gerr != nil || ws != gs || wf != gf {
			t.Errorf("key %d: lookup = %d, %v, %v; StreamHead = %d, %v, %v", k, gs, gf, gerr, ws, wf, werr)
		}
	}
	if _, err := keylane.Lookup(ctx, js, "NO_SUCH_STREAM"); err == nil {
		t.Error("no error for a missing stream")
	}
}

// BenchmarkHeadLookup looks up the head of a subject holding 1 KiB messages.
func BenchmarkHeadLookup(b *testing.B) {
	js, s := deliveriesStream(b)
	ctx := context.Background()
	subject := bus.DeliverySubject("acme", "ep_1", bus.KeyToken("k"))
	for range 5 {
		if _, err := js.Publish(ctx, subject, bytes.Repeat([]byte("a"), 1024)); err != nil {
			b.Fatal(err)
		}
	}
	lookup, err := keylane.Lookup(ctx, js, bus.StreamDeliveries)
	if err != nil {
		b.Fatal(err)
	}
	for name, head := range map[string]keylane.HeadFunc{"lookup": lookup, "getmsg": keylane.StreamHead(s)} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok, err := head(ctx, subject); err != nil || !ok {
					b.Fatal(ok, err)
				}
			}
		})
	}
}
