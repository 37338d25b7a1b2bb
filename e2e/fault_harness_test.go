package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hookline/hookline/pkg/freeport"
	"github.com/hookline/hookline/pkg/localpg"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	"github.com/hookline/hookline/pkg/store"
)

// faultEnv is a pipeline of separate processes whose NATS server,
// PostgreSQL and processes a test can kill, stop and start.
type faultEnv struct {
	t        *testing.T
	natsDir  string
	natsPort int
	nats     *natstest.Server
	dbURL    string
	pg       *localpg.Cluster // nil unless the test has a private cluster
	common   map[string]string
	mu       sync.Mutex
	procs    map[string]*proc // by instance name, e.g. "hookline-dispatcher#2"
	ingest   api
	dead     api
}

type faultOptions struct {
	// privatePG runs PostgreSQL in a cluster of the test's own, which it
	// may stop (the shared server on 5432 is never stopped).
	privatePG bool
	// dispatchers is how many dispatcher replicas run (default 1).
	dispatchers int
	env         map[string]string
}

const faultAdminToken = "e2e-admin-token-0123456789"

func newFaultEnv(t *testing.T, o faultOptions) *faultEnv {
	t.Helper()
	f := &faultEnv{t: t, natsDir: t.TempDir(), procs: map[string]*proc{}}
	f.nats = natstest.StartAt(t, f.natsDir, -1)
	f.natsPort = f.nats.Port()
	if o.privatePG {
		f.startPrivatePG()
	} else {
		f.dbURL = pgtest.NewDatabase(t)
	}
	f.common = map[string]string{
		"HOOKLINE_NATS_URL":                   f.nats.URL(),
		"HOOKLINE_DATABASE_URL":               f.dbURL,
		"HOOKLINE_ADMIN_TOKEN":                faultAdminToken,
		"HOOKLINE_ALLOW_PRIVATE_DESTINATIONS": "true",
		"HOOKLINE_LOG_LEVEL":                  "info",
		"HOOKLINE_SHUTDOWN_TIMEOUT":           "10s",
	}
	for k, v := range o.env {
		f.common[k] = v
	}
	ingestHTTP, deadHTTP := freeport.Addr(t), freeport.Addr(t)
	f.start("hookline-ingest", "hookline-ingest", ingestHTTP)
	f.start("hookline-fanout", "hookline-fanout", "")
	for i := range max(o.dispatchers, 1) {
		f.start(dispatcherName(i), "hookline-dispatcher", "")
	}
	f.start("hookline-deadletter", "hookline-deadletter", deadHTTP)
	f.ingest = api{base: "http://" + ingestHTTP, token: faultAdminToken}
	f.dead = api{base: "http://" + deadHTTP, token: faultAdminToken}
	return f
}

func dispatcherName(i int) string { return "hookline-dispatcher#" + strconv.Itoa(i+1) }

// startPrivatePG initialises and starts a PostgreSQL cluster under a
// temporary directory the postgres user can reach, and migrates it.
func (f *faultEnv) startPrivatePG() {
	t := f.t
	dir := filepath.Join(t.TempDir(), "pg")
	// t.TempDir's parents are 0700; the server runs as user postgres.
	for d := filepath.Dir(dir); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil { //nolint:gosec // the postgres user must traverse it
			t.Fatal(err)
		}
	}
	// freeport: no other server of this process gets the port while
	// PostgreSQL initialises its directory, before it listens.
	c, err := localpg.New(dir, freeport.Port(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("private PostgreSQL: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Start(ctx, "hookline"); err != nil {
		t.Fatalf("private PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Logf("stop private PostgreSQL: %v", err)
		}
	})
	f.pg, f.dbURL = c, c.URL("hookline")
	if err := store.Migrate(ctx, f.dbURL); err != nil {
		t.Fatalf("migrate private PostgreSQL: %v", err)
	}
}

// start runs binary as instance name and waits until it is ready.
func (f *faultEnv) start(name, binary, httpAddr string) *proc {
	f.t.Helper()
	ops := freeport.Addr(f.t)
	env := map[string]string{"HOOKLINE_OPS_ADDR": ops, "HOOKLINE_HTTP_ADDR": httpAddr}
	if httpAddr == "" {
		env["HOOKLINE_HTTP_ADDR"] = "off"
	}
	for k, v := range f.common {
		env[k] = v
	}
	p := start(f.t, binary, env)
	p.name = name
	if dir := os.Getenv("HOOKLINE_E2E_LOG_DIR"); dir != "" {
		// The full log of a failed test's process, for debugging.
		f.t.Cleanup(func() {
			if f.t.Failed() {
				file := filepath.Join(dir, fmt.Sprintf("%s-%s-%d.log", f.t.Name(), name, p.cmd.Process.Pid))
				_ = os.WriteFile(file, []byte(p.log.String()), 0o600)
			}
		})
	}
	waitReady(f.t, p, ops)
	f.mu.Lock()
	f.procs[name] = p
	f.mu.Unlock()
	return p
}

func (f *faultEnv) proc(name string) *proc {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.procs[name]
}

// kill9 kills instance name with SIGKILL and waits for it to be gone.
func (f *faultEnv) kill9(name string) {
	f.t.Helper()
	p := f.proc(name)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		f.t.Fatalf("kill -9 %s: %v", name, err)
	}
	<-p.done
}

// restartNATS stops the NATS server, waits down, and starts it again on the
// same store directory and port.
func (f *faultEnv) restartNATS(down time.Duration) {
	f.t.Helper()
	f.nats.Stop()
	time.Sleep(down)
	f.nats = natstest.StartAt(f.t, f.natsDir, f.natsPort)
}

func (f *faultEnv) stopPG() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.pg.Stop(ctx); err != nil {
		f.t.Fatalf("stop PostgreSQL: %v", err)
	}
}

func (f *faultEnv) startPG() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.pg.Start(ctx, "hookline"); err != nil {
		f.t.Fatalf("start PostgreSQL again: %v", err)
	}
}

// sink is a webhook receiver counting successful deliveries per webhook-id.
// Its mode can change while it runs: answer 200 (after delay), fail with
// 500, or hang until the client gives up.
type sink struct {
	URL    string
	mode   atomic.Int32
	delay  atomic.Int64 // nanoseconds before answering 200
	failed atomic.Int64
	hung   atomic.Int64
	mu     sync.Mutex
	got    map[string]int
	times  map[string][]time.Time // every request per webhook-id, when recordTimes
	total  int
	last   time.Time
	record bool
}

const (
	sinkOK int32 = iota
	sinkFail
	sinkHang
)

func newSink(t *testing.T, recordTimes bool) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{URL: "http://" + ln.Addr().String() + "/hook", got: map[string]int{}, times: map[string][]time.Time{}, record: recordTimes}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: s}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	id := r.Header.Get("webhook-id")
	if s.record {
		s.mu.Lock()
		s.times[id] = append(s.times[id], time.Now())
		s.mu.Unlock()
	}
	switch s.mode.Load() {
	case sinkFail:
		s.failed.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
		return
	case sinkHang:
		s.hung.Add(1)
		<-r.Context().Done()
		return
	}
	if d := time.Duration(s.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
	}
	// A request whose client is gone (killed dispatcher) was not delivered:
	// counting it could hide a loss.
	if r.Context().Err() != nil {
		return
	}
	s.mu.Lock()
	s.got[id]++
	s.total++
	s.last = time.Now()
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

func (s *sink) received(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[id]
}

func (s *sink) requestTimes(id string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times[id]...)
}

// countOf counts the receipts of ids.
func (s *sink) countOf(ids []string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, id := range ids {
		if s.got[id] > 0 {
			n++
		}
	}
	return n
}

// produceStats counts what producing saw from ingest.
type produceStats struct {
	status5xx map[int]int // status of whole answers or batch items
	retries   int
}

// produce posts events of type typ with the given ids to tenant in batches
// of batch, retrying what ingest could not accept (503, connection errors)
// with the same ids, until all are accepted or ctx ends. pause spaces the
// batches. It returns the accepted ids in order.
func (f *faultEnv) produce(ctx context.Context, tenant, typ string, ids []string, batch int, pause time.Duration) ([]string, produceStats) {
	st := produceStats{status5xx: map[int]int{}}
	var accepted []string
	client := &http.Client{Timeout: 15 * time.Second}
	for start := 0; start < len(ids) && ctx.Err() == nil; start += batch {
		pending := ids[start:min(start+batch, len(ids))]
		for len(pending) > 0 && ctx.Err() == nil {
			ok, retry, status, err := postBatch(ctx, client, f.ingest, tenant, typ, pending)
			accepted = append(accepted, ok...)
			if status >= 500 {
				st.status5xx[status]++
			}
			if err != nil {
				f.t.Errorf("produce: %v", err)
				return accepted, st
			}
			for _, s := range retry {
				st.status5xx[s.status]++
			}
			if len(retry) > 0 || status != http.StatusAccepted {
				st.retries++
				time.Sleep(200 * time.Millisecond)
			}
			if status == http.StatusAccepted {
				pending = pending[:0]
				for _, r := range retry {
					pending = append(pending, r.id)
				}
			}
		}
		if pause > 0 {
			time.Sleep(pause)
		}
	}
	return accepted, st
}

type itemRetry struct {
	id     string
	status int
}

// postBatch posts one batch. It returns the accepted ids, the items to send
// again (answered 503), and the whole answer's status (0 when the request
// failed: to be sent again). err is a failure the test cannot ride out.
func postBatch(ctx context.Context, client *http.Client, a api, tenant, typ string, ids []string) (accepted []string, retry []itemRetry, status int, err error) {
	events := make([]map[string]any, len(ids))
	for i, id := range ids {
		events[i] = map[string]any{"id": id, "type": typ, "data": map[string]any{"n": i}}
	}
	b, _ := json.Marshal(map[string]any{"events": events})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/v1/tenants/"+tenant+"/events/batch", bytes.NewReader(b))
	if err != nil {
		return nil, nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, rerr := client.Do(req)
	if rerr != nil {
		return nil, nil, 0, nil // ingest restarting or slow: send again
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable:
		if resp.Header.Get("Retry-After") == "" {
			return nil, nil, resp.StatusCode, fmt.Errorf("503 without Retry-After: %s", body)
		}
		return nil, nil, resp.StatusCode, nil
	case resp.StatusCode != http.StatusAccepted:
		return nil, nil, resp.StatusCode, fmt.Errorf("batch answered %d: %s", resp.StatusCode, body)
	}
	var out struct {
		Results []struct {
			ID    string `json:"id"`
			Error *struct {
				Status int    `json:"status"`
				Detail string `json:"detail"`
			} `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &out); err != nil || len(out.Results) != len(ids) {
		return nil, nil, resp.StatusCode, fmt.Errorf("batch answer %s: %v", body, err)
	}
	for i, r := range out.Results {
		switch {
		case r.Error == nil && r.ID == ids[i]:
			accepted = append(accepted, ids[i])
		case r.Error != nil && r.Error.Status == http.StatusServiceUnavailable:
			retry = append(retry, itemRetry{ids[i], r.Error.Status})
		default:
			return accepted, retry, resp.StatusCode, fmt.Errorf("batch item %s: %+v", ids[i], r)
		}
	}
	return accepted, retry, resp.StatusCode, nil
}

// eventIDs returns n event ids with prefix.
func eventIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return ids
}

// target is an endpoint and the sink behind it.
type target struct {
	id   string
	sink *sink
}

// deadSet reads the dead letters as "event_id endpoint_id" keys.
func (f *faultEnv) deadSet(ctx context.Context) (map[string]string, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, f.dbURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(cctx, `SELECT event_id, endpoint_id, reason FROM dead_letters`)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for rows.Next() {
		var ev, ep, reason string
		if err := rows.Scan(&ev, &ep, &reason); err != nil {
			return nil, err
		}
		out[ev+" "+ep] = reason
	}
	return out, rows.Err()
}

// attemptLogCounts counts tenant's deliveries with a successful attempt in
// the attempt log, and those whose status is succeeded.
func (f *faultEnv) attemptLogCounts(ctx context.Context, tenant string) (logged, succeeded int, err error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, f.dbURL)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(cctx, `
		SELECT (SELECT count(DISTINCT delivery_id) FROM attempts WHERE tenant_id = $1 AND succeeded),
		       (SELECT count(*) FROM deliveries WHERE tenant_id = $1 AND status = 'succeeded')`, tenant).Scan(&logged, &succeeded)
	return logged, succeeded, err
}

// lossReport is the outcome of [faultEnv.waitNoLoss].
type lossReport struct {
	delivered, dead, duplicates, duplicated int
	took                                    time.Duration
}

// waitNoLoss waits until every accepted event reached every target or is a
// dead letter for it, and fails the test listing what is missing if that
// does not happen within. Duplicates are reported, not failed.
func (f *faultEnv) waitNoLoss(accepted []string, targets []target, within time.Duration) lossReport {
	f.t.Helper()
	began := time.Now()
	deadline := began.Add(within)
	var missing []string
	var rep lossReport
	for {
		dead, err := f.deadSet(f.t.Context())
		if err == nil {
			missing = missing[:0]
			rep = lossReport{}
			for _, tg := range targets {
				for _, id := range accepted {
					n := tg.sink.received(id)
					switch {
					case n > 0:
						rep.delivered++
						if n > 1 {
							rep.duplicated++
							rep.duplicates += n - 1
						}
					case dead[id+" "+tg.id] != "":
						rep.dead++
					default:
						missing = append(missing, id+"→"+tg.id)
					}
				}
			}
			if len(missing) == 0 {
				rep.took = time.Since(began)
				return rep
			}
		}
		if time.Now().After(deadline) {
			sort.Strings(missing)
			f.t.Fatalf("LOST: %d of %d deliveries neither delivered nor dead-lettered after %s (db err %v); first: %v",
				len(missing), len(accepted)*len(targets), within, err, missing[:min(10, len(missing))])
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// createTargets creates tenant and n endpoints, each with its own sink.
func (f *faultEnv) createTargets(t *testing.T, tenant string, n int, body map[string]any) []target {
	t.Helper()
	f.ingest.must(t, "POST", "/v1/tenants", map[string]any{"id": tenant, "name": tenant}, http.StatusCreated, nil)
	var out []target
	for range n {
		s := newSink(t, false)
		out = append(out, target{id: f.createEndpoint(t, tenant, s.URL, body), sink: s})
	}
	return out
}

func (f *faultEnv) createEndpoint(t *testing.T, tenant, url string, body map[string]any) string {
	t.Helper()
	b := map[string]any{"url": url}
	for k, v := range body {
		b[k] = v
	}
	var created struct {
		ID string `json:"id"`
	}
	f.ingest.must(t, "POST", "/v1/tenants/"+tenant+"/endpoints", b, http.StatusCreated, &created)
	return created.ID
}

// settle waits long enough for endpoint configuration to reach every
// fan-out and dispatcher replica (CONTRACT: within 2 seconds).
func settle() { time.Sleep(2 * time.Second) }
