// Command hookline-ingest runs Hookline's ingest service: the public API and
// event intake. "hookline-ingest migrate" applies the database schema and
// exits; "hookline-ingest rotate-secrets" re-encrypts every stored signing
// secret with the primary key of HOOKLINE_ENCRYPTION_KEYS and exits.
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
	"github.com/hookline/hookline/pkg/service"
	"github.com/hookline/hookline/pkg/store"
	"github.com/hookline/hookline/pkg/version"
	"github.com/hookline/hookline/services/ingest"
)

func main() {
	if len(os.Args) == 1 { // the service, not a command
		service.Reexec(name, need, os.Getenv, os.Stderr)
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

const name = ingest.ServiceName

// need is what the service (no command) requires of its configuration.
var need = config.Need{NATS: true, Database: true, AdminToken: true}

// run is main with its inputs as arguments; it returns the exit status.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fail := func(format string, a ...any) int {
		_, _ = fmt.Fprintf(stderr, name+": "+format+"\n", a...)
		return 1
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()

	switch {
	case len(args) == 0:
	case len(args) == 1 && args[0] == "migrate":
		cfg, err := config.Load(getenv, config.Need{Database: true})
		if err != nil {
			return fail("%s", config.FirstLine(err))
		}
		mctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		if err := store.Migrate(mctx, cfg.DatabaseURL); err != nil {
			return fail("%s", oneLine(err))
		}
		_, _ = fmt.Fprintln(stdout, name+": database schema is up to date")
		return 0
	case len(args) == 1 && args[0] == "rotate-secrets":
		cfg, err := config.Load(getenv, config.Need{NATS: true, Database: true})
		if err != nil {
			return fail("%s", config.FirstLine(err))
		}
		if !cfg.EncryptionKeys.Enabled() {
			return fail("%s: required by rotate-secrets (the keys, the new one first)", config.EnvEncryptionKeys)
		}
		log := logging.New(stderr, cfg.LogLevel, name)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		n, err := ingest.RotateSecrets(rctx, cfg, log)
		if err != nil {
			return fail("rotate-secrets: %s", oneLine(err))
		}
		_, _ = fmt.Fprintf(stdout, "%s: %d endpoints re-encrypted with key %q; KV bucket updated\n", name, n, cfg.EncryptionKeys.PrimaryID())
		return 0
	case len(args) == 1 && (args[0] == "version" || args[0] == "--version"):
		_, _ = fmt.Fprintln(stdout, name, version.Version)
		return 0
	default:
		_, _ = fmt.Fprintf(stderr, "%s: unknown arguments %q (usage: %s [migrate|rotate-secrets|version])\n", name, args, name)
		return 2
	}

	return service.Main(ctx, name, need, ingest.Run, getenv, stdout, stderr)
}

func oneLine(err error) string { return config.FirstLine(err) }
