package auth_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/hookline/hookline/pkg/auth"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
)

// newKey stores an API key of tenant acme and returns its bearer header.
func newKey(t *testing.T, pool *pgxpool.Pool, id string) string {
	t.Helper()
	token, hash := auth.NewToken()
	if _, err := pool.Exec(t.Context(), `INSERT INTO tenants (id, name) VALUES ('acme', 'Acme') ON CONFLICT DO NOTHING`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `INSERT INTO api_keys (id, tenant_id, name, token_hash) VALUES ($1, 'acme', 'k', $2)`, id, hash); err != nil {
		t.Fatal(err)
	}
	return "Bearer " + token
}

func revokeInDB(t *testing.T, pool *pgxpool.Pool, id string) {
	t.Helper()
	if _, err := pool.Exec(t.Context(), `UPDATE api_keys SET revoked_at = now() WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
}

func TestAuthenticate(t *testing.T) {
	pool, _ := pgtest.NewPool(t)
	key := newKey(t, pool, "key_1")
	a := auth.New("admin-secret", pool)
	ctx := t.Context()
	if p, err := a.Authenticate(ctx, "Bearer admin-secret"); err != nil || !p.Admin {
		t.Errorf("admin token: %+v, %v", p, err)
	}
	if p, err := a.Authenticate(ctx, key); err != nil || p.TenantID != "acme" || p.KeyID != "key_1" {
		t.Errorf("API key: %+v, %v", p, err)
	}
	for _, h := range []string{"", "Bearer", "Basic admin-secret", "Bearer admin-secre", "Bearer hlk_unknown"} {
		if _, err := a.Authenticate(ctx, h); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("%q: %v, want ErrUnauthenticated", h, err)
		}
	}
	// Without a cache a revocation is seen by the next request.
	revokeInDB(t, pool, "key_1")
	if _, err := a.Authenticate(ctx, key); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("revoked key: %v, want ErrUnauthenticated", err)
	}
}

func TestCachedKeyAndRevocationNotice(t *testing.T) {
	pool, _ := pgtest.NewPool(t)
	srv := natstest.Start(t)
	conn := func() *nats.Conn {
		nc, _ := srv.Connect(t)
		return nc
	}
	ctx := t.Context()
	key := newKey(t, pool, "key_1")
	// Two replicas; the second hears revocations over NATS.
	a := auth.New("admin-secret", pool).CacheFor(time.Hour)
	b := auth.New("admin-secret", pool).CacheFor(time.Hour)
	ncB := conn()
	if _, err := b.ForgetOnNotice(ncB); err != nil {
		t.Fatal(err)
	}
	if err := ncB.Flush(); err != nil { // the subscription is in place
		t.Fatal(err)
	}
	for _, r := range []*auth.Authenticator{a, b} {
		if _, err := r.Authenticate(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	// Revoked behind the caches' back: both still trust their entry, so
	// the cache really serves the key.
	revokeInDB(t, pool, "key_1")
	for _, r := range []*auth.Authenticator{a, b} {
		if _, err := r.Authenticate(ctx, key); err != nil {
			t.Fatalf("cached key: %v", err)
		}
	}
	// A failure is never cached: a key created now works at once.
	if _, err := a.Authenticate(ctx, "Bearer hlk_unknown"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatal(err)
	}
	// Replica a revokes: it forgets at once, b on the notice.
	if err := a.Revoked(conn()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, key); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("replica that revoked: %v, want ErrUnauthenticated", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := b.Authenticate(ctx, key)
		if errors.Is(err, auth.ErrUnauthenticated) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("other replica still accepts the revoked key 10s after the notice: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCacheExpires(t *testing.T) {
	pool, _ := pgtest.NewPool(t)
	key := newKey(t, pool, "key_1")
	a := auth.New("admin-secret", pool).CacheFor(50 * time.Millisecond)
	if _, err := a.Authenticate(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	revokeInDB(t, pool, "key_1")
	// Whatever the machine's speed: once the TTL passed, the key is looked
	// up again and refused.
	time.Sleep(100 * time.Millisecond)
	if _, err := a.Authenticate(t.Context(), key); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("after the TTL: %v, want ErrUnauthenticated", err)
	}
}
