// Package auth authenticates API requests: the admin token from
// configuration, or a tenant API key stored only as a SHA-256 hash.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/hookline/hookline/pkg/httpapi"
)

// Principal is who made a request.
type Principal struct {
	Admin    bool
	TenantID string // the key's tenant; empty for the admin
	KeyID    string // empty for the admin
}

// Who names the principal in audit records: "admin" or the key id.
func (p Principal) Who() string {
	if p.Admin {
		return "admin"
	}
	return p.KeyID
}

// TokenPrefix starts every tenant API key.
const TokenPrefix = "hlk_"

// NewToken returns a new API key token (256 random bits) and its hash.
func NewToken() (token string, hash []byte) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, Hash(token)
}

// Hash is how tokens are stored.
func Hash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Authenticator checks bearer tokens.
type Authenticator struct {
	adminHash [32]byte
	pool      *pgxpool.Pool

	// A verified API key is trusted for ttl without asking PostgreSQL
	// again (0: every request asks). Only successes are kept, so a key
	// created a moment ago works at once.
	ttl   time.Duration
	now   func() time.Time
	mu    sync.Mutex
	cache map[[sha256.Size]byte]cached
}

type cached struct {
	p       Principal
	expires time.Time
}

// maxCached bounds the cache; past it, it is emptied (a flood of distinct
// valid tokens costs only the lookups it would cost without a cache).
const maxCached = 10000

// New returns an Authenticator for the admin token and the keys in pool.
func New(adminToken string, pool *pgxpool.Pool) *Authenticator {
	return &Authenticator{adminHash: sha256.Sum256([]byte(adminToken)), pool: pool, now: time.Now}
}

// CacheFor makes a remember each verified API key for ttl, so that a busy
// producer's requests do not each look its key up. Whoever revokes keys must
// then call [Authenticator.Forget] on every replica (see [ForgetOnNotice]);
// ttl bounds how long a replica that missed the notice still trusts a
// revoked key.
func (a *Authenticator) CacheFor(ttl time.Duration) *Authenticator {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ttl = ttl
	a.cache = make(map[[sha256.Size]byte]cached)
	return a
}

// Forget drops every remembered key: call it when keys were revoked.
func (a *Authenticator) Forget() {
	a.mu.Lock()
	clear(a.cache)
	a.mu.Unlock()
}

func (a *Authenticator) cachedKey(h [sha256.Size]byte) (Principal, bool) {
	if a.ttl <= 0 {
		return Principal{}, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.cache[h]
	if !ok || !a.now().Before(c.expires) {
		return Principal{}, false
	}
	return c.p, true
}

func (a *Authenticator) remember(h [sha256.Size]byte, p Principal, at time.Time) {
	if a.ttl <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= maxCached {
		clear(a.cache)
	}
	a.cache[h] = cached{p: p, expires: at.Add(a.ttl)}
}

// RevokedSubject is the core NATS subject (no stream keeps it) on which a
// replica that revoked API keys tells the others to forget what they cached.
const RevokedSubject = "hookline.control.api-keys-revoked"

// Notifier publishes on core NATS; *nats.Conn implements it.
type Notifier interface {
	Publish(subject string, data []byte) error
}

// Revoked tells every replica's [Authenticator] (through [ForgetOnNotice])
// and a itself that keys were revoked. The local cache is dropped at once;
// a failed notice leaves the other replicas to their cache's TTL.
func (a *Authenticator) Revoked(n Notifier) error {
	a.Forget()
	if n == nil {
		return nil
	}
	if err := n.Publish(RevokedSubject, nil); err != nil {
		return fmt.Errorf("announce API key revocation: %w", err)
	}
	return nil
}

// Subscriber subscribes on core NATS; *nats.Conn implements it.
type Subscriber interface {
	Subscribe(subject string, cb nats.MsgHandler) (*nats.Subscription, error)
}

// ForgetOnNotice makes a forget its cache whenever any replica announces a
// revocation ([Authenticator.Revoked]).
func (a *Authenticator) ForgetOnNotice(s Subscriber) (*nats.Subscription, error) {
	sub, err := s.Subscribe(RevokedSubject, func(*nats.Msg) { a.Forget() })
	if err != nil {
		return nil, fmt.Errorf("subscribe to API key revocations: %w", err)
	}
	return sub, nil
}

// ErrUnauthenticated is returned for a missing, malformed, unknown or revoked token.
var ErrUnauthenticated = errors.New("unauthenticated")

// Authenticate resolves the request's bearer token. Comparing hashes in
// constant time keeps the admin token's length and content from leaking.
func (a *Authenticator) Authenticate(ctx context.Context, header string) (Principal, error) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return Principal{}, ErrUnauthenticated
	}
	token = strings.TrimSpace(token)
	h := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(h[:], a.adminHash[:]) == 1 {
		return Principal{Admin: true}, nil
	}
	if !strings.HasPrefix(token, TokenPrefix) {
		return Principal{}, ErrUnauthenticated
	}
	if p, ok := a.cachedKey(h); ok {
		return p, nil
	}
	at := a.now()
	var p Principal
	err := a.pool.QueryRow(ctx,
		`SELECT id, tenant_id FROM api_keys WHERE token_hash = $1 AND revoked_at IS NULL`, h[:]).
		Scan(&p.KeyID, &p.TenantID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up API key: %w", err)
	}
	// Remembered from before the lookup: a revocation that lands while it
	// runs is not outlived by more than the TTL.
	a.remember(h, p, at)
	return p, nil
}

type ctxKey struct{}

// Middleware authenticates every request, answering 401 on failure and 503
// when the key store cannot be reached.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Authenticate(r.Context(), r.Header.Get("Authorization"))
		if errors.Is(err, ErrUnauthenticated) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="hookline"`)
			httpapi.WriteProblem(w, httpapi.Unauthorized())
			return
		}
		if err != nil {
			httpapi.WriteProblem(w, httpapi.Unavailable("the key store is unreachable; retry shortly", 2))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, p)))
	})
}

// From returns the request's principal (zero outside [Authenticator.Middleware]).
func From(ctx context.Context) Principal {
	p, _ := ctx.Value(ctxKey{}).(Principal)
	return p
}

// RequireAdmin answers 403 unless the admin made the request.
func RequireAdmin(ctx context.Context) error {
	if !From(ctx).Admin {
		return httpapi.Forbidden("this route needs the admin token")
	}
	return nil
}

// RequireTenant answers 404 (not 403, so tenants cannot probe each other)
// unless the request may act inside tenant.
func RequireTenant(ctx context.Context, tenant string) error {
	p := From(ctx)
	if p.Admin || p.TenantID == tenant {
		return nil
	}
	return httpapi.NotFound("tenant " + tenant)
}
