package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/pgtest"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigErrorIsOneLine(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		naming  string
		wantRun int
	}{
		{"NATS URL missing", nil, map[string]string{
			config.EnvDatabaseURL: "postgres://postgres@127.0.0.1:5432/x", config.EnvAdminToken: "0123456789abcdef0123",
		}, config.EnvNATSURL, 1},
		{"admin token missing", nil, map[string]string{
			config.EnvNATSURL: "nats://127.0.0.1:1", config.EnvDatabaseURL: "postgres://postgres@127.0.0.1:5432/x",
		}, config.EnvAdminToken, 1},
		{"nothing set", nil, map[string]string{}, config.EnvNATSURL, 1},
		{"migrate without database", []string{"migrate"}, map[string]string{}, config.EnvDatabaseURL, 1},
		{"bad shutdown timeout", nil, map[string]string{
			config.EnvNATSURL: "nats://127.0.0.1:1", config.EnvDatabaseURL: "postgres://postgres@127.0.0.1:5432/x",
			config.EnvAdminToken: "0123456789abcdef0123", config.EnvShutdownTimeout: "soon",
		}, config.EnvShutdownTimeout, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tc.args, env(tc.env), &stdout, &stderr)
			if code != tc.wantRun {
				t.Fatalf("exit %d, want %d", code, tc.wantRun)
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "hookline-ingest: "+tc.naming) {
				t.Fatalf("stderr %q, want one line naming %s", out, tc.naming)
			}
		})
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"migrate"}, env(map[string]string{config.EnvDatabaseURL: dbURL}), &stdout, &stderr)
	if code != 0 || stderr.Len() != 0 || strings.Count(stdout.String(), "\n") != 1 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}

func TestUnknownArguments(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"serve", "--now"}, env(nil), &stdout, &stderr); code != 2 || stderr.Len() == 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}
