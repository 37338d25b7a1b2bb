// Command hookline-dispatcher runs Hookline's dispatcher: it signs and POSTs
// deliveries to endpoints, retries them and dead-letters what fails.
package main

import (
	"context"
	"io"
	"os"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/service"
	"github.com/hookline/hookline/services/dispatcher"
)

func main() {
	service.Reexec("hookline-dispatcher", need, os.Getenv, os.Stderr)
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// need is what the service requires of its configuration.
var need = config.Need{NATS: true, Database: true}

// run is main with its inputs as arguments; it returns the exit status.
func run(ctx context.Context, _ []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return service.Main(ctx, "hookline-dispatcher", need, dispatcher.Run, getenv, stdout, stderr)
}
