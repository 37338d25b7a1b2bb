package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/ids"
	"github.com/hookline/hookline/pkg/signature"
)

// endpoint is an endpoints row.
type endpoint struct {
	ID             string
	TenantID       string
	URL            string
	Description    string
	EventTypes     []string
	Filter         *string
	Headers        map[string]string
	Secret         string
	PrevSecret     *string
	PrevExpiresAt  *time.Time
	TimeoutMS      int
	RetrySchedule  []string
	RateLimit      int
	Ordering       string
	Disabled       bool
	DisabledAt     *time.Time
	DisabledReason *string
	PropagateTrace bool
	Version        int64
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

const endpointColumns = `id, tenant_id, url, description, event_types, filter, headers, secret,
	previous_secret, previous_secret_expires_at, timeout_ms, retry_schedule, rate_limit, ordering,
	disabled, disabled_at, disabled_reason, propagate_trace, version, created_at, updated_at`

func scanEndpoint(row pgx.Row) (endpoint, error) {
	var e endpoint
	err := row.Scan(&e.ID, &e.TenantID, &e.URL, &e.Description, &e.EventTypes, &e.Filter, &e.Headers, &e.Secret,
		&e.PrevSecret, &e.PrevExpiresAt, &e.TimeoutMS, &e.RetrySchedule, &e.RateLimit, &e.Ordering,
		&e.Disabled, &e.DisabledAt, &e.DisabledReason, &e.PropagateTrace, &e.Version, &e.CreatedAt, &e.UpdatedAt)
	return e, err
}

// endpointInput is a create or PATCH body. Pointer fields tell "absent" from
// a value; present records which keys the body named, so that an explicit
// null (meaning "back to the default") is not mistaken for absence.
type endpointInput struct {
	URL            *string           `json:"url"`
	Description    *string           `json:"description"`
	EventTypes     []string          `json:"event_types"`
	Filter         *string           `json:"filter"`
	Headers        map[string]string `json:"headers"`
	Secret         *string           `json:"secret"`
	TimeoutMS      *int              `json:"timeout_ms"`
	RetrySchedule  []string          `json:"retry_schedule"`
	RateLimit      *int              `json:"rate_limit"`
	Ordering       *string           `json:"ordering"`
	Disabled       *bool             `json:"disabled"`
	PropagateTrace *bool             `json:"propagate_trace"`

	present map[string]bool
}

func (a *API) readEndpointInput(r *http.Request) (*endpointInput, error) {
	in := &endpointInput{}
	body, err := readJSON(r, in)
	if err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, httpapi.BadRequest("the request body must be a JSON object")
	}
	in.present = make(map[string]bool, len(raw))
	for k := range raw {
		in.present[k] = true
	}
	return in, nil
}

func (in *endpointInput) has(k string) bool { return in.present[k] }

// apply merges the input into e (a new endpoint's defaults, or the current
// row for a PATCH) and validates the fields it touched.
func (a *API) apply(ctx context.Context, e *endpoint, in *endpointInput, creating bool) error {
	var errs fieldErrors
	now := apitime.Now()
	nullNotAllowed := func(field string) {
		errs.add(field, "may not be null")
	}
	if creating || in.has("url") {
		switch {
		case in.URL != nil:
			e.URL = *in.URL
			if err := a.validateURL(ctx, e.URL, &errs); err != nil {
				return err
			}
		case in.has("url"):
			nullNotAllowed("url")
		default:
			errs.add("url", "is required")
		}
	}
	if in.has("description") {
		e.Description = ""
		if in.Description != nil {
			e.Description = *in.Description
		}
		validateDescription(e.Description, &errs)
	}
	if in.has("event_types") {
		e.EventTypes = in.EventTypes
		if e.EventTypes == nil {
			e.EventTypes = []string{}
		}
		validateEventTypes(e.EventTypes, &errs)
	}
	if in.has("filter") {
		e.Filter = in.Filter
		if e.Filter != nil && *e.Filter == "" {
			e.Filter = nil
		}
		validateFilter(e.Filter, &errs)
	}
	if in.has("headers") {
		e.Headers = in.Headers
		if e.Headers == nil {
			e.Headers = map[string]string{}
		}
		validateHeaders(e.Headers, &errs)
	}
	if in.has("secret") {
		if in.Secret == nil {
			nullNotAllowed("secret")
		} else {
			validateSecret(*in.Secret, "secret", &errs)
			if *in.Secret != e.Secret {
				// Replaced outright, without the grace period of a rotation.
				e.Secret, e.PrevSecret, e.PrevExpiresAt = *in.Secret, nil, nil
			}
		}
	}
	if in.has("timeout_ms") {
		e.TimeoutMS = defaultTimeoutMS
		if in.TimeoutMS != nil {
			e.TimeoutMS = *in.TimeoutMS
		}
		validateTimeout(e.TimeoutMS, &errs)
	}
	if in.has("retry_schedule") {
		e.RetrySchedule = in.RetrySchedule
		if e.RetrySchedule == nil {
			e.RetrySchedule = slices.Clone(defaultRetrySchedule)
		}
		validateRetrySchedule(e.RetrySchedule, &errs)
	}
	if in.has("rate_limit") {
		e.RateLimit = 0
		if in.RateLimit != nil {
			e.RateLimit = *in.RateLimit
		}
		validateRateLimit(e.RateLimit, &errs)
	}
	if in.has("ordering") {
		e.Ordering = orderingKey
		if in.Ordering != nil {
			e.Ordering = *in.Ordering
		}
		validateOrdering(e.Ordering, &errs)
	}
	if in.has("disabled") {
		disabled := in.Disabled != nil && *in.Disabled
		if disabled && !e.Disabled {
			reason := disabledByAPI
			e.DisabledAt, e.DisabledReason = &now, &reason
		}
		if !disabled {
			e.DisabledAt, e.DisabledReason = nil, nil
		}
		e.Disabled = disabled
	}
	if in.has("propagate_trace") {
		e.PropagateTrace = in.PropagateTrace == nil || *in.PropagateTrace
	}
	return errs.err()
}

func newEndpoint(tenant string) endpoint {
	now := apitime.Now()
	return endpoint{
		ID:             ids.New(ids.Endpoint),
		TenantID:       tenant,
		EventTypes:     []string{},
		Headers:        map[string]string{},
		Secret:         signature.NewSecret(),
		TimeoutMS:      defaultTimeoutMS,
		RetrySchedule:  slices.Clone(defaultRetrySchedule),
		Ordering:       orderingKey,
		PropagateTrace: true,
		Version:        1,
		CreatedAt:      now,
		UpdatedAt:      now,
	}
}

func (a *API) createEndpoint(w http.ResponseWriter, r *http.Request) error {
	tenant, err := a.tenantScope(r)
	if err != nil {
		return err
	}
	in, err := a.readEndpointInput(r)
	if err != nil {
		return err
	}
	e := newEndpoint(tenant)
	if err := a.apply(r.Context(), &e, in, true); err != nil {
		return err
	}
	secret, _, err := a.sealSecrets(e)
	if err != nil {
		return err
	}
	_, err = a.pool.Exec(r.Context(), `
		INSERT INTO endpoints (id, tenant_id, url, description, event_types, filter, headers, secret,
			timeout_ms, retry_schedule, rate_limit, ordering, disabled, disabled_at, disabled_reason,
			propagate_trace, version, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`,
		e.ID, e.TenantID, e.URL, e.Description, e.EventTypes, e.Filter, e.Headers, secret,
		e.TimeoutMS, e.RetrySchedule, e.RateLimit, e.Ordering, e.Disabled, e.DisabledAt, e.DisabledReason,
		e.PropagateTrace, e.Version, e.CreatedAt, e.UpdatedAt)
	if err != nil {
		return dbError("insert endpoint", err)
	}
	a.sync(r.Context(), e.ID)
	v, err := a.fullView(r.Context(), e)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusCreated, v)
	return nil
}

// loadEndpoint returns the tenant's live endpoint id, or a 404 problem.
func (a *API) loadEndpoint(ctx context.Context, q pgxQuerier, tenant, id string, lock bool) (endpoint, error) {
	sql := `SELECT ` + endpointColumns + ` FROM endpoints WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL`
	if lock {
		sql += ` FOR UPDATE`
	}
	e, err := scanEndpoint(q.QueryRow(ctx, sql, tenant, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return e, httpapi.NotFound("endpoint " + id)
	}
	if err != nil {
		return e, dbError("load endpoint", err)
	}
	if err := a.openSecrets(&e); err != nil {
		return e, err
	}
	return e, nil
}

// openSecrets decrypts the row's signing secrets in place.
func (a *API) openSecrets(e *endpoint) error {
	v, err := a.keys.Open(e.Secret, e.ID)
	if err != nil {
		return fmt.Errorf("decrypt secret of endpoint %s: %w", e.ID, err)
	}
	e.Secret = v
	if e.PrevSecret != nil {
		v, err := a.keys.Open(*e.PrevSecret, e.ID)
		if err != nil {
			return fmt.Errorf("decrypt previous secret of endpoint %s: %w", e.ID, err)
		}
		e.PrevSecret = &v
	}
	return nil
}

// sealSecrets returns the row's signing secrets as stored: encrypted with
// the primary key when encryption keys are configured, else in clear.
func (a *API) sealSecrets(e endpoint) (secret string, prev *string, err error) {
	secret, err = a.keys.Seal(e.Secret, e.ID)
	if err != nil {
		return "", nil, fmt.Errorf("encrypt secret of endpoint %s: %w", e.ID, err)
	}
	if e.PrevSecret != nil {
		p, err := a.keys.Seal(*e.PrevSecret, e.ID)
		if err != nil {
			return "", nil, fmt.Errorf("encrypt previous secret of endpoint %s: %w", e.ID, err)
		}
		prev = &p
	}
	return secret, prev, nil
}

type pgxQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (a *API) getEndpoint(w http.ResponseWriter, r *http.Request) error {
	tenant, err := a.tenantScope(r)
	if err != nil {
		return err
	}
	e, err := a.loadEndpoint(r.Context(), a.pool, tenant, r.PathValue("id"), false)
	if err != nil {
		return err
	}
	v, err := a.fullView(r.Context(), e)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, v)
	return nil
}

func (a *API) listEndpoints(w http.ResponseWriter, r *http.Request) error {
	tenant, err := a.tenantScope(r)
	if err != nil {
		return err
	}
	p, err := httpapi.ParseList(r)
	if err != nil {
		return err
	}
	after := cursorArgs(p.Cursor)
	rows, err := a.pool.Query(r.Context(), `SELECT `+endpointColumns+` FROM endpoints
		WHERE tenant_id = $1 AND deleted_at IS NULL AND (created_at, id) > (coalesce($2::timestamptz, '-infinity'), $3::text)
		ORDER BY created_at, id LIMIT $4`, tenant, after.t, after.id, p.Limit+1)
	if err != nil {
		return dbError("list endpoints", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (endpoint, error) { return scanEndpoint(row) })
	if err != nil {
		return dbError("list endpoints", err)
	}
	list, next := httpapi.NextPage(list, p.Limit, func(e endpoint) httpapi.Cursor { return httpapi.Cursor{Time: e.CreatedAt, ID: e.ID} })
	out := httpapi.Page[endpointView]{Data: make([]endpointView, 0, len(list)), NextCursor: next}
	for _, e := range list {
		out.Data = append(out.Data, view(e))
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// update runs change on the locked row of the tenant's endpoint id, writes
// it back with its version bumped, and syncs it to KV.
func (a *API) update(ctx context.Context, tenant, id string, change func(e *endpoint) error) (endpoint, error) {
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return endpoint{}, dbError("begin", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	e, err := a.loadEndpoint(ctx, tx, tenant, id, true)
	if err != nil {
		return e, err
	}
	if err := change(&e); err != nil {
		return e, err
	}
	secret, prev, err := a.sealSecrets(e)
	if err != nil {
		return e, err
	}
	err = tx.QueryRow(ctx, `
		UPDATE endpoints SET url = $2, description = $3, event_types = $4, filter = $5, headers = $6,
			secret = $7, previous_secret = $8, previous_secret_expires_at = $9, timeout_ms = $10,
			retry_schedule = $11, rate_limit = $12, ordering = $13, disabled = $14, disabled_at = $15,
			disabled_reason = $16, propagate_trace = $17, version = version + 1, updated_at = $18
		WHERE id = $1 RETURNING version, updated_at`,
		e.ID, e.URL, e.Description, e.EventTypes, e.Filter, e.Headers,
		secret, prev, e.PrevExpiresAt, e.TimeoutMS,
		e.RetrySchedule, e.RateLimit, e.Ordering, e.Disabled, e.DisabledAt,
		e.DisabledReason, e.PropagateTrace, apitime.Now()).Scan(&e.Version, &e.UpdatedAt)
	if err != nil {
		return e, dbError("update endpoint", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return e, dbError("commit", err)
	}
	a.sync(ctx, e.ID)
	return e, nil
}

func (a *API) patchEndpoint(w http.ResponseWriter, r *http.Request) error {
	tenant, err := a.tenantScope(r)
	if err != nil {
		return err
	}
	// A missing endpoint is 404 whatever the body holds.
	if _, err := a.loadEndpoint(r.Context(), a.pool, tenant, r.PathValue("id"), false); err != nil {
		return err
	}
	in, err := a.readEndpointInput(r)
	if err != nil {
		return err
	}
	e, err := a.update(r.Context(), tenant, r.PathValue("id"), func(e *endpoint) error {
		return a.apply(r.Context(), e, in, false)
	})
	if err != nil {
		return err
	}
	v, err := a.fullView(r.Context(), e)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, v)
	return nil
}

func (a *API) deleteEndpoint(w http.ResponseWriter, r *http.Request) error {
	tenant, err := a.tenantScope(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	tag, err := a.pool.Exec(r.Context(), `
		UPDATE endpoints SET deleted_at = now(), updated_at = now(), version = version + 1
		WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL`, tenant, id)
	if err != nil {
		return dbError("delete endpoint", err)
	}
	if tag.RowsAffected() == 0 {
		return httpapi.NotFound("endpoint " + id)
	}
	a.sync(r.Context(), id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) rotateSecret(w http.ResponseWriter, r *http.Request) error {
	tenant, err := a.tenantScope(r)
	if err != nil {
		return err
	}
	if _, err := a.loadEndpoint(r.Context(), a.pool, tenant, r.PathValue("id"), false); err != nil {
		return err
	}
	var in struct {
		Secret       *string `json:"secret"`
		GraceSeconds *int    `json:"grace_seconds"`
	}
	body, err := httpapi.ReadBody(r, maxBody)
	if err != nil {
		return err
	}
	if len(body) > 0 && string(body) != "null" {
		if err := httpapi.DecodeJSON(body, &in); err != nil {
			return err
		}
	}
	var errs fieldErrors
	secret := signature.NewSecret()
	if in.Secret != nil {
		secret = *in.Secret
		validateSecret(secret, "secret", &errs)
	}
	grace := defaultGraceSecond
	if in.GraceSeconds != nil {
		grace = *in.GraceSeconds
		if grace < 0 || grace > maxGraceSeconds {
			errs.add("grace_seconds", "must be between 0 and %d", maxGraceSeconds)
		}
	}
	if err := errs.err(); err != nil {
		return err
	}
	expires := apitime.Now().Add(time.Duration(grace) * time.Second)
	_, err = a.update(r.Context(), tenant, r.PathValue("id"), func(e *endpoint) error {
		if secret == e.Secret {
			return httpapi.Invalid(httpapi.FieldError{Field: "secret", Message: "must differ from the current secret"})
		}
		old := e.Secret
		e.Secret, e.PrevSecret, e.PrevExpiresAt = secret, &old, &expires
		return nil
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"secret":                     secret,
		"previous_secret_expires_at": apitime.Format(expires),
	})
	return nil
}

func (a *API) testEndpoint(w http.ResponseWriter, r *http.Request) error {
	tenant, err := a.tenantScope(r)
	if err != nil {
		return err
	}
	e, err := a.loadEndpoint(r.Context(), a.pool, tenant, r.PathValue("id"), false)
	if err != nil {
		return err
	}
	if a.test == nil {
		return httpapi.Unavailable("test events are not available", 0)
	}
	data, err := json.Marshal(map[string]string{"endpoint_id": e.ID, "message": "test event from Hookline"})
	if err != nil {
		return fmt.Errorf("encode test event: %w", err)
	}
	eventID, err := a.test(r.Context(), tenant, e.ID, data)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]string{"event_id": eventID})
	return nil
}
