package controlplane

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/httpapi"
)

// endpointView is an endpoint as the API shows it: every field, defaults
// included. Secret and Health are added by the single-endpoint routes.
type endpointView struct {
	ID             string            `json:"id"`
	TenantID       string            `json:"tenant_id"`
	URL            string            `json:"url"`
	Description    string            `json:"description"`
	EventTypes     []string          `json:"event_types"`
	Filter         *string           `json:"filter"`
	Headers        map[string]string `json:"headers"`
	TimeoutMS      int               `json:"timeout_ms"`
	RetrySchedule  []string          `json:"retry_schedule"`
	RateLimit      int               `json:"rate_limit"`
	Ordering       string            `json:"ordering"`
	Disabled       bool              `json:"disabled"`
	PropagateTrace bool              `json:"propagate_trace"`
	Version        int64             `json:"version"`
	CreatedAt      string            `json:"created_at"`
	UpdatedAt      string            `json:"updated_at"`
	Secret         string            `json:"secret,omitempty"`
	Health         *healthView       `json:"health,omitempty"`
}

type healthView struct {
	SuccessRate    *float64 `json:"success_rate"`
	LastStatusCode *int     `json:"last_status_code"`
	LastAttemptAt  *string  `json:"last_attempt_at"`
	Circuit        string   `json:"circuit"`
	DisabledAt     *string  `json:"disabled_at"`
	DisabledReason *string  `json:"disabled_reason"`
}

func view(e endpoint) endpointView {
	v := endpointView{
		ID:             e.ID,
		TenantID:       e.TenantID,
		URL:            e.URL,
		Description:    e.Description,
		EventTypes:     e.EventTypes,
		Filter:         e.Filter,
		Headers:        e.Headers,
		TimeoutMS:      e.TimeoutMS,
		RetrySchedule:  e.RetrySchedule,
		RateLimit:      e.RateLimit,
		Ordering:       e.Ordering,
		Disabled:       e.Disabled,
		PropagateTrace: e.PropagateTrace,
		Version:        e.Version,
		CreatedAt:      apitime.Format(e.CreatedAt),
		UpdatedAt:      apitime.Format(e.UpdatedAt),
	}
	if v.EventTypes == nil {
		v.EventTypes = []string{}
	}
	if v.Headers == nil {
		v.Headers = map[string]string{}
	}
	if v.RetrySchedule == nil {
		v.RetrySchedule = []string{}
	}
	return v
}

// fullView adds the secret and the endpoint's health.
func (a *API) fullView(ctx context.Context, e endpoint) (endpointView, error) {
	v := view(e)
	v.Secret = e.Secret
	h := &healthView{
		DisabledAt:     apitime.FormatPtr(e.DisabledAt),
		DisabledReason: e.DisabledReason,
	}
	// One round trip: the last 100 attempts, the newest one, and the
	// circuit state the dispatchers share (no row: closed).
	var total, succeeded int
	var lastAt *time.Time
	err := a.pool.QueryRow(ctx, `
		WITH last AS (
			SELECT succeeded, status_code, started_at FROM attempts
			WHERE endpoint_id = $1 ORDER BY started_at DESC LIMIT 100
		), newest AS (SELECT status_code, started_at FROM last ORDER BY started_at DESC LIMIT 1)
		SELECT (SELECT count(*) FROM last),
		       (SELECT count(*) FROM last WHERE succeeded),
		       (SELECT status_code FROM newest),
		       (SELECT started_at FROM newest),
		       coalesce((SELECT circuit FROM endpoint_circuits WHERE endpoint_id = $1), 'closed')`, e.ID).
		Scan(&total, &succeeded, &h.LastStatusCode, &lastAt, &h.Circuit)
	if err != nil {
		return v, dbError("read endpoint health", err)
	}
	if total > 0 {
		rate := float64(succeeded) / float64(total)
		h.SuccessRate = &rate
		h.LastAttemptAt = apitime.FormatPtr(lastAt)
	}
	v.Health = h
	return v, nil
}

type attemptView struct {
	DeliveryID   string  `json:"delivery_id"`
	EventID      string  `json:"event_id"`
	Attempt      int     `json:"attempt"`
	StartedAt    string  `json:"started_at"`
	DurationMS   int     `json:"duration_ms"`
	StatusCode   *int    `json:"status_code"`
	Error        *string `json:"error"`
	ResponseBody *string `json:"response_body"`
	Succeeded    bool    `json:"succeeded"`
}

// listAttemptsSQL lists an endpoint's attempts newest first: $3 only
// succeeded or only failed ones, $4 since (inclusive), $5 until
// (exclusive), $6, $7 and $8 the cursor (the last started_at, delivery id
// and attempt returned; $7 and $8 are ignored without $6), $9 the limit.
// The time bounds stay bounds of attempts_endpoint_time (endpoint_id,
// started_at) and prune the day partitions in a generic plan too, which a
// prepared statement gets from its sixth execution on: written as ($6 IS
// NULL OR ...), they were filters there, and each page read every attempt
// of the endpoint newer than itself, in every partition.
const listAttemptsSQL = `
SELECT delivery_id, event_id, attempt, started_at, duration_ms, status_code, error, response_body, succeeded
FROM attempts
WHERE endpoint_id = $1 AND tenant_id = $2
  AND ($3::boolean IS NULL OR succeeded = $3)
  AND started_at >= coalesce($4::timestamptz, '-infinity')
  AND started_at < coalesce($5::timestamptz, 'infinity')
  AND (started_at, delivery_id, attempt) < (coalesce($6::timestamptz, 'infinity'), $7::text, $8::int)
ORDER BY started_at DESC, delivery_id DESC, attempt DESC
LIMIT $9`

// listAttempts lists the endpoint's attempt log, newest first. since is
// inclusive and until exclusive; the cursor holds the last row's start time
// and "delivery_id/attempt".
func (a *API) listAttempts(w http.ResponseWriter, r *http.Request) error {
	tenant, err := a.tenantScope(r)
	if err != nil {
		return err
	}
	e, err := a.loadEndpoint(r.Context(), a.pool, tenant, r.PathValue("id"), false)
	if err != nil {
		return err
	}
	p, err := httpapi.ParseList(r)
	if err != nil {
		return err
	}
	var succeeded *bool
	switch s := r.URL.Query().Get("status"); s {
	case "":
	case "succeeded", "failed":
		b := s == "succeeded"
		succeeded = &b
	default:
		return httpapi.Invalid(httpapi.FieldError{Field: "status", Message: `must be "succeeded" or "failed"`})
	}
	since, err := httpapi.ParseTime(r, "since")
	if err != nil {
		return err
	}
	until, err := httpapi.ParseTime(r, "until")
	if err != nil {
		return err
	}
	var curT *time.Time
	var curDelivery string
	var curAttempt int
	if p.Cursor != nil {
		d, n, ok := strings.Cut(p.Cursor.ID, "/")
		att, aerr := strconv.Atoi(n)
		if !ok || aerr != nil {
			return httpapi.Invalid(httpapi.FieldError{Field: "cursor", Message: "is not a cursor this API returned"})
		}
		t := p.Cursor.Time
		curT, curDelivery, curAttempt = &t, d, att
	}
	rows, err := a.pool.Query(r.Context(), listAttemptsSQL, e.ID, tenant, succeeded, since, until, curT, curDelivery, curAttempt, p.Limit+1)
	if err != nil {
		return dbError("list attempts", err)
	}
	type row struct {
		view attemptView
		at   time.Time
	}
	list, err := pgx.CollectRows(rows, func(cr pgx.CollectableRow) (row, error) {
		var x row
		err := cr.Scan(&x.view.DeliveryID, &x.view.EventID, &x.view.Attempt, &x.at, &x.view.DurationMS,
			&x.view.StatusCode, &x.view.Error, &x.view.ResponseBody, &x.view.Succeeded)
		x.view.StartedAt = apitime.Format(x.at)
		if x.view.StatusCode != nil && *x.view.StatusCode == 0 {
			x.view.StatusCode = nil
		}
		if x.view.Error != nil && *x.view.Error == "" {
			x.view.Error = nil
		}
		return x, err
	})
	if err != nil {
		return dbError("list attempts", err)
	}
	list, next := httpapi.NextPage(list, p.Limit, func(x row) httpapi.Cursor {
		return httpapi.Cursor{Time: x.at, ID: fmt.Sprintf("%s/%d", x.view.DeliveryID, x.view.Attempt)}
	})
	out := httpapi.Page[attemptView]{Data: make([]attemptView, 0, len(list)), NextCursor: next}
	for _, x := range list {
		out.Data = append(out.Data, x.view)
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}
