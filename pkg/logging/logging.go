// Package logging builds the JSON slog logger every Hookline binary uses.
package logging

import (
	"io"
	"log/slog"
)

// New returns a JSON logger writing to out at level, tagged with service.
func New(out io.Writer, level slog.Level, service string) *slog.Logger {
	return slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level})).With("service", service)
}
