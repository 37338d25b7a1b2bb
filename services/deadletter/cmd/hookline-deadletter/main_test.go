package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/freeport"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
)

func TestBadConfigPrintsOneLine(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	env := map[string]string{"HOOKLINE_DATABASE_URL": "postgres://x@127.0.0.1/db", "HOOKLINE_ADMIN_TOKEN": "0123456789abcdef0"}
	code := run(t.Context(), nil, func(k string) string { return env[k] }, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit = %d, want 1", code)
	}
	if got := stderr.String(); got != "hookline-deadletter: HOOKLINE_NATS_URL: required (for example nats://127.0.0.1:4222)\n" {
		t.Errorf("stderr = %q", got)
	}
}

func TestRunServesAndStops(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	ns := natstest.Start(t)
	httpAddr, opsAddr := freeport.Addr(t), freeport.Addr(t)
	env := map[string]string{
		"HOOKLINE_NATS_URL":         ns.URL(),
		"HOOKLINE_DATABASE_URL":     dbURL,
		"HOOKLINE_ADMIN_TOKEN":      "0123456789abcdef0",
		"HOOKLINE_HTTP_ADDR":        httpAddr,
		"HOOKLINE_OPS_ADDR":         opsAddr,
		"HOOKLINE_SHUTDOWN_TIMEOUT": "5s",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &stdout, &stderr) }()

	client := &http.Client{Timeout: 2 * time.Second}
	get := func(url string, token string) int {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(15 * time.Second)
	for get("http://"+opsAddr+"/readyz", "") != 200 {
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := get("http://"+httpAddr+"/v1/tenants/acme/dead-letters", ""); got != 401 {
		t.Errorf("no token = %d, want 401", got)
	}
	if got := get("http://"+httpAddr+"/v1/tenants/acme/dead-letters", env["HOOKLINE_ADMIN_TOKEN"]); got != 404 {
		t.Errorf("unknown tenant = %d, want 404", got)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit = %d, want 0; stderr %s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("did not stop")
	}
	if !strings.Contains(stdout.String(), `"msg":"stopped"`) {
		t.Errorf("log = %s", stdout.String())
	}
}
