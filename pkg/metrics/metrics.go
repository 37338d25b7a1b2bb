// Package metrics defines every Prometheus metric Hookline exports, so names,
// labels and buckets are the same in every service. Labels are bounded: no
// event ids, no URLs, no endpoint ids. Each service builds one [Metrics] with
// its own registry and serves it on its ops address's /metrics.
package metrics

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the collectors. A service updates those of its own work;
// the others stay at zero.
type Metrics struct {
	Registry *prometheus.Registry
	service  string

	// ingest
	EventsAccepted  *prometheus.CounterVec // source: http|nats
	EventsRejected  *prometheus.CounterVec // source, reason
	EventsDuplicate *prometheus.CounterVec // source

	// fanout
	DeliveriesCreated prometheus.Counter
	EventsUnmatched   prometheus.Counter

	// dispatcher
	Attempts          *prometheus.CounterVec   // outcome: succeeded|retry|dead
	AttemptDuration   *prometheus.HistogramVec // outcome
	DeliveryLatency   prometheus.Histogram     // acceptance to 2xx, first delivery
	RetriesScheduled  prometheus.Counter
	BreakersOpen      prometheus.Gauge
	EndpointsDisabled *prometheus.CounterVec // reason: gone|failing|api
	KeysBlocked       prometheus.Gauge
	DeliveriesHeld    prometheus.Gauge

	// deadletter
	DeadLettersCreated  *prometheus.CounterVec // reason
	DeadLettersResolved prometheus.Counter
	DeadLettersPending  prometheus.Gauge
	ReplayItems         *prometheus.CounterVec // result: sent|skipped

	// every consumer
	ConsumerPending     *prometheus.GaugeVec // stream, consumer
	ConsumerAckPending  *prometheus.GaugeVec // stream, consumer
	ConsumerRedelivered *prometheus.GaugeVec // stream, consumer

	// every service: 1 while /readyz would answer 200 (see [Metrics.SetReadiness])
	ready atomic.Pointer[func() bool]
}

// Buckets for HTTP attempt durations and end-to-end latency (seconds).
var (
	attemptBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600}
)

// New returns the metrics of service, registered on a new registry together
// with the Go runtime and process collectors.
func New(service string) *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	constLabels := prometheus.Labels{"service": service}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "hookline", Name: name, Help: help, ConstLabels: constLabels}, labels)
		f(c)
		return c
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "hookline", Name: name, Help: help, ConstLabels: constLabels})
		f(g)
		return g
	}
	gaugeVec := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "hookline", Name: name, Help: help, ConstLabels: constLabels}, labels)
		f(g)
		return g
	}
	one := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "hookline", Name: name, Help: help, ConstLabels: constLabels})
		f(c)
		return c
	}
	m := &Metrics{Registry: reg, service: service}
	m.EventsAccepted = counter("events_accepted_total", "Events accepted (durable), by source.", "source")
	m.EventsRejected = counter("events_rejected_total", "Events refused, by source and reason.", "source", "reason")
	m.EventsDuplicate = counter("events_duplicate_total", "Events answered as duplicates of an earlier one.", "source")
	m.DeliveriesCreated = one("deliveries_created_total", "Deliveries created by fan-out (one per matched endpoint).")
	m.EventsUnmatched = one("events_unmatched_total", "Events that matched no endpoint.")
	m.Attempts = counter("delivery_attempts_total", "HTTP delivery attempts, by outcome (succeeded, retry, dead).", "outcome")
	m.AttemptDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "hookline", Name: "delivery_attempt_duration_seconds",
		Help: "Duration of HTTP delivery attempts.", Buckets: attemptBuckets, ConstLabels: constLabels}, []string{"outcome"})
	f(m.AttemptDuration)
	m.DeliveryLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "hookline", Name: "delivery_latency_seconds",
		Help: "Time from an event's acceptance to its 2xx at the endpoint.", Buckets: latencyBuckets, ConstLabels: constLabels})
	f(m.DeliveryLatency)
	m.RetriesScheduled = one("retries_scheduled_total", "Retries scheduled after a failed attempt.")
	m.BreakersOpen = gauge("circuit_breakers_open", "Endpoints whose circuit breaker is open in this replica.")
	m.EndpointsDisabled = counter("endpoints_disabled_total", "Endpoints disabled automatically, by reason.", "reason")
	m.KeysBlocked = gauge("ordering_keys_blocked", "Ordering keys waiting for a retry of their head delivery.")
	m.DeliveriesHeld = gauge("circuit_deliveries_held", "Deliveries waiting for their endpoint's circuit breaker to close.")
	m.DeadLettersCreated = counter("dead_letters_created_total", "Dead letters stored, by reason.", "reason")
	m.DeadLettersResolved = one("dead_letters_resolved_total", "Dead letters resolved by a delivered replay.")
	m.DeadLettersPending = gauge("dead_letters_pending", "Dead letters neither resolved nor discarded.")
	m.ReplayItems = counter("replay_items_total", "Dead letters processed by replays, by result.", "result")
	m.ConsumerPending = gaugeVec("consumer_pending_messages", "Messages not yet delivered to a JetStream consumer (backlog).", "stream", "consumer")
	m.ConsumerAckPending = gaugeVec("consumer_ack_pending_messages", "Messages delivered but not yet acknowledged.", "stream", "consumer")
	m.ConsumerRedelivered = gaugeVec("consumer_redelivered_messages", "Messages redelivered and still unacknowledged.", "stream", "consumer")
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "hookline", Name: "ready",
		Help: "1 while the service is ready (its /readyz answers 200), else 0.", ConstLabels: constLabels}, func() float64 {
		if ready := m.ready.Load(); ready != nil && (*ready)() {
			return 1
		}
		return 0
	}))
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// HeadChecks exports hookline_ordering_head_checks_total from counts: how
// many heads of ordering keys' subjects were looked up in the stream
// (result "lookup") and how many were known without asking it ("known").
// Call it once.
func (m *Metrics) HeadChecks(counts func() (lookups, known uint64)) {
	for _, c := range []struct {
		result string
		value  func() float64
	}{
		{"lookup", func() float64 { l, _ := counts(); return float64(l) }},
		{"known", func() float64 { _, k := counts(); return float64(k) }},
	} {
		m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "hookline", Name: "ordering_head_checks_total",
			Help:        "Heads of ordering keys checked before their delivery: looked up in the stream, or known without a lookup.",
			ConstLabels: prometheus.Labels{"service": m.service, "result": c.result}}, c.value))
	}
}

// SetReadiness makes hookline_ready report ready() at every scrape; until it
// is called, hookline_ready is 0.
func (m *Metrics) SetReadiness(ready func() bool) { m.ready.Store(&ready) }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
