package config

import (
	"strings"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/secretbox"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{EnvNATSURL: "nats://127.0.0.1:4333", EnvDatabaseURL: "postgres://u@h/db"}), Need{NATS: true, Database: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != DefaultHTTPAddr || c.OpsAddr != DefaultOpsAddr || c.ShutdownTimeout != 30*time.Second ||
		c.MaxEventBytes != 1<<20 || c.AllowPrivateDestinations || c.EncryptionKeys != nil {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

func TestLoadErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	ok := map[string]string{EnvNATSURL: "nats://127.0.0.1:4333", EnvDatabaseURL: "postgres://u@h/db", EnvAdminToken: "0123456789abcdef"}
	need := Need{NATS: true, Database: true, AdminToken: true}
	cases := []struct {
		name, key, value, want string
	}{
		{"missing nats", EnvNATSURL, "", EnvNATSURL},
		{"bad nats scheme", EnvNATSURL, "http://x:1", EnvNATSURL},
		{"missing database", EnvDatabaseURL, "", EnvDatabaseURL},
		{"bad database scheme", EnvDatabaseURL, "mysql://x", EnvDatabaseURL},
		{"missing admin token", EnvAdminToken, "", EnvAdminToken},
		{"short admin token", EnvAdminToken, "short", EnvAdminToken},
		{"bad bool", EnvAllowPrivate, "yes please", EnvAllowPrivate},
		{"bad level", EnvLogLevel, "loud", EnvLogLevel},
		{"bad duration", EnvShutdownTimeout, "soon", EnvShutdownTimeout},
		{"negative duration", EnvShutdownTimeout, "-1s", EnvShutdownTimeout},
		{"bad addr", EnvHTTPAddr, "8080", EnvHTTPAddr},
		{"bad int", EnvMaxEventBytes, "1MB", EnvMaxEventBytes},
		{"too many stream replicas", EnvStreamReplicas, "7", EnvStreamReplicas},
		{"zero stream replicas", EnvStreamReplicas, "0", EnvStreamReplicas},
		{"bad retention", EnvAttemptRetention, "a month", EnvAttemptRetention},
		{"zero retention", EnvAttemptRetention, "0", EnvAttemptRetention},
		{"bad auto-disable", EnvAutoDisableAfter, "-5d", EnvAutoDisableAfter},
		{"bad encryption key", EnvEncryptionKeys, "k1:tooshort", EnvEncryptionKeys},
		{"encryption key without id", EnvEncryptionKeys, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", EnvEncryptionKeys},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := map[string]string{}
			for k, v := range ok {
				m[k] = v
			}
			m[tc.key] = tc.value
			_, err := Load(env(m), need)
			if err == nil {
				t.Fatal("want an error")
			}
			line := FirstLine(err)
			if !strings.HasPrefix(line, tc.want+":") {
				t.Fatalf("first line %q does not name %s", line, tc.want)
			}
		})
	}
}

func TestOffDisablesAddress(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{EnvOpsAddr: "off", EnvHTTPAddr: "127.0.0.1:0"}), Need{})
	if err != nil {
		t.Fatal(err)
	}
	if c.OpsAddr != "" || c.HTTPAddr != "127.0.0.1:0" {
		t.Fatalf("got ops %q http %q", c.OpsAddr, c.HTTPAddr)
	}
}

func TestEncryptionKeys(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{EnvEncryptionKeys: secretbox.NewKey("k2") + "," + secretbox.NewKey("k1")}), Need{})
	if err != nil {
		t.Fatal(err)
	}
	if !c.EncryptionKeys.Enabled() || c.EncryptionKeys.PrimaryID() != "k2" {
		t.Fatalf("keyring %+v", c.EncryptionKeys)
	}
}

func TestLoadDays(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, retention, autoDisable string
		wantRetention, wantDisable   time.Duration
	}{
		{"defaults", "", "", 30 * 24 * time.Hour, 5 * 24 * time.Hour},
		{"days", "7d", "2d", 7 * 24 * time.Hour, 2 * 24 * time.Hour},
		{"go durations", "36h", "90s", 36 * time.Hour, 90 * time.Second},
		{"auto-disable off", "1d", "0", 24 * time.Hour, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(env(map[string]string{EnvNATSURL: "nats://127.0.0.1:4333", EnvDatabaseURL: "postgres://u@h/db",
				EnvAttemptRetention: tc.retention, EnvAutoDisableAfter: tc.autoDisable}), Need{})
			if err != nil {
				t.Fatal(err)
			}
			if c.AttemptRetention != tc.wantRetention || c.AutoDisableAfter != tc.wantDisable {
				t.Fatalf("retention %s, auto-disable %s; want %s, %s", c.AttemptRetention, c.AutoDisableAfter, tc.wantRetention, tc.wantDisable)
			}
		})
	}
}
