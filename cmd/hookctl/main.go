// Command hookctl manages a Hookline installation through its HTTP API:
// tenants, API keys, endpoints, events, dead letters and replays.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// execute runs hookctl with args and returns its exit status. Errors go to
// stderr: an API error as its problem's detail (and the fields at fault).
func execute(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	root := newRootCmd(getenv, stdout, stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "Error:", err.Error())
		var ae *apiError
		if errors.As(err, &ae) {
			for _, f := range ae.Fields {
				fmt.Fprintf(stderr, "  %s: %s\n", f.Field, f.Message)
			}
		}
		return 1
	}
	return 0
}
