package ingest

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/freeport"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
)

// TestRun starts the whole service, waits for readiness, uses the API, and
// checks that cancelling ctx fails readiness and returns nil.
func TestRun(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	ns := natstest.Start(t)
	httpAddr, opsAddr := freeport.Addr(t), freeport.Addr(t)
	cfg, err := config.Load(func(k string) string {
		return map[string]string{
			config.EnvNATSURL: ns.URL(), config.EnvDatabaseURL: dbURL, config.EnvAdminToken: adminToken,
			config.EnvHTTPAddr: httpAddr, config.EnvOpsAddr: opsAddr, config.EnvShutdownTimeout: "5s",
		}[k]
	}, config.Need{NATS: true, Database: true, AdminToken: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()

	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get("http://" + opsAddr + "/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", "http://"+httpAddr+"/v1/tenants", strings.NewReader(`{"id":"acme"}`))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create tenant: %d", resp.StatusCode)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if code, _ := get("http://" + httpAddr + "/v1/tenants"); code != 0 {
		t.Fatalf("API still answering (%d) after Run returned", code)
	}
}
