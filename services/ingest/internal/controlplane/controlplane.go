// Package controlplane serves the configuration half of Hookline's API
// (CONTRACT 2.1 and 2.2): tenants, their API keys and their endpoints. Every
// endpoint change bumps the row's version and is then synced to the KV
// bucket that fan-out and dispatchers watch.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookline/hookline/pkg/auth"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/secretbox"
)

// TestSender accepts a hookline.test event for one endpoint and returns the
// event's id. Ingest adapts its events service to it.
type TestSender func(ctx context.Context, tenant, endpointID string, data []byte) (eventID string, err error)

// API serves the control-plane routes.
type API struct {
	pool *pgxpool.Pool
	kv   jetstream.KeyValue
	cfg  config.Config
	log  *slog.Logger
	test TestSender
	keys *secretbox.Keyring // nil: secrets stored in clear
	// revoked is called once API keys stopped being valid (a key revoked,
	// a tenant deleted), so that cached authentications are dropped.
	revoked func()
}

// New returns the control-plane API over pool, syncing endpoints to kv.
func New(pool *pgxpool.Pool, kv jetstream.KeyValue, cfg config.Config, test TestSender, log *slog.Logger) *API {
	return &API{pool: pool, kv: kv, cfg: cfg, log: log, test: test, keys: cfg.EncryptionKeys, revoked: func() {}}
}

// OnRevoke makes the API call f after it revoked an API key or deleted a
// tenant (and its keys).
func (a *API) OnRevoke(f func()) {
	a.revoked = f
}

// maxBody bounds a control-plane request body.
const maxBody = 256 << 10

// Mux is where routes are registered; *http.ServeMux satisfies it.
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Register adds the control-plane routes to mux.
func (a *API) Register(mux Mux) {
	h := func(pattern string, f httpapi.HandlerFunc) { mux.Handle(pattern, httpapi.Handle(a.log, f)) }

	h("POST /v1/tenants", a.createTenant)
	h("GET /v1/tenants", a.listTenants)
	h("GET /v1/tenants/{tenant}", a.getTenant)
	h("DELETE /v1/tenants/{tenant}", a.deleteTenant)

	h("POST /v1/tenants/{tenant}/api-keys", a.createKey)
	h("GET /v1/tenants/{tenant}/api-keys", a.listKeys)
	h("DELETE /v1/tenants/{tenant}/api-keys/{id}", a.revokeKey)

	h("POST /v1/tenants/{tenant}/endpoints", a.createEndpoint)
	h("GET /v1/tenants/{tenant}/endpoints", a.listEndpoints)
	h("GET /v1/tenants/{tenant}/endpoints/{id}", a.getEndpoint)
	h("PATCH /v1/tenants/{tenant}/endpoints/{id}", a.patchEndpoint)
	h("DELETE /v1/tenants/{tenant}/endpoints/{id}", a.deleteEndpoint)
	h("POST /v1/tenants/{tenant}/endpoints/{id}/secret/rotate", a.rotateSecret)
	h("POST /v1/tenants/{tenant}/endpoints/{id}/test", a.testEndpoint)
	h("GET /v1/tenants/{tenant}/endpoints/{id}/attempts", a.listAttempts)
}

// tenantScope checks that the caller may act in the request's tenant and
// that the tenant exists, and returns its id.
func (a *API) tenantScope(r *http.Request) (string, error) {
	tenant := r.PathValue("tenant")
	if err := auth.RequireTenant(r.Context(), tenant); err != nil {
		return "", err
	}
	var one int
	err := a.pool.QueryRow(r.Context(), `SELECT 1 FROM tenants WHERE id = $1`, tenant).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", httpapi.NotFound("tenant " + tenant)
	}
	if err != nil {
		return "", dbError("look up tenant", err)
	}
	return tenant, nil
}

// sync pushes an endpoint change to KV. The row is already committed, so a
// failure here is logged rather than reported: the next ingest start (or the
// next change) converges KV on the database.
func (a *API) sync(ctx context.Context, id string) {
	ctx = context.WithoutCancel(ctx)
	var err error
	for i := range 3 {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = endpoints.Sync(sctx, a.pool, a.kv, id)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(time.Duration(i+1) * 200 * time.Millisecond)
	}
	a.log.ErrorContext(ctx, "endpoint change not synced to KV", "endpoint_id", id, "err", err)
}

// dbError wraps a database failure as an internal error.
func dbError(what string, err error) error {
	return fmt.Errorf("%s: %w", what, err)
}

// readJSON reads and strictly decodes the request body into v.
func readJSON(r *http.Request, v any) ([]byte, error) {
	body, err := httpapi.ReadBody(r, maxBody)
	if err != nil {
		return nil, err
	}
	return body, httpapi.DecodeJSON(body, v)
}
