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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
}

// New returns an Authenticator for the admin token and the keys in pool.
func New(adminToken string, pool *pgxpool.Pool) *Authenticator {
	return &Authenticator{adminHash: sha256.Sum256([]byte(adminToken)), pool: pool}
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
