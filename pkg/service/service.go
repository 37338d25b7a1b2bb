// Package service runs a Hookline service binary the same way for every
// service: read the configuration (a bad setting is one line on stderr and
// exit status 1), log JSON to stdout, stop on SIGTERM or Ctrl-C, start and
// flush telemetry, and run the service until it stops.
package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/logging"
	"github.com/hookline/hookline/pkg/sysmon"
	"github.com/hookline/hookline/pkg/telemetry"
	"github.com/hookline/hookline/pkg/version"
)

// RunFunc runs a service until ctx ends and returns nil on a normal stop.
type RunFunc func(ctx context.Context, cfg config.Config, log *slog.Logger) error

// GCPercent is the garbage collector's target of every service unless GOGC
// is set: their live heaps are small (tens of MiB) and allocation steady, so
// the default (100) spends about a tenth of the CPU collecting at full load;
// 400 trades some RSS for that CPU.
const GCPercent = 400

// Main runs service name with the settings need names as required and
// returns the process's exit status. It sets the garbage collector's target
// to [GCPercent] unless GOGC is set.
func Main(ctx context.Context, name string, need config.Need, run RunFunc, getenv func(string) string, stdout, stderr io.Writer) int {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
	cfg, err := config.Load(getenv, need)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "%s: %s\n", name, config.FirstLine(err))
		return 1
	}
	log := logging.New(stdout, cfg.LogLevel, name)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()

	shutdown, err := telemetry.StartWith(ctx, name, getenv)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "%s: %s\n", name, config.FirstLine(err))
		return 1
	}
	defer func() { // flush even though ctx has ended
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = shutdown(c)
	}()

	log.Info("starting", "version", version.Version)
	if err := run(ctx, cfg, log); err != nil {
		log.Error("stopped with an error", "err", err)
		_, _ = fmt.Fprintf(stderr, "%s: %s\n", name, config.FirstLine(err))
		return 1
	}
	log.Info("stopped")
	return 0
}

// Reexec is the first thing a service's main does, before [Main]: if the
// configuration Main would load is valid, it replaces the process with
// itself with the Go runtime setting of package sysmon (less CPU and
// latency under moderate load). A bad configuration is left to Main, which
// reports it in one line: the setting may print a line of its own on
// stderr (see package sysmon). It returns if it did not replace the process.
func Reexec(name string, need config.Need, getenv func(string) string, stderr io.Writer) {
	if _, err := config.Load(getenv, need); err != nil {
		return
	}
	if err := sysmon.Reexec(); err != nil {
		_, _ = fmt.Fprintf(stderr, "%s: %v; running on\n", name, err)
	}
}
