// Command hookline-fanout runs Hookline's fan-out service: it matches accepted
// events against endpoints and publishes one delivery per match.
package main

import (
	"context"
	"io"
	"os"
	"runtime/debug"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/service"
	"github.com/hookline/hookline/services/fanout"
)

// gcPercent is the garbage collector's target unless GOGC is set: the live
// heap is small (tens of MiB) and allocation steady, so the default (100)
// spends a tenth of the CPU collecting; 400 trades some RSS for that CPU.
const gcPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is main with its inputs as arguments; it returns the exit status.
func run(ctx context.Context, _ []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return service.Main(ctx, "hookline-fanout", config.Need{NATS: true, Database: true}, fanout.Run, getenv, stdout, stderr)
}
