// Command hookline-deadletter runs the dead-letter service: it stores dead
// letters, serves the /dead-letters and /replays API and replays them.
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
	"github.com/hookline/hookline/services/deadletter"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run returns the process's exit status.
func run(ctx context.Context, _ []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(getenv, config.Need{NATS: true, Database: true, AdminToken: true})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", deadletter.Name, config.FirstLine(err))
		return 1
	}
	log := logging.New(stdout, cfg.LogLevel, deadletter.Name)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()

	shutdown, err := telemetry.Start(ctx, deadletter.Name)
	if err != nil {
		fmt.Fprintf(stderr, "%s: telemetry: %v\n", deadletter.Name, err)
		return 1
	}
	defer func() {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = shutdown(c)
	}()

	if err := deadletter.Run(ctx, cfg, log); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}
