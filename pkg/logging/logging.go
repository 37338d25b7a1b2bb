// Package logging builds the JSON slog logger every Hookline binary uses.
package logging

import (
	"io"
	"log/slog"

	"github.com/hookline/hookline/pkg/telemetry"
)

// New returns a JSON logger writing to out at level, tagged with service.
// Lines logged with a context inside a span carry trace_id and span_id.
func New(out io.Writer, level slog.Level, service string) *slog.Logger {
	h := slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level})
	return slog.New(telemetry.LogHandler(h)).With("service", service)
}
