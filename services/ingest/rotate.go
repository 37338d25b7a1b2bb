package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/natsconn"
	"github.com/hookline/hookline/pkg/secretbox"
	"github.com/hookline/hookline/pkg/store"
)

// RotateSecrets re-encrypts every stored endpoint signing secret (current
// and previous, deleted endpoints included) with the primary key of
// cfg.EncryptionKeys, then copies the endpoints to the KV bucket so that
// fan-out and dispatchers hold the new ciphertexts too. Secrets stored in
// clear are encrypted. It returns how many endpoints were rewritten. After
// it, every key but the primary may be removed from HOOKLINE_ENCRYPTION_KEYS.
func RotateSecrets(ctx context.Context, cfg config.Config, log *slog.Logger) (int, error) {
	if !cfg.EncryptionKeys.Enabled() {
		return 0, fmt.Errorf("%s: required by rotate-secrets (the keys to encrypt with, the new one first)", config.EnvEncryptionKeys)
	}
	pool, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: 2, Name: ServiceName + "-rotate"}, log)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	n, err := ResealSecrets(ctx, pool, cfg.EncryptionKeys)
	if err != nil {
		return n, err
	}
	nc, js, err := natsconn.Connect(ctx, cfg.NATSURL, ServiceName+"-rotate", log)
	if err != nil {
		return n, err
	}
	defer nc.Close()
	kv, err := bus.EnsureEndpointsBucket(ctx, js, bus.Options{DedupeWindow: cfg.DedupeWindow, Replicas: cfg.StreamReplicas})
	if err != nil {
		return n, err
	}
	if err := endpoints.SyncAll(ctx, pool, kv); err != nil {
		return n, fmt.Errorf("sync endpoints to KV: %w", err)
	}
	return n, nil
}

// ResealSecrets re-encrypts, one row at a time under a row lock, every
// endpoint secret not sealed with keys' primary key. It does not touch KV.
func ResealSecrets(ctx context.Context, pool *pgxpool.Pool, keys *secretbox.Keyring) (int, error) {
	rows, err := pool.Query(ctx, `SELECT id FROM endpoints ORDER BY id`)
	if err != nil {
		return 0, fmt.Errorf("list endpoints: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("list endpoints: %w", err)
	}
	n := 0
	for _, id := range ids {
		changed, err := resealOne(ctx, pool, keys, id)
		if err != nil {
			return n, err
		}
		if changed {
			n++
		}
	}
	return n, nil
}

func resealOne(ctx context.Context, pool *pgxpool.Pool, keys *secretbox.Keyring, id string) (bool, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var secret string
	var prev *string
	err = tx.QueryRow(ctx, `SELECT secret, previous_secret FROM endpoints WHERE id = $1 FOR UPDATE`, id).Scan(&secret, &prev)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil // deleted meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("load endpoint %s: %w", id, err)
	}
	if !keys.NeedsReseal(secret) && (prev == nil || !keys.NeedsReseal(*prev)) {
		return false, nil
	}
	reseal := func(v string) (string, error) {
		if !keys.NeedsReseal(v) {
			return v, nil
		}
		plain, err := keys.Open(v, id)
		if err != nil {
			return "", fmt.Errorf("decrypt secret of endpoint %s: %w", id, err)
		}
		return keys.Seal(plain, id)
	}
	if secret, err = reseal(secret); err != nil {
		return false, err
	}
	if prev != nil {
		p, err := reseal(*prev)
		if err != nil {
			return false, err
		}
		prev = &p
	}
	if _, err := tx.Exec(ctx, `UPDATE endpoints SET secret = $2, previous_secret = $3 WHERE id = $1`, id, secret, prev); err != nil {
		return false, fmt.Errorf("update endpoint %s: %w", id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("commit endpoint %s: %w", id, err)
	}
	return true, nil
}
