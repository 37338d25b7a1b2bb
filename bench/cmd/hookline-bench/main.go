// Command hookline-bench is Hookline's end-to-end benchmark, run by `make
// bench`: it starts the four services from -bin against an embedded
// JetStream server and a fresh PostgreSQL database, drives them with its own
// load generator and webhook receiver, and prints one table, also written to
// -out/<date>.md and -out/latest.md.
//
// HOOKLINE_BENCH_SCALE (or -scale) multiplies every duration;
// HOOKLINE_BENCH_ROUNDS (or -rounds) repeats the scenarios, interleaved, and
// reports medians;
// HOOKLINE_BENCH_DATABASE_URL or TEST_DATABASE_URL names the PostgreSQL
// server (default postgres://postgres@127.0.0.1:5432/postgres).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // -pprof
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hookline/hookline/bench/harness"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "hookline-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hookline-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scale := 1.0
	if v := getenv("HOOKLINE_BENCH_SCALE"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			return fmt.Errorf("HOOKLINE_BENCH_SCALE: invalid value %q (want a positive number)", v)
		}
		scale = f
	}
	rounds := 1
	if v := getenv("HOOKLINE_BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("HOOKLINE_BENCH_ROUNDS: invalid value %q (want a positive whole number)", v)
		}
		rounds = n
	}
	dbURL := getenv("HOOKLINE_BENCH_DATABASE_URL")
	if dbURL == "" {
		dbURL = getenv("TEST_DATABASE_URL")
	}
	if dbURL == "" {
		dbURL = harness.DefaultDatabaseURL
	}
	var names []string
	for _, sc := range harness.Scenarios() {
		names = append(names, sc.Name)
	}
	binDir := fs.String("bin", "./bin", "directory holding the service binaries")
	outDir := fs.String("out", "bench/results", "directory for <date>.md and latest.md (empty: write nothing)")
	fs.Float64Var(&scale, "scale", scale, "multiply every duration (HOOKLINE_BENCH_SCALE)")
	fs.IntVar(&rounds, "rounds", rounds, "run every scenario this many times, interleaved, and report medians (HOOKLINE_BENCH_ROUNDS)")
	fs.StringVar(&dbURL, "db", dbURL, "PostgreSQL server URL; a fresh database is created there and dropped")
	scenarios := fs.String("scenarios", "", "comma-separated scenarios to run (default all: "+strings.Join(names, ",")+")")
	events := fs.Int64("events", 0, "send exactly this many events per scenario instead of running for a duration")
	window := fs.Int64("window", 0, "most deliveries outstanding at max rate (default 5000)")
	commit := fs.String("commit", "", "the code measured, shown in the report (default: git describe)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (embedded NATS, load generator, receiver) to this file")
	stagesDir := fs.String("stages", "", "write the moments of each delivery of every fixed-rate run to this directory, as <scenario>-run<N>.csv")
	pprofAddr := fs.String("pprof", "", "serve this process's /debug/pprof/ on this address (e.g. 127.0.0.1:6061), to profile one scenario")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pprofAddr != "" {
		ln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			return fmt.Errorf("pprof listener: %w", err)
		}
		srv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("create CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if *stagesDir != "" {
		if err := os.MkdirAll(*stagesDir, 0o755); err != nil {
			return fmt.Errorf("directory for -stages: %w", err)
		}
	}
	if *commit == "" {
		*commit = describe()
	}
	var list []string
	if *scenarios != "" {
		list = strings.Split(*scenarios, ",")
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	rep, err := harness.Run(ctx, harness.Options{
		BinDir:      *binDir,
		DatabaseURL: dbURL,
		Scale:       scale,
		Rounds:      rounds,
		Scenarios:   list,
		Events:      *events,
		Window:      *window,
		OutDir:      *outDir,
		StagesDir:   *stagesDir,
		Commit:      *commit,
		Progress:    stderr,
	})
	if rep != nil && rep.Text != "" {
		_, _ = fmt.Fprint(stdout, "\n"+rep.Text)
		for _, f := range rep.Files {
			_, _ = fmt.Fprintln(stderr, "wrote", f)
		}
	}
	return err
}

// describe names the checked-out commit, or "" outside a git work tree.
func describe() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
