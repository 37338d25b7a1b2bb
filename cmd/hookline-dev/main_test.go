package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/freeport"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunServesWholePipeline is `make run` in a test: a fresh data directory,
// an embedded NATS, a PostgreSQL cluster initialised from scratch with the
// machine's binaries, and an event sent as the banner's curl lines send it.
func TestRunServesWholePipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster")
	}
	dir := t.TempDir()
	// PostgreSQL runs as the postgres user when the test runs as root: it
	// must be able to reach the data directory.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil { //nolint:gosec // test directory
			t.Fatal(err)
		}
	}
	addr := freeport.Addr(t)
	args := []string{"--dir", dir, "--addr", addr,
		"--nats-port", strconv.Itoa(freeport.Port(t)), "--pg-port", strconv.Itoa(freeport.Port(t))}
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }

	received := make(chan string, 10)
	recv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = http.Serve(recv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			received <- string(b)
		}))
	}()
	defer recv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, getenv, &stdout, &stderr) }()

	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(stdout.String(), "Hookline is running") {
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no banner within 90s\nstdout: %s\nstderr: %s", stdout.String(), stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	token := ""
	for _, line := range strings.Split(stdout.String(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Admin token"); ok {
			token = strings.TrimSpace(v)
		}
	}
	if token == "" {
		t.Fatalf("banner has no admin token:\n%s", stdout.String())
	}
	post := func(path, body string, want int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("POST %s = %d: %s", path, resp.StatusCode, b)
		}
	}
	post("/v1/tenants", `{"id":"acme","name":"Acme Inc"}`, http.StatusCreated)
	post("/v1/tenants/acme/endpoints", fmt.Sprintf(`{"url":"http://%s/webhook"}`, recv.Addr()), http.StatusCreated)
	// The endpoint reaches fan-out through KV within about a second.
	time.Sleep(1500 * time.Millisecond)
	post("/v1/tenants/acme/events", `{"type":"order.created","data":{"amount":42}}`, http.StatusAccepted)
	select {
	case body := <-received:
		if !strings.Contains(body, `"data":{"amount":42}`) {
			t.Fatalf("received %s", body)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the event did not arrive\n%s", stderr.String())
	}
	// Dead-letter routes are served on the same address.
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/tenants/acme/dead-letters", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET dead-letters: %v %v", resp, err)
	}
	resp.Body.Close()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after Ctrl-C: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run did not stop within 60s")
	}
}
