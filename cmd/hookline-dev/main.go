// Command hookline-dev runs the whole Hookline pipeline in one process for
// development and trials: an embedded NATS JetStream server, a local
// PostgreSQL (or HOOKLINE_DATABASE_URL), the four services, and the whole
// /v1 API on one address. `hookline-dev receive` is a webhook receiver to try
// it with.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/hookline/hookline/cmd/hookline-dev/internal/devnats"
	"github.com/hookline/hookline/cmd/hookline-dev/internal/receiver"
	"github.com/hookline/hookline/cmd/hookline-dev/internal/router"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/localpg"
	"github.com/hookline/hookline/pkg/logging"
	"github.com/hookline/hookline/pkg/ops"
	"github.com/hookline/hookline/pkg/store"
	"github.com/hookline/hookline/pkg/telemetry"
	"github.com/hookline/hookline/services/deadletter"
	"github.com/hookline/hookline/services/dispatcher"
	"github.com/hookline/hookline/services/fanout"
	"github.com/hookline/hookline/services/ingest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "hookline-dev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "receive" {
		return runReceiver(ctx, args[1:], stdout)
	}
	fs := flag.NewFlagSet("hookline-dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", envOr(getenv, "HOOKLINE_DEV_DIR", ".hookline"), "data directory (NATS store, PostgreSQL cluster, admin token)")
	addr := fs.String("addr", envOr(getenv, config.EnvHTTPAddr, "127.0.0.1:8080"), "address of the public API")
	natsPort := fs.Int("nats-port", envInt(getenv, "HOOKLINE_DEV_NATS_PORT", 4333), "port of the embedded NATS server")
	pgPort := fs.Int("pg-port", envInt(getenv, "HOOKLINE_DEV_PG_PORT", 55432), "port of the local PostgreSQL")
	if err := fs.Parse(args); err != nil {
		return err
	}

	level := slog.LevelWarn
	if v := getenv(config.EnvLogLevel); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("%s: invalid level %q (want debug, info, warn or error)", config.EnvLogLevel, v)
		}
	}
	log := logging.New(stderr, level, "hookline-dev")
	if err := os.MkdirAll(*dir, 0o755); err != nil { //nolint:gosec // the data directory holds subdirectories with their own modes
		return fmt.Errorf("create data directory: %w", err)
	}

	adminToken, err := adminToken(getenv, *dir)
	if err != nil {
		return err
	}

	natsURL := getenv(config.EnvNATSURL)
	if natsURL == "" {
		srv, err := devnats.Start(filepath.Join(*dir, "nats"), *natsPort)
		if err != nil {
			return err
		}
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		natsURL = srv.ClientURL()
	}

	dbURL := getenv(config.EnvDatabaseURL)
	if dbURL == "" {
		pg, err := localpg.New(filepath.Join(*dir, "pg"), *pgPort, log)
		if err != nil {
			return err
		}
		if err := pg.Start(ctx, "hookline"); err != nil {
			return err
		}
		defer func() {
			if err := pg.Stop(context.WithoutCancel(ctx)); err != nil {
				log.Error("stop local PostgreSQL", "err", err)
			}
		}()
		dbURL = pg.URL("hookline")
	}
	if err := store.Migrate(ctx, dbURL); err != nil {
		return err
	}

	env := map[string]string{
		config.EnvNATSURL:      natsURL,
		config.EnvDatabaseURL:  dbURL,
		config.EnvAdminToken:   adminToken,
		config.EnvHTTPAddr:     "off",
		config.EnvOpsAddr:      "off",
		config.EnvAllowPrivate: envOr(getenv, config.EnvAllowPrivate, "true"),
	}
	cfg, err := config.Load(func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return getenv(k)
	}, config.Need{NATS: true, Database: true, AdminToken: true})
	if err != nil {
		return errors.New(config.FirstLine(err))
	}
	cfg.LogLevel = level

	shutdownTelemetry, err := telemetry.Start(ctx, "hookline-dev")
	if err != nil {
		return err
	}
	defer func() { _ = shutdownTelemetry(context.WithoutCancel(ctx)) }()

	addrs, err := freeAddrs(2)
	if err != nil {
		return err
	}
	ingestAddr, deadAddr := addrs[0], addrs[1]
	public, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}

	g, gctx := errgroup.WithContext(ctx)
	service := func(name string, c config.Config, runFn func(context.Context, config.Config, *slog.Logger) error) {
		g.Go(func() error {
			if err := runFn(gctx, c, logging.New(stderr, level, name)); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	withHTTP := func(a string) config.Config { c := cfg; c.HTTPAddr = a; return c }
	service("hookline-ingest", withHTTP(ingestAddr), ingest.Run)
	service("hookline-fanout", cfg, fanout.Run)
	service("hookline-dispatcher", cfg, dispatcher.Run)
	service("hookline-deadletter", withHTTP(deadAddr), deadletter.Run)

	mux := http.NewServeMux()
	mux.Handle("/v1/", router.New(&url.URL{Scheme: "http", Host: ingestAddr}, &url.URL{Scheme: "http", Host: deadAddr}))
	health := ops.NewHealth()
	mux.Handle("/", ops.Handler(health, nil))
	g.Go(func() error { return ops.ServeListener(gctx, public, mux, log) })
	g.Go(func() error {
		base := "http://" + public.Addr().String()
		if err := waitForAPI(gctx, base, adminToken); err != nil {
			return nil //nolint:nilerr // stopping before the API came up is not an error of its own
		}
		printBanner(stdout, base, adminToken, natsURL, dbURL, *dir)
		return nil
	})
	err = g.Wait()
	fmt.Fprintln(stdout, "hookline-dev stopped")
	return err
}

func runReceiver(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("hookline-dev receive", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:9000", "address to listen on")
	secret := fs.String("secret", "", "the endpoint's whsec_ secret, to verify signatures")
	status := fs.Int("status", http.StatusOK, "status code to answer with")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return receiver.Run(ctx, *addr, *secret, *status, stdout)
}

// adminToken returns HOOKLINE_ADMIN_TOKEN, or the token kept in dir (made on
// first run), so a second `make run` keeps the same token.
func adminToken(getenv func(string) string, dir string) (string, error) {
	if t := getenv(config.EnvAdminToken); t != "" {
		return t, nil
	}
	path := filepath.Join(dir, "admin-token")
	if b, err := os.ReadFile(path); err == nil { //nolint:gosec // our own data directory
		return strings.TrimSpace(string(b)), nil
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	t := "hla_" + hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("store admin token: %w", err)
	}
	return t, nil
}

func waitForAPI(ctx context.Context, base, token string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/tenants", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func printBanner(w io.Writer, base, token, natsURL, dbURL, dir string) {
	u, _ := url.Parse(dbURL)
	pg := dbURL
	if u != nil {
		pg = u.Redacted()
	}
	fmt.Fprintf(w, `
Hookline is running.
  API          %[1]s/v1
  Admin token  %[2]s
  NATS         %[3]s   (publish events to hookline.publish.<tenant>.<type>)
  PostgreSQL   %[4]s
  Data         %[5]s

Try it from another terminal:
  ./bin/hookline-dev receive --addr 127.0.0.1:9000        # a receiver that prints what arrives
  export HOOKLINE_TOKEN=%[2]s
  curl -s -X POST %[1]s/v1/tenants -H "Authorization: Bearer $HOOKLINE_TOKEN" -d '{"id":"acme","name":"Acme Inc"}'
  curl -s -X POST %[1]s/v1/tenants/acme/endpoints -H "Authorization: Bearer $HOOKLINE_TOKEN" -d '{"url":"http://127.0.0.1:9000/webhook"}'
  curl -s -X POST %[1]s/v1/tenants/acme/events -H "Authorization: Bearer $HOOKLINE_TOKEN" -d '{"type":"order.created","data":{"amount":42}}'

Ctrl-C stops everything; the next run reuses the data.
`, base, token, natsURL, pg, dir)
}

// freeAddrs returns n free 127.0.0.1 addresses, all different: their
// probes are open at once (one probe closed before the next may get the
// same port back).
func freeAddrs(n int) ([]string, error) {
	addrs := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer func() { _ = ln.Close() }()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(getenv func(string) string, name string, def int) int {
	if n, err := strconv.Atoi(getenv(name)); err == nil {
		return n
	}
	return def
}
