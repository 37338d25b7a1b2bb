package service

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hookline/hookline/pkg/config"
)

func TestMain_(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	ok := map[string]string{config.EnvNATSURL: "nats://127.0.0.1:1", config.EnvDatabaseURL: "postgres://u@h/db"}
	need := config.Need{NATS: true, Database: true}
	cases := []struct {
		name     string
		env      map[string]string
		run      RunFunc
		want     int
		stderrIs string
	}{
		{"bad setting", map[string]string{config.EnvDatabaseURL: "postgres://u@h/db"}, nil, 1, "svc: HOOKLINE_NATS_URL: required"},
		{"run fails", ok, func(context.Context, config.Config, *slog.Logger) error { return errors.New("boom\nmore") }, 1, "svc: boom\n"},
		{"normal stop", ok, func(context.Context, config.Config, *slog.Logger) error { return nil }, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			got := Main(context.Background(), "svc", need, tc.run, env(tc.env), &stdout, &stderr)
			if got != tc.want {
				t.Fatalf("exit status %d, want %d (stderr %q)", got, tc.want, stderr.String())
			}
			if !strings.HasPrefix(stderr.String(), tc.stderrIs) || strings.Count(stderr.String(), "\n") > 1 {
				t.Fatalf("stderr %q, want one line starting %q", stderr.String(), tc.stderrIs)
			}
		})
	}
}
