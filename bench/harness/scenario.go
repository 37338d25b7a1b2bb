package harness

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Scenario is one measured load.
type Scenario struct {
	Name        string
	Desc        string
	Via         string  // batch, single or nats
	Rate        float64 // events/s; 0 is max rate
	Endpoints   int     // healthy endpoints, each receiving every event
	Failing     int     // endpoints answering 500 to everything
	Keys        int     // distinct ordering keys; 0 is keyless
	Dispatchers int     // dispatcher replicas (1 if 0)
	Duration    time.Duration
}

// Scenarios returns every scenario, in the order they run. Durations are at
// scale 1. The scenarios compared with batch (keys-1000, failing-1,
// replicas-3) run right after it in every round: this host's speed drifts
// within minutes, and neighbours in time share more of it.
func Scenarios() []Scenario {
	return []Scenario{
		{Name: "batch", Desc: "max rate, POST /events/batch of 100, keyless, 1 endpoint", Via: viaBatch, Endpoints: 1, Duration: 6 * time.Second},
		{Name: "keys-1000", Desc: "max rate, batch, 1,000 ordering keys, 1 endpoint", Via: viaBatch, Endpoints: 1, Keys: 1000, Duration: 6 * time.Second},
		{Name: "failing-1", Desc: "max rate, batch, 1 healthy endpoint beside 1 failing 100% (500)", Via: viaBatch, Endpoints: 1, Failing: 1, Duration: 8 * time.Second},
		{Name: "replicas-3", Desc: "max rate, batch, 3 dispatcher replicas, 1 endpoint", Via: viaBatch, Endpoints: 1, Dispatchers: 3, Duration: 6 * time.Second},
		{Name: "nats", Desc: "max rate, JetStream async publish, keyless, 1 endpoint", Via: viaNATS, Endpoints: 1, Duration: 6 * time.Second},
		{Name: "fixed-200", Desc: "200 events/s, POST /events, 1 endpoint", Via: viaSingle, Rate: 200, Endpoints: 1, Duration: 10 * time.Second},
		{Name: "fixed-2000", Desc: "2,000 events/s, POST /events, 1 endpoint", Via: viaSingle, Rate: 2000, Endpoints: 1, Duration: 5 * time.Second},
		{Name: "fanout-10", Desc: "max rate, batch, every event to 10 endpoints", Via: viaBatch, Endpoints: 10, Duration: 6 * time.Second},
	}
}

// Result is one scenario's measurement.
type Result struct {
	Scenario
	Accepted         int64 // events the pipeline accepted (202 or publish ack)
	SendErrors       int64
	SendErrorSample  string
	Expected         int64 // deliveries expected to healthy endpoints
	Delivered        int64 // unique deliveries that arrived
	Duplicates       int64
	FailingRequests  int64 // requests the failing endpoints answered with 500
	Elapsed          time.Duration
	EventsPerSec     float64
	DeliveriesPerSec float64
	P50, P90, P99    time.Duration
	Max              time.Duration
	// CPUPer1k is CPU seconds per 1,000 deliveries, by service, plus
	// "bench" (this process: NATS server, load generator, receiver) and
	// "postgres" (every postgres process on the machine).
	CPUPer1k map[string]float64
	// PeakRSS is bytes by service (the largest replica).
	PeakRSS map[string]int64
	Quiet   bool // the pipeline emptied its streams after the run
	// Rounds is how many runs the figures are the medians of; EventsMin
	// and EventsMax are the range of their events/s.
	Rounds               int
	EventsMin, EventsMax float64
	// Stages splits the latency by stage (fixed-rate scenarios with one
	// endpoint; N is 0 elsewhere).
	Stages Stages
}

// medianOf is the median of v, which it sorts; v is not empty.
func medianOf(v []float64) float64 {
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// median combines the results of one scenario's rounds: each figure is the
// median of its values, delivered and expected are totals.
func median(rs []Result) Result {
	out := rs[0]
	out.Rounds = len(rs)
	out.CPUPer1k, out.PeakRSS = map[string]float64{}, map[string]int64{}
	out.Accepted, out.SendErrors, out.Expected, out.Delivered, out.Duplicates, out.FailingRequests = 0, 0, 0, 0, 0, 0
	out.Quiet = true
	f := func(get func(Result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		return medianOf(v)
	}
	d := func(get func(Result) time.Duration) time.Duration {
		return time.Duration(f(func(r Result) float64 { return float64(get(r)) }))
	}
	out.EventsPerSec = f(func(r Result) float64 { return r.EventsPerSec })
	out.DeliveriesPerSec = f(func(r Result) float64 { return r.DeliveriesPerSec })
	out.P50 = d(func(r Result) time.Duration { return r.P50 })
	out.P90 = d(func(r Result) time.Duration { return r.P90 })
	out.P99 = d(func(r Result) time.Duration { return r.P99 })
	out.Max = d(func(r Result) time.Duration { return r.Max })
	out.Elapsed = d(func(r Result) time.Duration { return r.Elapsed })
	out.EventsMin, out.EventsMax = rs[0].EventsPerSec, rs[0].EventsPerSec
	out.Stages = medianStages(rs)
	for _, r := range rs {
		out.Accepted += r.Accepted
		out.SendErrors += r.SendErrors
		out.Expected += r.Expected
		out.Delivered += r.Delivered
		out.Duplicates += r.Duplicates
		out.FailingRequests += r.FailingRequests
		out.Quiet = out.Quiet && r.Quiet
		out.EventsMin, out.EventsMax = min(out.EventsMin, r.EventsPerSec), max(out.EventsMax, r.EventsPerSec)
		if out.SendErrorSample == "" {
			out.SendErrorSample = r.SendErrorSample
		}
		for k := range r.CPUPer1k {
			out.CPUPer1k[k] = f(func(r Result) float64 { return r.CPUPer1k[k] })
		}
		for k := range r.PeakRSS {
			out.PeakRSS[k] = int64(f(func(r Result) float64 { return float64(r.PeakRSS[k]) }))
		}
	}
	return out
}

// env is what scenarios run against.
type env struct {
	db   *database
	p    *pipeline
	recv *receiver
	js   jetstream.JetStream
	opts Options
	log  func(format string, args ...any)
}

type cpuSample map[string]float64

func (e *env) sampleCPU() cpuSample {
	s := cpuSample{}
	for name, procs := range e.p.byService() {
		for _, pr := range procs {
			if c, err := cpuSeconds(pr.pid()); err == nil {
				s[name] += c
			}
		}
	}
	if c, err := cpuSeconds(selfPID()); err == nil {
		s["bench"] = c
	}
	s["postgres"] = postgresCPU()
	return s
}

func (e *env) resetPeaks() {
	for _, procs := range e.p.byService() {
		for _, pr := range procs {
			resetPeakRSS(pr.pid())
		}
	}
}

func (e *env) peaks() map[string]int64 {
	m := map[string]int64{}
	for name, procs := range e.p.byService() {
		for _, pr := range procs {
			if b, err := peakRSS(pr.pid()); err == nil && b > m[name] {
				m[name] = b
			}
		}
	}
	return m
}

// runScenario measures sc; idx numbers the run.
func (e *env) runScenario(ctx context.Context, idx int, sc Scenario) (res Result, err error) {
	res.Scenario = sc
	if sc.Dispatchers > 1 {
		if err := e.p.addDispatchers(ctx, sc.Dispatchers-1); err != nil {
			return res, fmt.Errorf("start dispatcher replicas: %w", err)
		}
		defer func() { err = errors.Join(err, e.p.removeDispatchers()) }()
	}
	tenant := fmt.Sprintf("bench-%d-%s", idx, sc.Name)
	key, err := e.p.api.createTenant(ctx, tenant)
	if err != nil {
		return res, err
	}
	for i := range sc.Failing {
		if _, err := e.p.api.createEndpoint(ctx, tenant, e.recv.failingURL(i)); err != nil {
			return res, err
		}
	}
	for i := range sc.Endpoints {
		if _, err := e.p.api.createEndpoint(ctx, tenant, e.recv.healthyURL(i)); err != nil {
			return res, err
		}
	}
	g := &loadGen{base: e.p.api.base, tenant: tenant, apiKey: key, client: newHTTPClient(), js: e.js}
	defer g.client.CloseIdleConnections()

	// Warm up until the endpoints' configuration has reached fan-out and
	// the dispatchers and every endpoint has had a delivery.
	g.run = int64(1_000_000 + idx)
	g.t = newTracker(g.run, sc.Endpoints, 64)
	e.recv.track(g.t)
	if err := e.warm(ctx, g, sc); err != nil {
		return res, err
	}
	waitQuiet(ctx, e.js, 10*time.Second)
	// The previous scenarios' aftermath (their dead rows, PostgreSQL's
	// checkpoint) must not land in this one's figures. A checkpoint the
	// previous scenario's WAL started is spread over minutes of disk writes
	// that leave the CPUs idle: finish it now, after the vacuum that
	// autovacuum would have run by now.
	if err := e.db.settle(ctx); err != nil {
		e.log("  %v (figures may include the previous scenarios' dead rows or checkpoint)", err)
	}
	waitIdle(ctx, idleBusy, max(20*time.Second, e.opts.scaled(20*time.Second)))

	spec := loadSpec{via: sc.Via, rate: sc.Rate, keys: sc.Keys, duration: e.opts.scaled(sc.Duration), count: e.opts.Events, window: e.opts.Window}
	expect := int64(10_000)
	if spec.count > 0 {
		expect = spec.count * int64(sc.Endpoints)
	}
	g.run = int64(idx + 1)
	g.t = newTracker(g.run, sc.Endpoints, int(expect))
	e.recv.track(g.t)

	e.resetPeaks()
	before := e.sampleCPU()
	st := g.send(ctx, spec)
	res.Accepted, res.SendErrors = st.accepted.Load(), st.errors.Load()
	if s := st.errSample.Load(); s != nil {
		res.SendErrorSample = *s
	}
	res.Expected = res.Accepted * int64(sc.Endpoints)
	e.waitDelivered(ctx, g.t, res.Expected)
	lat, last, dups := g.t.snapshot()
	res.Delivered, res.Duplicates = int64(len(lat)), dups
	res.FailingRequests = g.t.failing.Load()
	res.Quiet = waitQuiet(ctx, e.js, max(30*time.Second, e.opts.scaled(30*time.Second)))
	after := e.sampleCPU()
	res.PeakRSS = e.peaks()
	if err := e.p.checkAlive(); err != nil {
		return res, err
	}
	if sc.Rate > 0 && sc.Endpoints == 1 && sc.Failing == 0 {
		// After the CPU sample: the query is the harness's work, not the
		// pipeline's.
		rs, err := e.db.stages(ctx, tenant, g.t)
		if err != nil {
			e.log("  latency not split by stage: %v", err)
		}
		res.Stages = splitStages(rs)
		if dir := e.opts.StagesDir; dir != "" && err == nil {
			path := filepath.Join(dir, fmt.Sprintf("%s-run%d.csv", sc.Name, idx+1))
			if err := writeStages(path, rs); err != nil {
				e.log("  %v", err)
			} else {
				e.log("  moments of each delivery in %s", path)
			}
		}
	}

	if len(lat) > 0 {
		res.Elapsed = last.Sub(st.first)
		if s := res.Elapsed.Seconds(); s > 0 {
			res.DeliveriesPerSec = float64(res.Delivered) / s
			res.EventsPerSec = res.DeliveriesPerSec / float64(sc.Endpoints)
		}
		slices.Sort(lat)
		res.P50, res.P90, res.P99 = percentile(lat, 0.50), percentile(lat, 0.90), percentile(lat, 0.99)
		res.Max = lat[len(lat)-1]
	}
	res.CPUPer1k = map[string]float64{}
	if res.Delivered > 0 {
		for k, v := range after {
			res.CPUPer1k[k] = max(0, v-before[k]) / float64(res.Delivered) * 1000
		}
	}
	return res, nil
}

// warm sends one event every 200 ms until every endpoint has received one.
func (e *env) warm(ctx context.Context, g *loadGen, sc Scenario) error {
	deadline := time.Now().Add(60 * time.Second)
	for seq := int64(0); ; seq++ {
		var err error
		if sc.Via == viaNATS {
			err = g.publishSync(ctx, seq, time.Now().UnixNano(), sc.Keys)
		} else {
			err = g.sendOne(ctx, seq, time.Now().UnixNano(), sc.Keys)
		}
		if err != nil {
			return fmt.Errorf("warm-up event: %w", err)
		}
		poll := time.Now().Add(200 * time.Millisecond)
		for time.Now().Before(poll) {
			if g.t.everyEndpoint() && (sc.Failing == 0 || g.t.failing.Load() > 0) {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := e.p.checkAlive(); err != nil {
			return err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("warm-up: endpoints of %s did not all receive an event within 60s", sc.Name)
		}
	}
}

// waitDelivered waits until want deliveries have arrived, or until none has
// arrived for the stall timeout.
func (e *env) waitDelivered(ctx context.Context, t *tracker, want int64) {
	stall := max(20*time.Second, e.opts.scaled(20*time.Second))
	last, lastChange := t.unique.Load(), time.Now()
	for ctx.Err() == nil {
		n := t.unique.Load()
		if n >= want {
			return
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		if time.Since(lastChange) > stall {
			e.log("  %d of %d deliveries arrived; none for %s, giving up", n, want, stall)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
