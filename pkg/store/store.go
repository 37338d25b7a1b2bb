// Package store opens Hookline's PostgreSQL database and migrates its schema.
// The schema is one set of embedded SQL files shared by every service; each
// service keeps its own queries next to its code.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune the pool.
type Options struct {
	// MaxConns caps the pool; 0 keeps pgx's default (max(4, CPUs)).
	MaxConns int32
	// Name is reported to PostgreSQL as application_name.
	Name string
	// Tracer traces the pool's statements. Nil means an otelpgx tracer on
	// the global OpenTelemetry tracer provider: statements run inside a
	// span get a child span with the SQL text (never its parameters).
	Tracer pgx.QueryTracer
	// NoTracing turns statement tracing off.
	NoTracing bool
}

// Open connects to PostgreSQL, waiting (and logging) until the server answers
// or ctx ends: services may start before their database.
func Open(ctx context.Context, url string, o Options, log *slog.Logger) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	if o.Name != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = o.Name
	}
	switch {
	case o.NoTracing:
	case o.Tracer != nil:
		cfg.ConnConfig.Tracer = o.Tracer
	default:
		cfg.ConnConfig.Tracer = otelpgx.NewTracer(otelpgx.WithDisableAcquireTracer())
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create pool: %w", err)
	}
	if err := WaitReady(ctx, pool, log); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// WaitReady pings until PostgreSQL answers or ctx ends.
func WaitReady(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	delay := 200 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := pool.Ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for PostgreSQL: %w", errors.Join(ctx.Err(), err))
		}
		log.Warn("PostgreSQL not ready, retrying", "err", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// Migrate applies every pending migration. tern holds an advisory lock, so
// concurrent runs are safe.
func Migrate(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect for migration: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	m, err := migrate.NewMigrator(ctx, conn, "hookline_schema_version")
	if err != nil {
		return fmt.Errorf("create migrator: %w", err)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("open embedded migrations: %w", err)
	}
	if err := m.LoadMigrations(sub); err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}
