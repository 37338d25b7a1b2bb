package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Service binary names.
const (
	binIngest     = "hookline-ingest"
	binFanout     = "hookline-fanout"
	binDispatcher = "hookline-dispatcher"
	binDeadletter = "hookline-deadletter"
)

// services lists the binaries in the order they are started and reported.
var services = []string{binIngest, binFanout, binDispatcher, binDeadletter}

// hooklineStreams are the streams that hold work in flight; the pipeline is
// quiet when they are all empty.
var hooklineStreams = []string{"HOOKLINE_INTAKE", "HOOKLINE_EVENTS", "HOOKLINE_DELIVERIES", "HOOKLINE_ATTEMPTS", "HOOKLINE_DEAD"}

// startNATS runs an embedded JetStream server with its file store in dir.
func startNATS(dir string) (*server.Server, error) {
	srv, err := server.NewServer(&server.Options{
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("new nats-server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("nats-server not ready within 10s")
	}
	return srv, nil
}

// natsDurability describes the JetStream server's durability settings.
func natsDurability(ns *server.Server) string {
	sync := "default"
	if c := ns.JetStreamConfig(); c != nil && c.SyncInterval > 0 {
		sync = c.SyncInterval.String()
	}
	return fmt.Sprintf("NATS %s JetStream: file store, 1 replica, fsync every %s in the background (the server default), not per message", server.VERSION, sync)
}

// database is a fresh database on the server at base.
type database struct {
	base string
	name string
	url  string
}

func createDatabase(ctx context.Context, base string) (*database, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", redact(base), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "hookline_bench_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	u.Path = "/" + name
	return &database{base: base, name: name, url: u.String()}, nil
}

func (d *database) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.base)
	if err != nil {
		return fmt.Errorf("connect to drop %s: %w", d.name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+d.name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", d.name, err)
	}
	return nil
}

// settle does now what PostgreSQL would do after the scenarios that ran
// before, so that none of it lands in the next measurement: VACUUM (ANALYZE)
// removes their dead rows (the outbox rows ingest deleted, the old versions
// of updated deliveries rows) and refreshes the planner's statistics, as
// autovacuum would within a minute of them (a server may run with
// autovacuum off, as CI machines do; queue-like tables then only grow, and
// every scan of them costs more as the run goes on), and CHECKPOINT writes
// their dirty buffers (it needs a superuser or the pg_checkpoint role).
func (d *database) settle(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.url)
	if err != nil {
		return fmt.Errorf("connect to vacuum and checkpoint: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "VACUUM (ANALYZE)"); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// durability describes what the measured figures promise about durability.
func (d *database) durability(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.url)
	if err != nil {
		return "PostgreSQL settings unknown"
	}
	defer conn.Close(ctx)
	get := func(name string) string {
		var v string
		if err := conn.QueryRow(ctx, "SHOW "+name).Scan(&v); err != nil {
			return "?"
		}
		return v
	}
	return fmt.Sprintf("PostgreSQL %s: fsync=%s, synchronous_commit=%s, wal_sync_method=%s, autovacuum=%s (VACUUM and CHECKPOINT before every scenario)",
		get("server_version"), get("fsync"), get("synchronous_commit"), get("wal_sync_method"), get("autovacuum"))
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// pipeline is Hookline running as separate processes.
type pipeline struct {
	binDir, logDir string
	env            []string
	procs          []*service // ingest, fanout, dispatcher, deadletter
	extra          []*service // additional dispatcher replicas
	api            *apiClient
}

const adminToken = "hookline-bench-admin-token-0123456789"

func pipelineEnv(natsURL, dbURL string) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"HOOKLINE_NATS_URL=" + natsURL,
		"HOOKLINE_DATABASE_URL=" + dbURL,
		"HOOKLINE_ADMIN_TOKEN=" + adminToken,
		"HOOKLINE_ALLOW_PRIVATE_DESTINATIONS=true",
		"HOOKLINE_LOG_LEVEL=warn",
		"HOOKLINE_SHUTDOWN_TIMEOUT=10s",
		// HOOKLINE_PPROF=true passes through, so the services can be
		// profiled on their ops addresses while the benchmark runs.
		"HOOKLINE_PPROF=" + os.Getenv("HOOKLINE_PPROF"),
	}
}

// migrate runs `hookline-ingest migrate`.
func migrate(binDir, logDir, dbURL string) error {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOOKLINE_DATABASE_URL=" + dbURL}
	s, err := startService(binDir, logDir, binIngest, env, "migrate")
	if err != nil {
		return err
	}
	select {
	case <-s.done:
	case <-time.After(2 * time.Minute):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	if s.err != nil {
		return fmt.Errorf("hookline-ingest migrate: %v: %s", s.err, s.logTail())
	}
	return nil
}

func startPipeline(ctx context.Context, binDir, logDir string, env []string) (*pipeline, error) {
	p := &pipeline{binDir: binDir, logDir: logDir, env: env}
	var ingestHTTP string
	for _, name := range services {
		httpAddr := "off"
		if name == binIngest || name == binDeadletter {
			a, err := freeAddr()
			if err != nil {
				return p, err
			}
			httpAddr = a
			if name == binIngest {
				ingestHTTP = a
			}
		}
		s, err := p.start(ctx, name, httpAddr)
		if err != nil {
			return p, err
		}
		p.procs = append(p.procs, s)
	}
	p.api = newAPIClient("http://"+ingestHTTP, adminToken)
	return p, nil
}

// start runs one service and waits for its /readyz.
func (p *pipeline) start(ctx context.Context, name, httpAddr string) (*service, error) {
	ops, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env := append(append([]string(nil), p.env...), "HOOKLINE_OPS_ADDR="+ops, "HOOKLINE_HTTP_ADDR="+httpAddr)
	s, err := startService(p.binDir, p.logDir, name, env)
	if err != nil {
		return nil, err
	}
	s.ops = ops
	if err := s.waitReady(ctx, 60*time.Second); err != nil {
		_ = s.stop(5 * time.Second)
		return nil, err
	}
	return s, nil
}

// addDispatchers starts n more dispatcher replicas.
func (p *pipeline) addDispatchers(ctx context.Context, n int) error {
	for range n {
		s, err := p.start(ctx, binDispatcher, "off")
		if err != nil {
			return err
		}
		p.extra = append(p.extra, s)
	}
	return nil
}

// removeDispatchers stops the extra replicas.
func (p *pipeline) removeDispatchers() error {
	var errs []error
	for _, s := range p.extra {
		errs = append(errs, s.stop(20*time.Second))
	}
	p.extra = nil
	return errors.Join(errs...)
}

// byService groups the running processes by binary name.
func (p *pipeline) byService() map[string][]*service {
	m := map[string][]*service{}
	for _, s := range append(append([]*service(nil), p.procs...), p.extra...) {
		m[s.name] = append(m[s.name], s)
	}
	return m
}

// checkAlive returns an error naming a service that has exited.
func (p *pipeline) checkAlive() error {
	for _, s := range append(append([]*service(nil), p.procs...), p.extra...) {
		if s.exited() {
			return fmt.Errorf("%s exited (%v): %s", s.name, s.err, s.logTail())
		}
	}
	return nil
}

func (p *pipeline) stop() error {
	errs := []error{p.removeDispatchers()}
	for i := len(p.procs) - 1; i >= 0; i-- {
		errs = append(errs, p.procs[i].stop(20*time.Second))
	}
	return errors.Join(errs...)
}

// waitQuiet waits until every Hookline stream is empty.
func waitQuiet(ctx context.Context, js jetstream.JetStream, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for {
		pending := uint64(0)
		for _, name := range hooklineStreams {
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			st, err := js.Stream(c, name)
			if err == nil {
				if info, err := st.Info(c); err == nil {
					pending += info.State.Msgs
				}
			}
			cancel()
		}
		if pending == 0 {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// apiClient speaks Hookline's HTTP API.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func newAPIClient(base, token string) *apiClient {
	return &apiClient{base: base, token: token, http: &http.Client{Timeout: 30 * time.Second}}
}

// do sends body as JSON and decodes a response of status want into out.
func (a *apiClient) do(ctx context.Context, method, path string, body any, want int, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, r)
	if err != nil {
		return fmt.Errorf("request %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s answered %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode %q: %w", method, path, b, err)
		}
	}
	return nil
}

// createTenant creates a tenant and an API key for it, returning the key.
func (a *apiClient) createTenant(ctx context.Context, id string) (string, error) {
	if err := a.do(ctx, http.MethodPost, "/v1/tenants", map[string]any{"id": id, "name": "bench " + id}, http.StatusCreated, nil); err != nil {
		return "", err
	}
	var key struct {
		Token string `json:"token"`
	}
	if err := a.do(ctx, http.MethodPost, "/v1/tenants/"+id+"/api-keys", map[string]any{"name": "bench"}, http.StatusCreated, &key); err != nil {
		return "", err
	}
	return key.Token, nil
}

// createEndpoint creates an endpoint delivering every event type to url.
func (a *apiClient) createEndpoint(ctx context.Context, tenant, url string) (string, error) {
	var ep struct {
		ID string `json:"id"`
	}
	err := a.do(ctx, http.MethodPost, "/v1/tenants/"+tenant+"/endpoints", map[string]any{"url": url, "description": "bench"}, http.StatusCreated, &ep)
	return ep.ID, err
}

// natsConnect connects the load generator to the embedded server.
func natsConnect(url string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name("hookline-bench"), nats.Timeout(10*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}
