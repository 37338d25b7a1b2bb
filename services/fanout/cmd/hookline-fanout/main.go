// Command hookline-fanout runs Hookline's fan-out service: it matches accepted
// events against endpoints and publishes one delivery per match.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/logging"
	"github.com/hookline/hookline/pkg/telemetry"
	"github.com/hookline/hookline/services/fanout"
)

const name = "hookline-fanout"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(ctx context.Context, _ []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(getenv, config.Need{NATS: true, Database: true})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", name, config.FirstLine(err))
		return 1
	}
	log := logging.New(stdout, cfg.LogLevel, name)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()

	shutdown, err := telemetry.Start(ctx, name)
	if err != nil {
		fmt.Fprintf(stderr, "%s: telemetry: %v\n", name, err)
		return 1
	}
	defer func() {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = shutdown(c)
	}()
	if err := fanout.Run(ctx, cfg, log); err != nil {
		log.Error("fan-out failed", "err", err)
		return 1
	}
	return 0
}
