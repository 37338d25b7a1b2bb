// Package devnats runs the embedded NATS JetStream server of hookline-dev.
package devnats

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Start runs a JetStream server on 127.0.0.1:port with its file store in dir.
func Start(dir string, port int) (*server.Server, error) {
	srv, err := server.NewServer(&server.Options{
		ServerName: "hookline-dev",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		MaxPayload: 8 << 20,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("configure embedded NATS: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded NATS did not start within 30s (is the port taken?)")
	}
	return srv, nil
}
