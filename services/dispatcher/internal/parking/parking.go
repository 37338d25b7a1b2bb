// Package parking is the blocked-key registry of ordered delivery
// (docs/design/ordering.md): a key whose head waits for a retry, or for an
// open circuit, has a blocked_keys row, and its head and every later delivery
// are parked in parked_deliveries in stream order. A drainer claims due keys
// with a lease and every write it makes is fenced by that lease.
package parking

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/telemetry"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// DB is what the registry needs of PostgreSQL; *pgxpool.Pool implements it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Key names one blocked (endpoint, ordering key).
type Key struct {
	EndpointID string
	KeyToken   string
	TenantID   string
}

// Item is one parked delivery.
type Item struct {
	Seq      uint64
	Delivery *hooklinev1.Delivery
	// Traceparent is the trace context it was parked in ("" if none).
	Traceparent string
}

// Store reads and writes the registry.
type Store struct {
	db    DB
	reads *reads
}

// New returns a Store over db.
func New(db DB) *Store { return &Store{db: db, reads: &reads{db: db}} }

// AppendIfBlocked parks d (stream sequence seq) behind its key's parked
// deliveries if the key is blocked, and reports whether it did. The common
// case, an unblocked key, costs one primary-key read, batched with the reads
// of other deliveries asking at the same time.
func (s *Store) AppendIfBlocked(ctx context.Context, d *hooklinev1.Delivery, keyToken string, seq uint64) (bool, error) {
	blocked, err := s.reads.blocked(ctx, d.GetEndpointId(), keyToken)
	if err != nil {
		return false, err
	}
	if !blocked {
		return false, nil
	}
	var one int
	payload, err := proto.Marshal(d)
	if err != nil {
		return false, fmt.Errorf("encode delivery %s: %w", d.GetId(), err)
	}
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The row lock orders this append against the drainer's unblock: either
	// the drainer sees this item, or this sees the row gone.
	err = tx.QueryRow(ctx, `SELECT 1 FROM blocked_keys WHERE endpoint_id = $1 AND key_token = $2 FOR UPDATE`, d.GetEndpointId(), keyToken).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lock blocked key: %w", err)
	}
	if _, err := tx.Exec(ctx, `
INSERT INTO parked_deliveries (endpoint_id, key_token, seq, delivery_id, payload, traceparent)
VALUES ($1, $2, $3, $4, $5, NULLIF($6, '')) ON CONFLICT DO NOTHING`, d.GetEndpointId(), keyToken, int64(seq), d.GetId(), payload, telemetry.Traceparent(ctx)); err != nil { //nolint:gosec // stream sequences fit
		return false, fmt.Errorf("park delivery %s: %w", d.GetId(), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("commit parked delivery: %w", err)
	}
	return true, nil
}

// Block blocks d's key until due, with d (whose Attempts counts the attempt
// just made) as its first parked delivery, in one transaction.
func (s *Store) Block(ctx context.Context, d *hooklinev1.Delivery, keyToken string, seq uint64, due time.Time) error {
	payload, err := proto.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delivery %s: %w", d.GetId(), err)
	}
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `
INSERT INTO blocked_keys (endpoint_id, key_token, tenant_id, due_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (endpoint_id, key_token) DO NOTHING`, d.GetEndpointId(), keyToken, d.GetTenantId(), due); err != nil {
		return fmt.Errorf("block key: %w", err)
	}
	if _, err := tx.Exec(ctx, `
INSERT INTO parked_deliveries (endpoint_id, key_token, seq, delivery_id, payload, traceparent)
VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''))
ON CONFLICT (endpoint_id, key_token, seq) DO UPDATE SET payload = EXCLUDED.payload, traceparent = EXCLUDED.traceparent`,
		d.GetEndpointId(), keyToken, int64(seq), d.GetId(), payload, telemetry.Traceparent(ctx)); err != nil { //nolint:gosec // stream sequences fit
		return fmt.Errorf("park head %s: %w", d.GetId(), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit blocked key: %w", err)
	}
	return nil
}

// Claim leases up to limit due keys to owner for lease.
func (s *Store) Claim(ctx context.Context, owner string, lease time.Duration, limit int) ([]Key, error) {
	rows, err := s.db.Query(ctx, `
UPDATE blocked_keys b SET lease_owner = $1, lease_until = now() + $2::interval
FROM (
    SELECT endpoint_id, key_token FROM blocked_keys
    WHERE due_at <= now() AND (lease_until IS NULL OR lease_until < now())
    ORDER BY due_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
) due
WHERE b.endpoint_id = due.endpoint_id AND b.key_token = due.key_token
RETURNING b.endpoint_id, b.key_token, b.tenant_id`, owner, lease, limit)
	if err != nil {
		return nil, fmt.Errorf("claim blocked keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Key, error) {
		var k Key
		err := r.Scan(&k.EndpointID, &k.KeyToken, &k.TenantID)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("read claimed keys: %w", err)
	}
	return keys, nil
}

// ErrLeaseLost reports that owner no longer holds the key's lease: another
// replica took it over, and this one must stop.
var ErrLeaseLost = errors.New("lease on blocked key lost")

// Next renews owner's lease on k and returns its first parked delivery, or
// nil when none is left.
func (s *Store) Next(ctx context.Context, k Key, owner string, lease time.Duration) (*Item, error) {
	tag, err := s.db.Exec(ctx, `
UPDATE blocked_keys SET lease_until = now() + $4::interval
WHERE endpoint_id = $1 AND key_token = $2 AND lease_owner = $3`, k.EndpointID, k.KeyToken, owner, lease)
	if err != nil {
		return nil, fmt.Errorf("renew lease: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return nil, ErrLeaseLost
	}
	var (
		seq         int64
		payload     []byte
		traceparent string
	)
	err = s.db.QueryRow(ctx, `
SELECT seq, payload, coalesce(traceparent, '') FROM parked_deliveries WHERE endpoint_id = $1 AND key_token = $2
ORDER BY seq LIMIT 1`, k.EndpointID, k.KeyToken).Scan(&seq, &payload, &traceparent)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read parked delivery: %w", err)
	}
	d := &hooklinev1.Delivery{}
	if err := proto.Unmarshal(payload, d); err != nil {
		return nil, fmt.Errorf("decode parked delivery %d: %w", seq, err)
	}
	return &Item{Seq: uint64(seq), Delivery: d, Traceparent: traceparent}, nil //nolint:gosec // stored from a uint64
}

// Done removes parked delivery seq of k (delivered or dead), fenced by
// owner's lease.
func (s *Store) Done(ctx context.Context, k Key, seq uint64, owner string) error {
	tag, err := s.db.Exec(ctx, `
DELETE FROM parked_deliveries p USING blocked_keys b
WHERE p.endpoint_id = $1 AND p.key_token = $2 AND p.seq = $3
  AND b.endpoint_id = p.endpoint_id AND b.key_token = p.key_token AND b.lease_owner = $4`,
		k.EndpointID, k.KeyToken, int64(seq), owner) //nolint:gosec // stream sequences fit
	if err != nil {
		return fmt.Errorf("remove parked delivery: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// Repark stores d as parked delivery seq of k again and releases the lease
// until due, fenced by owner's lease.
func (s *Store) Repark(ctx context.Context, k Key, seq uint64, d *hooklinev1.Delivery, due time.Time, owner string) error {
	payload, err := proto.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delivery %s: %w", d.GetId(), err)
	}
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	tag, err := tx.Exec(ctx, `
UPDATE blocked_keys SET due_at = $4, lease_owner = NULL, lease_until = NULL
WHERE endpoint_id = $1 AND key_token = $2 AND lease_owner = $3`, k.EndpointID, k.KeyToken, owner, due)
	if err != nil {
		return fmt.Errorf("reschedule blocked key: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	if _, err := tx.Exec(ctx, `
UPDATE parked_deliveries SET payload = $4, traceparent = coalesce(NULLIF($5, ''), traceparent)
WHERE endpoint_id = $1 AND key_token = $2 AND seq = $3`,
		k.EndpointID, k.KeyToken, int64(seq), payload, telemetry.Traceparent(ctx)); err != nil { //nolint:gosec // stream sequences fit
		return fmt.Errorf("update parked delivery: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit repark: %w", err)
	}
	return nil
}

// Release gives owner's lease on k up, the key due again at due.
func (s *Store) Release(ctx context.Context, k Key, owner string, due time.Time) error {
	if _, err := s.db.Exec(ctx, `
UPDATE blocked_keys SET due_at = $4, lease_owner = NULL, lease_until = NULL
WHERE endpoint_id = $1 AND key_token = $2 AND lease_owner = $3`, k.EndpointID, k.KeyToken, owner, due); err != nil {
		return fmt.Errorf("release blocked key: %w", err)
	}
	return nil
}

// Unblock deletes k's row if owner holds its lease and no delivery is parked
// any more; it reports whether it did (false: an item arrived meanwhile).
func (s *Store) Unblock(ctx context.Context, k Key, owner string) (bool, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var one int
	err = tx.QueryRow(ctx, `
SELECT 1 FROM blocked_keys WHERE endpoint_id = $1 AND key_token = $2 AND lease_owner = $3 FOR UPDATE`,
		k.EndpointID, k.KeyToken, owner).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, ErrLeaseLost
	}
	if err != nil {
		return false, fmt.Errorf("lock blocked key: %w", err)
	}
	// A new statement sees every append committed before the lock was ours.
	var left bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM parked_deliveries WHERE endpoint_id = $1 AND key_token = $2)`,
		k.EndpointID, k.KeyToken).Scan(&left); err != nil {
		return false, fmt.Errorf("check parked deliveries: %w", err)
	}
	if left {
		return false, nil
	}
	if _, err := tx.Exec(ctx, `DELETE FROM blocked_keys WHERE endpoint_id = $1 AND key_token = $2`, k.EndpointID, k.KeyToken); err != nil {
		return false, fmt.Errorf("unblock key: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("commit unblock: %w", err)
	}
	return true, nil
}
