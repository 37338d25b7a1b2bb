package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	"github.com/hookline/hookline/pkg/secretbox"
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
		{"malformed encryption keys", nil, map[string]string{
			config.EnvNATSURL: "nats://127.0.0.1:1", config.EnvDatabaseURL: "postgres://postgres@127.0.0.1:5432/x",
			config.EnvAdminToken: "0123456789abcdef0123", config.EnvEncryptionKeys: "k1:not-32-bytes",
		}, config.EnvEncryptionKeys, 1},
		{"rotate-secrets without keys", []string{"rotate-secrets"}, map[string]string{
			config.EnvNATSURL: "nats://127.0.0.1:1", config.EnvDatabaseURL: "postgres://postgres@127.0.0.1:5432/x",
		}, config.EnvEncryptionKeys, 1},
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

func TestRotateSecrets(t *testing.T) {
	t.Parallel()
	pool, dbURL := pgtest.NewPool(t)
	ns := natstest.Start(t)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ('acme', 'Acme')`); err != nil {
		t.Fatal(err)
	}
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	if _, err := pool.Exec(ctx, `INSERT INTO endpoints (id, tenant_id, url, secret, retry_schedule) VALUES ('ep_1', 'acme', 'http://127.0.0.1:9/', $1, '{5s}')`, secret); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"rotate-secrets"}, env(map[string]string{
		config.EnvNATSURL: ns.URL(), config.EnvDatabaseURL: dbURL, config.EnvEncryptionKeys: secretbox.NewKey("k1"),
	}), &stdout, &stderr)
	if code != 0 || !strings.Contains(stdout.String(), "1 endpoints re-encrypted") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	var stored string
	if err := pool.QueryRow(ctx, `SELECT secret FROM endpoints WHERE id = 'ep_1'`).Scan(&stored); err != nil || secretbox.KeyID(stored) != "k1" {
		t.Fatalf("stored %q, %v", stored, err)
	}
	if strings.Contains(stdout.String()+stderr.String(), strings.TrimPrefix(secret, "whsec_")) {
		t.Fatal("the secret was printed")
	}
}
