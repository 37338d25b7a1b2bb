package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// How a scenario sends its events.
const (
	viaBatch  = "batch"  // POST /events/batch
	viaSingle = "single" // POST /events, one request per event
	viaNATS   = "nats"   // JetStream async publish to hookline.publish.<tenant>.<type>
)

const (
	eventType     = "bench.event"
	batchSize     = 100
	batchSenders  = 4
	fixedSenders  = 128
	natsMaxAsync  = 4096
	pollInterval  = 2 * time.Millisecond
	errSampleSize = 300
)

// loadSpec says how much to send and how.
type loadSpec struct {
	via      string
	rate     float64       // events per second; 0 sends as fast as the window allows
	duration time.Duration // how long to send (when count is 0)
	count    int64         // events to send; 0 sends for duration
	keys     int           // distinct ordering keys; 0 sends none
	window   int64         // most deliveries outstanding (max rate only)
}

// sendStats is what the load generator did.
type sendStats struct {
	accepted  atomic.Int64
	errors    atomic.Int64
	errSample atomic.Pointer[string]
	first     time.Time
}

func (s *sendStats) fail(n int64, err error) {
	s.errors.Add(n)
	msg := err.Error()
	if len(msg) > errSampleSize {
		msg = msg[:errSampleSize]
	}
	s.errSample.CompareAndSwap(nil, &msg)
}

// loadGen sends one run's events to one tenant.
type loadGen struct {
	base   string // ingest base URL
	tenant string
	apiKey string
	client *http.Client
	js     jetstream.JetStream
	run    int64
	t      *tracker
}

func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
		},
	}
}

func (g *loadGen) orderingKey(seq int64, keys int) string {
	if keys <= 0 {
		return ""
	}
	return "key-" + strconv.FormatInt(seq%int64(keys), 10)
}

// send runs spec and returns when the last event has been sent.
func (g *loadGen) send(ctx context.Context, spec loadSpec) *sendStats {
	st := &sendStats{first: time.Now()}
	switch {
	case spec.rate > 0:
		g.sendFixed(ctx, spec, st)
	case spec.via == viaNATS:
		g.sendNATS(ctx, spec, st)
	default:
		g.sendBatches(ctx, spec, st)
	}
	return st
}

// done reports whether a max-rate sender should stop before sending seq.
func done(ctx context.Context, spec loadSpec, start time.Time, seq int64) bool {
	if ctx.Err() != nil {
		return true
	}
	if spec.count > 0 {
		return seq >= spec.count
	}
	return time.Since(start) >= spec.duration
}

// waitWindow blocks while more than spec.window deliveries of the sent
// events have not arrived yet.
func (g *loadGen) waitWindow(ctx context.Context, spec loadSpec, sent int64) {
	for sent*int64(g.t.healthy)-g.t.unique.Load() > spec.window && ctx.Err() == nil {
		time.Sleep(pollInterval)
	}
}

func (g *loadGen) sendBatches(ctx context.Context, spec loadSpec, st *sendStats) {
	var seq, reserved atomic.Int64
	var wg sync.WaitGroup
	start := st.first
	for range batchSenders {
		wg.Go(func() {
			var body []byte
			for {
				g.waitWindow(ctx, spec, reserved.Load())
				first := seq.Add(batchSize) - batchSize
				if done(ctx, spec, start, first) {
					return
				}
				n := int64(batchSize)
				if spec.count > 0 && first+n > spec.count {
					n = spec.count - first
				}
				reserved.Add(n)
				sent := time.Now().UnixNano()
				body = body[:0]
				body = append(body, `{"events":[`...)
				for i := range n {
					if i > 0 {
						body = append(body, ',')
					}
					body = g.appendEvent(body, first+i, sent, spec.keys)
				}
				body = append(body, "]}"...)
				ok, err := g.postBatch(ctx, body, int(n))
				st.accepted.Add(int64(ok))
				if err != nil {
					st.fail(n-int64(ok), err)
					reserved.Add(-(n - int64(ok)))
				}
			}
		})
	}
	wg.Wait()
}

// appendEvent appends one event request (the body of POST /events).
func (g *loadGen) appendEvent(b []byte, seq, sent int64, keys int) []byte {
	b = append(b, `{"type":"`+eventType+`","data":`...)
	b = appendEventData(b, g.run, seq, sent)
	if k := g.orderingKey(seq, keys); k != "" {
		b = append(b, `,"ordering_key":"`...)
		b = append(b, k...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// postBatch posts a batch of n events and returns how many were accepted.
func (g *loadGen) postBatch(ctx context.Context, body []byte, n int) (int, error) {
	b, err := g.post(ctx, "/events/batch", body)
	if err != nil {
		return 0, err
	}
	var resp struct {
		Results []struct {
			Error json.RawMessage `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return 0, fmt.Errorf("decode batch response: %w", err)
	}
	ok := 0
	var firstErr error
	for _, r := range resp.Results {
		if len(r.Error) == 0 || string(r.Error) == "null" {
			ok++
		} else if firstErr == nil {
			firstErr = fmt.Errorf("batch item rejected: %s", r.Error)
		}
	}
	if ok < n && firstErr == nil {
		firstErr = fmt.Errorf("batch of %d answered %d results", n, len(resp.Results))
	}
	return ok, firstErr
}

// post sends body to the tenant's path and returns the 202 response body.
func (g *loadGen) post(ctx context.Context, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.base+"/v1/tenants/"+g.tenant+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+g.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("POST %s: read response: %w", path, err)
	}
	if resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("POST %s answered %d: %s", path, resp.StatusCode, b)
	}
	return b, nil
}

// sendOne posts a single event.
func (g *loadGen) sendOne(ctx context.Context, seq, sent int64, keys int) error {
	body := g.appendEvent(make([]byte, 0, EventDataBytes+128), seq, sent, keys)
	_, err := g.post(ctx, "/events", body)
	return err
}

// sendFixed sends single events at spec.rate. Each event's send time is the
// time it was scheduled, so a load generator that falls behind shows as
// latency rather than as a lower rate.
func (g *loadGen) sendFixed(ctx context.Context, spec loadSpec, st *sendStats) {
	total := spec.count
	if total <= 0 {
		total = int64(spec.rate * spec.duration.Seconds())
	}
	type job struct{ seq, sched int64 }
	jobs := make(chan job, total)
	var wg sync.WaitGroup
	for range fixedSenders {
		wg.Go(func() {
			for j := range jobs {
				if ctx.Err() != nil {
					continue
				}
				var err error
				if spec.via == viaNATS {
					err = g.publishSync(ctx, j.seq, j.sched, spec.keys)
				} else {
					err = g.sendOne(ctx, j.seq, j.sched, spec.keys)
				}
				if err != nil {
					st.fail(1, err)
					continue
				}
				st.accepted.Add(1)
			}
		})
	}
	interval := time.Duration(float64(time.Second) / spec.rate)
	t0 := time.Now()
	st.first = t0
	for i := range total {
		at := t0.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			break
		}
		jobs <- job{seq: i, sched: at.UnixNano()}
	}
	close(jobs)
	wg.Wait()
}

func (g *loadGen) natsMsg(seq, sent int64, keys int) *nats.Msg {
	m := nats.NewMsg("hookline.publish." + g.tenant + "." + eventType)
	m.Header.Set("Nats-Msg-Id", "bench-"+strconv.FormatInt(g.run, 10)+"-"+strconv.FormatInt(seq, 10))
	if k := g.orderingKey(seq, keys); k != "" {
		m.Header.Set("Hookline-Ordering-Key", k)
	}
	m.Data = appendEventData(make([]byte, 0, EventDataBytes), g.run, seq, sent)
	return m
}

func (g *loadGen) publishSync(ctx context.Context, seq, sent int64, keys int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := g.js.PublishMsg(ctx, g.natsMsg(seq, sent, keys)); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// sendNATS publishes asynchronously, at most natsMaxAsync unacknowledged.
func (g *loadGen) sendNATS(ctx context.Context, spec loadSpec, st *sendStats) {
	futures := make(chan jetstream.PubAckFuture, natsMaxAsync)
	var wg sync.WaitGroup
	wg.Go(func() {
		for f := range futures {
			select {
			case <-f.Ok():
				st.accepted.Add(1)
			case err := <-f.Err():
				st.fail(1, err)
			case <-time.After(30 * time.Second):
				st.fail(1, fmt.Errorf("no publish ack within 30s"))
			}
		}
	})
	start := st.first
	for seq := int64(0); !done(ctx, spec, start, seq); seq++ {
		if seq%100 == 0 {
			g.waitWindow(ctx, spec, seq)
		}
		f, err := g.js.PublishMsgAsync(g.natsMsg(seq, time.Now().UnixNano(), spec.keys))
		if err != nil {
			st.fail(1, err)
			continue
		}
		futures <- f
	}
	close(futures)
	wg.Wait()
}
