// Package config reads the settings every Hookline service shares from the
// environment (CONTRACT 1) and validates them, so that a bad setting stops a
// service at start with one line naming the variable.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hookline/hookline/pkg/secretbox"
)

// Environment variable names.
const (
	EnvNATSURL          = "HOOKLINE_NATS_URL"
	EnvDatabaseURL      = "HOOKLINE_DATABASE_URL"
	EnvHTTPAddr         = "HOOKLINE_HTTP_ADDR"
	EnvOpsAddr          = "HOOKLINE_OPS_ADDR"
	EnvAdminToken       = "HOOKLINE_ADMIN_TOKEN"
	EnvAllowPrivate     = "HOOKLINE_ALLOW_PRIVATE_DESTINATIONS"
	EnvLogLevel         = "HOOKLINE_LOG_LEVEL"
	EnvShutdownTimeout  = "HOOKLINE_SHUTDOWN_TIMEOUT"
	EnvMaxEventBytes    = "HOOKLINE_MAX_EVENT_BYTES"
	EnvDispatchWorkers  = "HOOKLINE_DISPATCH_CONCURRENCY"
	EnvDedupeWindow     = "HOOKLINE_DEDUPE_WINDOW"
	EnvDatabaseMaxConns = "HOOKLINE_DATABASE_MAX_CONNS"
	// EnvStreamReplicas is the replica count of Hookline's JetStream
	// streams and KV bucket: 1 on a single server, 3 on a cluster.
	EnvStreamReplicas = "HOOKLINE_STREAM_REPLICAS"
	// EnvAttemptRetention is how long the attempt log keeps attempts: a Go
	// duration or whole days such as "30d".
	EnvAttemptRetention = "HOOKLINE_ATTEMPT_RETENTION"
	// EnvAutoDisableAfter disables an endpoint that has failed continuously
	// for this long (a Go duration or days such as "5d"; "0" turns it off).
	EnvAutoDisableAfter = "HOOKLINE_AUTO_DISABLE_AFTER"
	// EnvEncryptionKeys is optional: comma-separated "<key-id>:<base64 of
	// 32 bytes>" keys that encrypt endpoint signing secrets at rest, the
	// first one sealing (see pkg/secretbox).
	EnvEncryptionKeys = "HOOKLINE_ENCRYPTION_KEYS"
)

// Need says which settings a service cannot run without.
type Need struct {
	NATS       bool
	Database   bool
	AdminToken bool
}

// Config holds the shared settings. Services read the fields they use and
// ignore the rest.
type Config struct {
	NATSURL                  string
	DatabaseURL              string
	HTTPAddr                 string // public API; "" disables the listener
	OpsAddr                  string // /healthz, /readyz, /metrics; "" disables it
	AdminToken               string
	AllowPrivateDestinations bool
	LogLevel                 slog.Level
	ShutdownTimeout          time.Duration
	// MaxEventBytes bounds an event's data (HTTP body or NATS message).
	MaxEventBytes int64
	// DispatchConcurrency bounds the HTTP requests one dispatcher has in flight.
	DispatchConcurrency int
	// DedupeWindow is JetStream's Nats-Msg-Id window on Hookline's streams.
	DedupeWindow time.Duration
	// DatabaseMaxConns sizes the pgx pool (0: pgx's default).
	DatabaseMaxConns int32
	// StreamReplicas of every stream and the endpoints bucket.
	StreamReplicas int
	// AttemptRetention is how long attempt-log rows are kept; older days'
	// partitions are dropped.
	AttemptRetention time.Duration
	// AutoDisableAfter is how long an endpoint may fail without a success
	// before it is disabled; 0 turns auto-disabling off.
	AutoDisableAfter time.Duration
	// EncryptionKeys seals and opens endpoint signing secrets; nil when
	// HOOKLINE_ENCRYPTION_KEYS is unset (secrets are then stored in clear).
	EncryptionKeys *secretbox.Keyring
}

// Default values.
const (
	DefaultHTTPAddr            = ":8080"
	DefaultOpsAddr             = ":9090"
	DefaultShutdownTimeout     = 30 * time.Second
	DefaultMaxEventBytes       = 1 << 20
	DefaultDispatchConcurrency = 256
	DefaultDedupeWindow        = 2 * time.Minute
	DefaultAttemptRetention    = 30 * 24 * time.Hour
	DefaultAutoDisableAfter    = 5 * 24 * time.Hour
)

// Load reads the shared settings through getenv and validates them against
// need. The error names the variable at fault and fits on one line.
func Load(getenv func(string) string, need Need) (Config, error) {
	c := Config{
		NATSURL:     strings.TrimSpace(getenv(EnvNATSURL)),
		DatabaseURL: strings.TrimSpace(getenv(EnvDatabaseURL)),
		AdminToken:  getenv(EnvAdminToken),
	}
	var errs []error
	fail := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}

	if c.NATSURL == "" && need.NATS {
		fail(EnvNATSURL, "required (for example nats://127.0.0.1:4222)")
	} else if c.NATSURL != "" {
		if err := validateNATSURL(c.NATSURL); err != nil {
			fail(EnvNATSURL, "%v", err)
		}
	}
	if c.DatabaseURL == "" && need.Database {
		fail(EnvDatabaseURL, "required (for example postgres://postgres@127.0.0.1:5432/hookline)")
	} else if c.DatabaseURL != "" {
		if err := validateDatabaseURL(c.DatabaseURL); err != nil {
			fail(EnvDatabaseURL, "%v", err)
		}
	}
	if need.AdminToken {
		switch {
		case c.AdminToken == "":
			fail(EnvAdminToken, "required")
		case len(c.AdminToken) < 16:
			fail(EnvAdminToken, "must be at least 16 characters")
		}
	}

	c.HTTPAddr = addr(getenv, EnvHTTPAddr, DefaultHTTPAddr, fail)
	c.OpsAddr = addr(getenv, EnvOpsAddr, DefaultOpsAddr, fail)

	if v := strings.TrimSpace(getenv(EnvAllowPrivate)); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fail(EnvAllowPrivate, "invalid boolean %q (want true or false)", v)
		}
		c.AllowPrivateDestinations = b
	}

	c.LogLevel = slog.LevelInfo
	if v := strings.TrimSpace(getenv(EnvLogLevel)); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			fail(EnvLogLevel, "invalid level %q (want debug, info, warn or error)", v)
		}
	}

	c.ShutdownTimeout = duration(getenv, EnvShutdownTimeout, DefaultShutdownTimeout, fail)
	c.DedupeWindow = duration(getenv, EnvDedupeWindow, DefaultDedupeWindow, fail)
	c.MaxEventBytes = int64(positiveInt(getenv, EnvMaxEventBytes, DefaultMaxEventBytes, fail))
	c.DispatchConcurrency = positiveInt(getenv, EnvDispatchWorkers, DefaultDispatchConcurrency, fail)
	c.DatabaseMaxConns = int32(positiveInt(getenv, EnvDatabaseMaxConns, 0, fail)) //nolint:gosec // bounded by positiveInt
	c.StreamReplicas = positiveInt(getenv, EnvStreamReplicas, 1, fail)
	if c.StreamReplicas > 5 {
		fail(EnvStreamReplicas, "invalid value %d (JetStream allows 1 to 5 replicas)", c.StreamReplicas)
	}
	c.AttemptRetention = days(getenv, EnvAttemptRetention, DefaultAttemptRetention, false, fail)
	c.AutoDisableAfter = days(getenv, EnvAutoDisableAfter, DefaultAutoDisableAfter, true, fail)

	if v := getenv(EnvEncryptionKeys); strings.TrimSpace(v) != "" {
		kr, err := secretbox.Parse(v)
		if err != nil {
			fail(EnvEncryptionKeys, "%v (want comma-separated <key-id>:<base64 of 32 bytes>)", err)
		}
		c.EncryptionKeys = kr
	}

	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// FirstLine returns the first line of err's message: the one clear line a
// service prints when its configuration is bad.
func FirstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func validateNATSURL(raw string) error {
	for _, one := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil || u.Host == "" {
			return fmt.Errorf("malformed URL %q (want nats://host:port)", one)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("unsupported scheme %q in %q (want nats://host:port)", u.Scheme, one)
		}
	}
	return nil
}

func validateDatabaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("malformed URL (want postgres://user@host:port/db)")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("unsupported scheme %q (want postgres://user@host:port/db)", u.Scheme)
	}
	return nil
}

func addr(getenv func(string) string, name, def string, fail func(string, string, ...any)) string {
	v, set := lookup(getenv, name)
	if !set {
		return def
	}
	if v == "" || v == "off" {
		return ""
	}
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		fail(name, "invalid address %q (want host:port, e.g. 127.0.0.1:8080, or off)", v)
		return ""
	}
	return v
}

func duration(getenv func(string) string, name string, def time.Duration, fail func(string, string, ...any)) time.Duration {
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		fail(name, "invalid duration %q (want a positive Go duration such as 30s)", v)
		return def
	}
	return d
}

// days reads a Go duration or a whole number of days ("30d"). zeroOK lets
// "0" through, to turn a feature off.
func days(getenv func(string) string, name string, def time.Duration, zeroOK bool, fail func(string, string, ...any)) time.Duration {
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		return def
	}
	if zeroOK && v == "0" {
		return 0
	}
	var d time.Duration
	var err error
	if n, ok := strings.CutSuffix(v, "d"); ok {
		var k int
		k, err = strconv.Atoi(n)
		if k > 100*365 {
			k = -1
		}
		d = time.Duration(k) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(v)
	}
	if err != nil || d <= 0 {
		want := "a positive Go duration such as 720h, or days such as 30d"
		if zeroOK {
			want += ", or 0 for off"
		}
		fail(name, "invalid duration %q (want %s)", v, want)
		return def
	}
	return d
}

func positiveInt(getenv func(string) string, name string, def int, fail func(string, string, ...any)) int {
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > 1<<30 {
		fail(name, "invalid value %q (want a positive whole number)", v)
		return def
	}
	return n
}

// lookup tells an unset variable from one set to "": getenv cannot, so a
// variable counts as set when it is non-empty. "off" disables an address.
func lookup(getenv func(string) string, name string) (string, bool) {
	v := strings.TrimSpace(getenv(name))
	return v, v != ""
}
