package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// EventDataBytes is the size of every event's data.
const EventDataBytes = 1024

// maxEndpoints bounds the endpoints of one scenario (endpoint indexes share
// a key with sequence numbers in [tracker.arrived]).
const maxEndpoints = 256

var pad = strings.Repeat("x", EventDataBytes)

// appendEventData appends 1 KiB of JSON event data carrying run, seq and the
// send time (Unix nanoseconds).
func appendEventData(b []byte, run, seq, sent int64) []byte {
	start := len(b)
	b = append(b, `{"bench_run":`...)
	b = strconv.AppendInt(b, run, 10)
	b = append(b, `,"bench_seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"bench_sent":`...)
	b = strconv.AppendInt(b, sent, 10)
	b = append(b, `,"pad":"`...)
	n := EventDataBytes - (len(b) - start) - 2
	if n < 0 {
		n = 0
	}
	b = append(b, pad[:n]...)
	return append(b, `"}`...)
}

// findInt returns the integer following the JSON key name ("name":) in b.
// It tolerates the whitespace a re-encoder (jsonb, say) may add.
func findInt(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	j := i + len(key)
	for j < len(b) && (b[j] == ' ' || b[j] == ':') {
		j++
	}
	k := j
	if k < len(b) && b[k] == '-' {
		k++
	}
	for k < len(b) && b[k] >= '0' && b[k] <= '9' {
		k++
	}
	n, err := strconv.ParseInt(string(b[j:k]), 10, 64)
	return n, err == nil
}

// tracker counts the deliveries of one run.
type tracker struct {
	run     int64
	healthy int

	mu        sync.Mutex
	arrived   map[int64]int64 // seq*maxEndpoints + endpoint → arrival, Unix ns
	latencies []time.Duration
	first     time.Time
	last      time.Time
	perEP     []int64
	dups      int64

	unique  atomic.Int64 // unique deliveries to healthy endpoints
	failing atomic.Int64 // requests to failing endpoints
}

func newTracker(run int64, healthy int, expect int) *tracker {
	return &tracker{
		run:       run,
		healthy:   healthy,
		arrived:   make(map[int64]int64, expect),
		latencies: make([]time.Duration, 0, expect),
		perEP:     make([]int64, healthy),
	}
}

func (t *tracker) record(endpoint int, seq, sent int64, at time.Time) {
	if endpoint < 0 || endpoint >= t.healthy {
		return
	}
	k := seq*maxEndpoints + int64(endpoint)
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.arrived[k]; dup {
		t.dups++
		return
	}
	t.arrived[k] = at.UnixNano()
	t.latencies = append(t.latencies, at.Sub(time.Unix(0, sent)))
	if t.first.IsZero() {
		t.first = at
	}
	t.last = at
	t.perEP[endpoint]++
	t.unique.Add(1)
}

// arrival returns when the first delivery of seq reached endpoint.
func (t *tracker) arrival(seq int64, endpoint int) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ns, ok := t.arrived[seq*maxEndpoints+int64(endpoint)]
	return time.Unix(0, ns), ok
}

// everyEndpoint reports whether every healthy endpoint has received at least
// one delivery.
func (t *tracker) everyEndpoint() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range t.perEP {
		if n == 0 {
			return false
		}
	}
	return true
}

// snapshot returns the latencies, the last arrival and the duplicates.
func (t *tracker) snapshot() ([]time.Duration, time.Time, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]time.Duration(nil), t.latencies...), t.last, t.dups
}

// receiver is the webhook receiver: /h/<i> answers 200 (healthy endpoint i),
// /f/<i> answers 500 (failing endpoint i).
type receiver struct {
	srv   *http.Server
	ln    net.Listener
	base  string
	cur   atomic.Pointer[tracker]
	stray atomic.Int64
	bufs  sync.Pool
}

func startReceiver() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("receiver listen: %w", err)
	}
	r := &receiver{ln: ln, base: "http://" + ln.Addr().String()}
	r.bufs.New = func() any { return bytes.NewBuffer(make([]byte, 0, 4096)) }
	r.srv = &http.Server{
		Handler:           r,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *receiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

// track makes t the run the receiver counts; other runs' deliveries are
// counted as strays.
func (r *receiver) track(t *tracker) { r.cur.Store(t) }

func (r *receiver) healthyURL(i int) string { return r.base + "/h/" + strconv.Itoa(i) }
func (r *receiver) failingURL(i int) string { return r.base + "/f/" + strconv.Itoa(i) }

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	at := time.Now()
	buf := r.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	_, err := io.Copy(buf, req.Body)
	defer r.bufs.Put(buf)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	path := req.URL.Path
	failing := strings.HasPrefix(path, "/f/")
	if !failing && !strings.HasPrefix(path, "/h/") {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	ep, err := strconv.Atoi(path[3:])
	if err != nil {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	t := r.cur.Load()
	body := buf.Bytes()
	run, ok1 := findInt(body, `"bench_run"`)
	if t == nil || !ok1 || run != t.run {
		r.stray.Add(1)
	} else if failing {
		t.failing.Add(1)
	} else {
		seq, ok2 := findInt(body, `"bench_seq"`)
		sent, ok3 := findInt(body, `"bench_sent"`)
		if ok2 && ok3 {
			t.record(ep, seq, sent, at)
		}
	}
	if failing {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
}
