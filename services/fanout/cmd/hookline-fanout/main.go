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
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is main with its inputs as arguments; it returns the exit status.
func run(ctx context.Context, _ []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return service.Main(ctx, "hookline-fanout", config.Need{NATS: true, Database: true}, fanout.Run, getenv, stdout, stderr)
}
