// Command hookline-deadletter runs the dead-letter service: it stores dead
// letters, serves the /dead-letters and /replays API and replays them.
package main

import (
	"context"
	"io"
	"os"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/service"
	"github.com/hookline/hookline/services/deadletter"
)

func main() {
	service.Reexec(deadletter.Name, need, os.Getenv, os.Stderr)
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// need is what the service requires of its configuration.
var need = config.Need{NATS: true, Database: true, AdminToken: true}

// run is main with its inputs as arguments; it returns the exit status.
func run(ctx context.Context, _ []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return service.Main(ctx, deadletter.Name, need, deadletter.Run, getenv, stdout, stderr)
}
