// Package natstest runs a real, embedded NATS JetStream server for tests.
package natstest

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is an embedded JetStream server bound to 127.0.0.1.
type Server struct {
	*server.Server
	opts *server.Options
}

// Start runs a JetStream server with file storage in a temporary directory
// and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartAt(t, t.TempDir(), -1)
}

// StartAt runs a server with its store in dir on port (-1: a random port).
// Restarting on the same dir and port recovers the streams.
func StartAt(t testing.TB, dir string, port int) *Server {
	t.Helper()
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("new nats-server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	s := &Server{Server: srv, opts: opts}
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's client URL.
func (s *Server) URL() string { return s.ClientURL() }

// Port is the port the server listens on.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}

// Stop shuts the server down and waits for it.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// Connect opens a client connection to s, closed when the test ends, and
// returns it with its JetStream context.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatalf("connect to nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream context: %v", err)
	}
	return nc, js
}
