// Package natsconn connects a service to NATS JetStream the way every Hookline
// service needs: waiting for the server instead of exiting, reconnecting
// forever, and refusing a server too old for Hookline's topology.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/bus"
)

// disconnects counts the disconnections of every connection Connect made.
var disconnects atomic.Uint64

// Disconnects returns how many times connections made by [Connect] in this
// process were lost: a change tells that something sent before it (an
// acknowledgement, say) may not have reached the server.
func Disconnects() uint64 { return disconnects.Load() }

// Connect dials url as client name and waits until it is connected and the
// server passes [bus.CheckServer], or ctx ends.
func Connect(ctx context.Context, url, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	connected := make(chan struct{}, 1)
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.Timeout(5*time.Second),
		nats.ConnectHandler(func(*nats.Conn) { notify(connected) }),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("NATS reconnected", "server", c.ConnectedUrlRedacted())
			notify(connected)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			disconnects.Add(1)
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("NATS async error", "err", err, "subject", subject)
		}),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS: %w", err)
	}
	if !nc.IsConnected() {
		log.Warn("NATS not reachable yet, retrying", "url", nc.ConnectedUrlRedacted())
		select {
		case <-connected:
		case <-ctx.Done():
			nc.Close()
			return nil, nil, fmt.Errorf("wait for NATS: %w", ctx.Err())
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("open JetStream: %w", err)
	}
	// JetStream may answer a moment after the connection is up (a server
	// still recovering its store); wait for it the same way.
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = bus.CheckServer(cctx, nc.ConnectedServerVersion(), js)
		cancel()
		if err == nil {
			return nc, js, nil
		}
		if !isTransient(err) || ctx.Err() != nil {
			nc.Close()
			return nil, nil, err
		}
		log.Warn("JetStream not ready, retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func isTransient(err error) bool {
	return !errors.Is(err, bus.ErrServerTooOld)
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Drain drains nc (pending publishes flushed, subscriptions ended) and waits
// until it is closed or ctx ends, then closes it regardless.
func Drain(ctx context.Context, nc *nats.Conn) error {
	if err := nc.Drain(); err != nil {
		nc.Close()
		return fmt.Errorf("drain: %w", err)
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !nc.IsClosed() {
		select {
		case <-ctx.Done():
			nc.Close()
			return fmt.Errorf("drain: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
