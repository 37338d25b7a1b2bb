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
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is main with its inputs as arguments; it returns the exit status.
func run(ctx context.Context, _ []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return service.Main(ctx, "hookline-dispatcher", config.Need{NATS: true, Database: true}, dispatcher.Run, getenv, stdout, stderr)
}
