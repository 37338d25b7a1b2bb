package metrics

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/natstest"
)

func TestHandlerExposesMetricsAndConsumerBacklog(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := t.Context()
	if err := bus.EnsureStreams(ctx, js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureConsumer(ctx, js, bus.StreamEvents, bus.Consumer(bus.ConsumerFanout, 30*time.Second, 100)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, bus.EventSubject("acme", ""), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	m := New("hookline-test")
	m.EventsAccepted.WithLabelValues("http").Add(2)
	// Sample until the backlog shows: the consumer's count may trail the
	// publish acknowledgements for a moment on a loaded machine.
	var body []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		m.sample(ctx, js, ConsumerRef{bus.StreamEvents, bus.ConsumerFanout}, slog.New(slog.DiscardHandler))
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body, _ = io.ReadAll(rec.Body)
		if strings.Contains(string(body), `stream="HOOKLINE_EVENTS"} 3`) {
			break
		}
	}
	for _, want := range []string{
		`hookline_events_accepted_total{service="hookline-test",source="http"} 2`,
		`hookline_consumer_pending_messages{consumer="fanout",service="hookline-test",stream="HOOKLINE_EVENTS"} 3`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestNextCount(t *testing.T) {
	for _, c := range []struct{ interval, took, want time.Duration }{
		{10 * time.Second, 3 * time.Millisecond, 10 * time.Second},
		{10 * time.Second, 200 * time.Millisecond, 10 * time.Second},
		{10 * time.Second, time.Second, 50 * time.Second},
		{30 * time.Second, 5 * time.Second, 250 * time.Second},
	} {
		if got := NextCount(c.interval, c.took); got != c.want {
			t.Errorf("NextCount(%s, %s) = %s, want %s", c.interval, c.took, got, c.want)
		}
	}
}
