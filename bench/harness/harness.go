package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// DefaultDatabaseURL is the PostgreSQL server used when none is given.
const DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Options configure a run.
type Options struct {
	// BinDir holds hookline-ingest, -fanout, -dispatcher and -deadletter.
	BinDir string
	// DatabaseURL is any database on the PostgreSQL server; the run creates
	// its own database there and drops it afterwards.
	DatabaseURL string
	// Scale multiplies every duration (1 if 0).
	Scale float64
	// Scenarios names the scenarios to run; empty runs all of them.
	Scenarios []string
	// Rounds runs every scenario this many times, interleaved (round 1 runs
	// them all, then round 2, ...), and reports medians (1 if 0).
	Rounds int
	// Events, when positive, makes every scenario send exactly this many
	// events instead of sending for its duration.
	Events int64
	// Window bounds the deliveries outstanding at max rate (5,000 if 0): the
	// load generator waits while more than this many deliveries of the
	// events it has sent have not arrived.
	Window int64
	// CeilingDuration is how long each ceiling is measured (3s × Scale if 0).
	CeilingDuration time.Duration
	// OutDir, when set, receives <date>.md and latest.md.
	OutDir string
	// StagesDir, when set, receives the moments of each delivery of every
	// fixed-rate run, as <scenario>-run<N>.csv (see writeStages).
	StagesDir string
	// Commit names the code measured (shown in the report).
	Commit string
	// Progress receives progress lines (discarded if nil).
	Progress io.Writer
}

func (o Options) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * o.Scale)
}

// Report is a run's outcome.
type Report struct {
	Started    time.Time
	Commit     string
	Machine    string
	Load       string // the machine's load average when the run started
	Durability []string
	Ceilings   Ceilings
	Results    []Result
	// Runs holds every scenario's runs in round order, for the ratios
	// between scenarios (see [pairedRatio]).
	Runs map[string][]Result
	// Text is the formatted report: the table, the ceilings, the targets.
	Text string
	// Files lists the files written.
	Files []string
}

// Run starts NATS, a database and the pipeline, measures the ceilings and
// the scenarios, and stops everything again.
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	if o.Scale <= 0 {
		o.Scale = 1
	}
	if o.Rounds <= 0 {
		o.Rounds = 1
	}
	if o.Window <= 0 {
		o.Window = 5_000
	}
	if o.CeilingDuration <= 0 {
		o.CeilingDuration = o.scaled(3 * time.Second)
	}
	if o.DatabaseURL == "" {
		o.DatabaseURL = DefaultDatabaseURL
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	logf := func(format string, args ...any) { _, _ = fmt.Fprintf(o.Progress, format+"\n", args...) }
	scenarios, err := selectScenarios(o.Scenarios)
	if err != nil {
		return nil, err
	}
	for _, name := range services {
		if _, err := os.Stat(filepath.Join(o.BinDir, name)); err != nil {
			return nil, fmt.Errorf("binary %s not found in %s (run make build): %w", name, o.BinDir, err)
		}
	}
	rep = &Report{Started: time.Now().UTC(), Commit: o.Commit, Machine: machine(), Load: loadAverage()}

	work, err := os.MkdirTemp("", "hookline-bench-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	keepLogs := false
	defer func() {
		if keepLogs {
			logf("service logs kept in %s", work)
			return
		}
		_ = os.RemoveAll(work)
	}()
	logDir := filepath.Join(work, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}

	logf("starting embedded NATS JetStream (file store in %s)", work)
	ns, err := startNATS(filepath.Join(work, "nats"))
	if err != nil {
		return nil, err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	nc, js, err := natsConnect(ns.ClientURL())
	if err != nil {
		return nil, err
	}
	defer nc.Close()

	db, err := createDatabase(ctx, o.DatabaseURL)
	if err != nil {
		return nil, err
	}
	logf("database %s on %s", db.name, redact(o.DatabaseURL))
	defer func() {
		if derr := db.drop(); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	if err := migrate(o.BinDir, logDir, db.url); err != nil {
		return nil, err
	}
	rep.Durability = []string{natsDurability(ns), db.durability(ctx)}

	recv, err := startReceiver()
	if err != nil {
		return nil, err
	}
	defer recv.close()

	logf("ceilings: load generator → receiver, JetStream publish and consume (%s each)", o.CeilingDuration)
	rep.Ceilings.HTTP, rep.Ceilings.HTTPErrors, rep.Ceilings.HTTPCPU = httpCeiling(ctx, recv, o.CeilingDuration)
	rep.Ceilings.ExchangeCPU = exchangeCPU(ctx, recv, o.CeilingDuration)
	if err := jetStreamCeiling(ctx, js, o.CeilingDuration, &rep.Ceilings); err != nil {
		return nil, err
	}
	logf("  HTTP %.0f req/s (CPU per exchange %.1f µs; %.1f µs as the dispatcher makes it), JetStream publish %.0f msg/s, consume+ack %.0f msg/s",
		rep.Ceilings.HTTP, rep.Ceilings.HTTPCPU*1e6, rep.Ceilings.ExchangeCPU*1e6, rep.Ceilings.JSPublish, rep.Ceilings.JSConsume)

	logf("starting the pipeline from %s", o.BinDir)
	p, err := startPipeline(ctx, o.BinDir, logDir, pipelineEnv(ns.ClientURL(), db.url))
	defer func() {
		if p != nil {
			if serr := p.stop(); serr != nil {
				logf("stopping the pipeline: %v", serr)
			}
		}
	}()
	if err != nil {
		keepLogs = true
		return nil, err
	}
	e := &env{p: p, recv: recv, js: js, opts: o, log: logf, db: db}
	runs := make([][]Result, len(scenarios))
	for round := range o.Rounds {
		for i, sc := range scenarios {
			logf("scenario %s (round %d of %d): %s", sc.Name, round+1, o.Rounds, sc.Desc)
			res, err := e.runScenario(ctx, round*len(scenarios)+i, sc)
			if err != nil {
				keepLogs = true
				return nil, fmt.Errorf("scenario %s: %w", sc.Name, err)
			}
			logf("  %.0f events/s, %.0f deliveries/s, p50 %s p99 %s, %d/%d delivered, %d send errors",
				res.EventsPerSec, res.DeliveriesPerSec, fmtDur(res.P50), fmtDur(res.P99), res.Delivered, res.Expected, res.SendErrors)
			logf("  CPU ms per delivery: ingest %.3f, fanout %.3f, dispatcher %.3f, bench %.3f, postgres %.3f",
				res.CPUPer1k[binIngest], res.CPUPer1k[binFanout], res.CPUPer1k[binDispatcher], res.CPUPer1k["bench"], res.CPUPer1k["postgres"])
			if res.Stages.N > 0 {
				logf("  by stage, p50 / p99: %s", stageLine(res.Stages))
			}
			if res.SendErrorSample != "" {
				logf("  first send error: %s", res.SendErrorSample)
			}
			runs[i] = append(runs[i], res)
		}
	}
	rep.Runs = map[string][]Result{}
	for i, rs := range runs {
		rep.Results = append(rep.Results, median(rs))
		rep.Runs[scenarios[i].Name] = rs
	}
	rep.Text = format(rep)
	if o.OutDir != "" {
		files, err := write(o.OutDir, rep)
		if err != nil {
			return rep, err
		}
		rep.Files = files
	}
	return rep, nil
}

func selectScenarios(names []string) ([]Scenario, error) {
	all := Scenarios()
	if len(names) == 0 {
		return all, nil
	}
	var out []Scenario
	for _, sc := range all {
		if slices.Contains(names, sc.Name) {
			out = append(out, sc)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(all, func(s Scenario) bool { return s.Name == n }) {
			return nil, fmt.Errorf("unknown scenario %q", n)
		}
	}
	return out, nil
}

func selfPID() int { return os.Getpid() }

// loadAverage returns the 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// machine describes the computer the run measured.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb int64
				_, _ = fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
				mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
			}
		}
	}
	return fmt.Sprintf("%d CPU cores (%s)%s, %s/%s, %s", runtime.NumCPU(), model, mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}
