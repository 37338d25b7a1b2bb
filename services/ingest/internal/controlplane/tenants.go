package controlplane

import (
	"errors"
	"net/http"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/auth"
	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/ids"
)

// tenantIDRE is CONTRACT 2.1's tenant id; such an id is also a NATS subject token.
var tenantIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

const maxNameLen = 200

type tenantView struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	CreatedAt string `json:"created_at"`
}

func (a *API) createTenant(w http.ResponseWriter, r *http.Request) error {
	if err := auth.RequireAdmin(r.Context()); err != nil {
		return err
	}
	var in struct {
		ID   *string `json:"id"`
		Name *string `json:"name"`
	}
	if _, err := readJSON(r, &in); err != nil {
		return err
	}
	var errs []httpapi.FieldError
	switch {
	case in.ID == nil || *in.ID == "":
		errs = append(errs, httpapi.FieldError{Field: "id", Message: "is required"})
	case !tenantIDRE.MatchString(*in.ID):
		errs = append(errs, httpapi.FieldError{Field: "id", Message: "must match [a-z0-9][a-z0-9_-]{0,62}"})
	}
	name := ""
	if in.Name != nil {
		name = *in.Name
	}
	if utf8.RuneCountInString(name) > maxNameLen {
		errs = append(errs, httpapi.FieldError{Field: "name", Message: "must be at most 200 characters"})
	}
	if len(errs) > 0 {
		return httpapi.Invalid(errs...)
	}
	if name == "" {
		name = *in.ID
	}
	t := tenantView{ID: *in.ID, Name: name}
	var created time.Time
	err := a.pool.QueryRow(r.Context(),
		`INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) RETURNING created_at`,
		t.ID, t.Name, apitime.Now()).Scan(&created)
	if isUniqueViolation(err) {
		return httpapi.Conflict("tenant " + t.ID + " already exists")
	}
	if err != nil {
		return dbError("insert tenant", err)
	}
	t.CreatedAt = apitime.Format(created)
	httpapi.WriteJSON(w, http.StatusCreated, t)
	return nil
}

func (a *API) listTenants(w http.ResponseWriter, r *http.Request) error {
	if err := auth.RequireAdmin(r.Context()); err != nil {
		return err
	}
	p, err := httpapi.ParseList(r)
	if err != nil {
		return err
	}
	after := cursorArgs(p.Cursor)
	rows, err := a.pool.Query(r.Context(), `
		SELECT id, name, created_at FROM tenants
		WHERE (created_at, id) > (coalesce($1::timestamptz, '-infinity'), $2::text)
		ORDER BY created_at, id LIMIT $3`, after.t, after.id, p.Limit+1)
	if err != nil {
		return dbError("list tenants", err)
	}
	type row struct {
		view tenantView
		at   time.Time
	}
	list, err := pgx.CollectRows(rows, func(cr pgx.CollectableRow) (row, error) {
		var x row
		err := cr.Scan(&x.view.ID, &x.view.Name, &x.at)
		x.view.CreatedAt = apitime.Format(x.at)
		return x, err
	})
	if err != nil {
		return dbError("list tenants", err)
	}
	list, next := httpapi.NextPage(list, p.Limit, func(x row) httpapi.Cursor { return httpapi.Cursor{Time: x.at, ID: x.view.ID} })
	out := httpapi.Page[tenantView]{Data: make([]tenantView, 0, len(list)), NextCursor: next}
	for _, x := range list {
		out.Data = append(out.Data, x.view)
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) getTenant(w http.ResponseWriter, r *http.Request) error {
	if err := auth.RequireAdmin(r.Context()); err != nil {
		return err
	}
	id := r.PathValue("tenant")
	var t tenantView
	var created time.Time
	err := a.pool.QueryRow(r.Context(), `SELECT id, name, created_at FROM tenants WHERE id = $1`, id).
		Scan(&t.ID, &t.Name, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return httpapi.NotFound("tenant " + id)
	}
	if err != nil {
		return dbError("get tenant", err)
	}
	t.CreatedAt = apitime.Format(created)
	httpapi.WriteJSON(w, http.StatusOK, t)
	return nil
}

// deleteTenant removes the tenant with its keys, endpoints and events. Its
// endpoints are first marked deleted (version bumped) so that each gets a
// tombstone in KV and the hot path stops using it.
func (a *API) deleteTenant(w http.ResponseWriter, r *http.Request) error {
	if err := auth.RequireAdmin(r.Context()); err != nil {
		return err
	}
	id := r.PathValue("tenant")
	ctx := r.Context()
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return dbError("begin", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	rows, err := tx.Query(ctx, `
		UPDATE endpoints SET deleted_at = now(), version = version + 1, updated_at = now()
		WHERE tenant_id = $1 AND deleted_at IS NULL RETURNING id`, id)
	if err != nil {
		return dbError("delete endpoints of tenant", err)
	}
	eps, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return dbError("delete endpoints of tenant", err)
	}
	tag, err := tx.Exec(ctx, `DELETE FROM tenants WHERE id = $1`, id)
	if err != nil {
		return dbError("delete tenant", err)
	}
	if tag.RowsAffected() == 0 {
		return httpapi.NotFound("tenant " + id)
	}
	if err := tx.Commit(ctx); err != nil {
		return dbError("commit", err)
	}
	a.revoked()
	for _, ep := range eps {
		a.sync(ctx, ep) // the row is gone with the tenant: a tombstone
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type keyView struct {
	ID        string  `json:"id"`
	TenantID  string  `json:"tenant_id"`
	Name      string  `json:"name"`
	Token     string  `json:"token,omitempty"`
	CreatedAt string  `json:"created_at"`
	RevokedAt *string `json:"revoked_at"`
}

// keyScope is tenantScope for the admin-only key routes.
func (a *API) keyScope(r *http.Request) (string, error) {
	if err := auth.RequireAdmin(r.Context()); err != nil {
		return "", err
	}
	return a.tenantScope(r)
}

func (a *API) createKey(w http.ResponseWriter, r *http.Request) error {
	tenant, err := a.keyScope(r)
	if err != nil {
		return err
	}
	var in struct {
		Name *string `json:"name"`
	}
	if _, err := readJSON(r, &in); err != nil {
		return err
	}
	name := ""
	if in.Name != nil {
		name = *in.Name
	}
	if utf8.RuneCountInString(name) > maxNameLen {
		return httpapi.Invalid(httpapi.FieldError{Field: "name", Message: "must be at most 200 characters"})
	}
	token, hash := auth.NewToken()
	now := apitime.Now()
	k := keyView{ID: ids.New(ids.APIKey), TenantID: tenant, Name: name, Token: token, CreatedAt: apitime.Format(now)}
	_, err = a.pool.Exec(r.Context(),
		`INSERT INTO api_keys (id, tenant_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)`,
		k.ID, tenant, name, hash, now)
	if err != nil {
		return dbError("insert API key", err)
	}
	httpapi.WriteJSON(w, http.StatusCreated, k)
	return nil
}

func (a *API) listKeys(w http.ResponseWriter, r *http.Request) error {
	tenant, err := a.keyScope(r)
	if err != nil {
		return err
	}
	p, err := httpapi.ParseList(r)
	if err != nil {
		return err
	}
	after := cursorArgs(p.Cursor)
	rows, err := a.pool.Query(r.Context(), `
		SELECT id, name, created_at, revoked_at FROM api_keys
		WHERE tenant_id = $1 AND (created_at, id) > (coalesce($2::timestamptz, '-infinity'), $3::text)
		ORDER BY created_at, id LIMIT $4`, tenant, after.t, after.id, p.Limit+1)
	if err != nil {
		return dbError("list API keys", err)
	}
	type row struct {
		view keyView
		at   time.Time
	}
	list, err := pgx.CollectRows(rows, func(cr pgx.CollectableRow) (row, error) {
		var x row
		var revoked *time.Time
		err := cr.Scan(&x.view.ID, &x.view.Name, &x.at, &revoked)
		x.view.TenantID = tenant
		x.view.CreatedAt = apitime.Format(x.at)
		x.view.RevokedAt = apitime.FormatPtr(revoked)
		return x, err
	})
	if err != nil {
		return dbError("list API keys", err)
	}
	list, next := httpapi.NextPage(list, p.Limit, func(x row) httpapi.Cursor { return httpapi.Cursor{Time: x.at, ID: x.view.ID} })
	out := httpapi.Page[keyView]{Data: make([]keyView, 0, len(list)), NextCursor: next}
	for _, x := range list {
		out.Data = append(out.Data, x.view)
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// revokeKey revokes at once: this replica drops its cached authentications
// and tells the others to drop theirs (a replica that misses the notice
// trusts the key at most for the cache's TTL).
func (a *API) revokeKey(w http.ResponseWriter, r *http.Request) error {
	tenant, err := a.keyScope(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	tag, err := a.pool.Exec(r.Context(), `
		UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
		WHERE tenant_id = $1 AND id = $2`, tenant, id)
	if err != nil {
		return dbError("revoke API key", err)
	}
	if tag.RowsAffected() == 0 {
		return httpapi.NotFound("API key " + id)
	}
	a.revoked()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type cursorPos struct {
	t  *time.Time
	id string
}

func cursorArgs(c *httpapi.Cursor) cursorPos {
	if c == nil {
		return cursorPos{}
	}
	t := c.Time
	return cursorPos{t: &t, id: c.ID}
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}
