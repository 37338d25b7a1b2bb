package endpoints

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// Querier runs a query returning one row. *pgxpool.Pool, *pgx.Conn and
// pgx.Tx satisfy it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ErrNotFound is returned by [Load] for an endpoint id with no row at all.
var ErrNotFound = errors.New("endpoint not found")

// Load reads endpoint id from the database as the hot path sees it: the
// current secret first, then the previous one while its grace period lasts;
// the retry schedule in milliseconds; Deleted set once deleted_at is.
func Load(ctx context.Context, q Querier, id string) (*hooklinev1.Endpoint, error) {
	var (
		ep                   hooklinev1.Endpoint
		filter               *string
		headers              map[string]string
		secret               string
		prevSecret           *string
		prevExpires          *time.Time
		timeoutMS, rateLimit int32
		schedule             []string
		version              int64
		deletedAt            *time.Time
	)
	err := q.QueryRow(ctx, `
		SELECT tenant_id, url, event_types, filter, headers, secret, previous_secret,
		       previous_secret_expires_at, timeout_ms, retry_schedule, rate_limit, ordering,
		       disabled, propagate_trace, version, deleted_at
		FROM endpoints WHERE id = $1`, id).Scan(
		&ep.TenantId, &ep.Url, &ep.EventTypes, &filter, &headers, &secret, &prevSecret,
		&prevExpires, &timeoutMS, &schedule, &rateLimit, &ep.Ordering,
		&ep.Disabled, &ep.PropagateTrace, &version, &deletedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("load endpoint %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load endpoint %s: %w", id, err)
	}
	ep.Id = id
	if filter != nil {
		ep.Filter = *filter
	}
	ep.Headers = headers
	ep.Secrets = []*hooklinev1.Secret{{Value: secret}}
	if prevSecret != nil && prevExpires != nil && prevExpires.After(time.Now()) {
		ep.Secrets = append(ep.Secrets, &hooklinev1.Secret{Value: *prevSecret, ExpiresAt: timestamppb.New(*prevExpires)})
	}
	ep.TimeoutMs = uint32(max(timeoutMS, 0)) //nolint:gosec // non-negative
	ep.RateLimit = uint32(max(rateLimit, 0)) //nolint:gosec // non-negative
	for _, s := range schedule {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("load endpoint %s: bad retry delay %q in database", id, s)
		}
		ep.RetryScheduleMs = append(ep.RetryScheduleMs, uint64(d.Milliseconds())) //nolint:gosec // non-negative
	}
	ep.Version = uint64(max(version, 0)) //nolint:gosec // non-negative
	ep.Deleted = deletedAt != nil
	return &ep, nil
}

// Sync copies endpoint id from the database to kv. It never replaces a
// newer version with an older one, so concurrent Syncs of the same endpoint
// (several API replicas, the dispatcher disabling it) converge on the newest
// row. An id with no row becomes a tombstone.
func Sync(ctx context.Context, pool *pgxpool.Pool, kv jetstream.KeyValue, id string) error {
	for range 10 {
		ep, err := Load(ctx, pool, id)
		if errors.Is(err, ErrNotFound) {
			ep, err = &hooklinev1.Endpoint{Id: id, Deleted: true}, nil
		}
		if err != nil {
			return err
		}
		done, err := putIfNewer(ctx, kv, ep)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		// Someone else wrote the key between our read and our write: look again.
	}
	return fmt.Errorf("sync endpoint %s: too many concurrent writers", id)
}

// putIfNewer writes ep unless kv holds a newer version; done is false when a
// concurrent writer got in first and the caller should retry.
func putIfNewer(ctx context.Context, kv jetstream.KeyValue, ep *hooklinev1.Endpoint) (done bool, err error) {
	b, err := proto.Marshal(ep)
	if err != nil {
		return false, fmt.Errorf("encode endpoint %s: %w", ep.GetId(), err)
	}
	cur, err := kv.Get(ctx, ep.GetId())
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		_, err = kv.Create(ctx, ep.GetId(), b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil
		}
	case err != nil:
		return false, fmt.Errorf("get endpoint %s from KV: %w", ep.GetId(), err)
	default:
		var old hooklinev1.Endpoint
		if cur.Operation() == jetstream.KeyValuePut && proto.Unmarshal(cur.Value(), &old) == nil &&
			old.GetVersion() > ep.GetVersion() && ep.GetVersion() != 0 {
			return true, nil // KV already holds something newer
		}
		if proto.Equal(&old, ep) {
			return true, nil
		}
		_, err = kv.Update(ctx, ep.GetId(), b, cur.Revision())
		if isWrongRevision(err) {
			return false, nil
		}
	}
	if err != nil {
		return false, fmt.Errorf("put endpoint %s in KV: %w", ep.GetId(), err)
	}
	return true, nil
}

func isWrongRevision(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// SyncAll makes kv match the database: every endpoint row is synced (deleted
// ones as tombstones), and keys without a row become tombstones. Ingest runs
// it at start, so a change whose Sync was lost to a crash still arrives.
func SyncAll(ctx context.Context, pool *pgxpool.Pool, kv jetstream.KeyValue) error {
	rows, err := pool.Query(ctx, `SELECT id FROM endpoints ORDER BY id`)
	if err != nil {
		return fmt.Errorf("list endpoints: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list endpoints: %w", err)
	}
	known := make(map[string]bool, len(ids))
	for _, id := range ids {
		known[id] = true
		if err := Sync(ctx, pool, kv, id); err != nil {
			return err
		}
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil
		}
		return fmt.Errorf("list KV keys: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	var orphans []string
	for k := range lister.Keys() {
		if !known[k] {
			orphans = append(orphans, k)
		}
	}
	for _, id := range orphans {
		if err := Sync(ctx, pool, kv, id); err != nil {
			return err
		}
	}
	return nil
}
