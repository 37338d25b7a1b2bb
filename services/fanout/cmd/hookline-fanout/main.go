// Command hookline-fanout runs Hookline's fan-out service: it matches accepted
// events against endpoints and publishes one delivery per match.
package main

import (
	"context"
	"io"
	"os"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/service"
	"github.com/hookline/hookline/services/fanout"
)

func main() {
	service.Reexec("hookline-fanout", need, os.Getenv, os.Stderr)
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// need is what the service requires of its configuration.
var need = config.Need{NATS: true, Database: true}

// run is main with its inputs as arguments; it returns the exit status.
func run(ctx context.Context, _ []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return service.Main(ctx, "hookline-fanout", need, fanout.Run, getenv, stdout, stderr)
}
