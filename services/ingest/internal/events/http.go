package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/auth"
	"github.com/hookline/hookline/pkg/eventtype"
	"github.com/hookline/hookline/pkg/httpapi"
)

// envelopeBytes is what a request body may hold besides the event data.
const envelopeBytes = 64 << 10

// Register adds the event routes to mux, which must already be wrapped by
// [auth.Authenticator.Middleware].
func (s *Service) Register(mux interface {
	Handle(pattern string, h http.Handler)
}) {
	mux.Handle("POST /v1/tenants/{tenant}/events", s.handle(s.handleCreate))
	mux.Handle("POST /v1/tenants/{tenant}/events/batch", s.handle(s.handleBatch))
	mux.Handle("GET /v1/tenants/{tenant}/events", s.handle(s.handleList))
	mux.Handle("GET /v1/tenants/{tenant}/events/{id}", s.handle(s.handleGet))
	mux.Handle("GET /v1/rejected-events", s.handle(s.handleRejected))
}

// handle adapts h, answering 503 rather than 500 when the database could
// not be reached (a connection or timeout error, not an SQL error).
func (s *Service) handle(h httpapi.HandlerFunc) http.Handler {
	return httpapi.Handle(s.log, func(w http.ResponseWriter, r *http.Request) error {
		err := h(w, r)
		var p *httpapi.Problem
		var pgErr *pgconn.PgError
		if err == nil || errors.As(err, &p) || errors.As(err, &pgErr) {
			return err
		}
		s.log.WarnContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		return httpapi.Unavailable("the database is unreachable; retry shortly", retryAfter)
	})
}

// tenant authorises the request for the path's tenant and checks that the
// tenant exists.
func (s *Service) tenant(r *http.Request) (string, error) {
	tenant := r.PathValue("tenant")
	if err := auth.RequireTenant(r.Context(), tenant); err != nil {
		return "", err
	}
	if p := auth.From(r.Context()); !p.Admin && p.TenantID == tenant {
		// The request's API key was just found in api_keys, whose rows are
		// deleted with their tenant: the tenant exists, as surely as a
		// lookup here would say.
		return tenant, nil
	}
	var exists bool
	err := s.pool.QueryRow(r.Context(), `SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)`, tenant).Scan(&exists)
	if err != nil {
		return "", unavailable("the database is unreachable", fmt.Errorf("look up tenant %s: %w", tenant, err))
	}
	if !exists {
		return "", httpapi.NotFound("tenant " + tenant)
	}
	return tenant, nil
}

// eventRequest is the body of POST /events and one item of a batch.
type eventRequest struct {
	Type        *string         `json:"type"`
	Data        json.RawMessage `json:"data"`
	ID          *string         `json:"id"`
	OrderingKey *string         `json:"ordering_key"`
}

// decodeEvent strictly decodes one event request into an Input without its
// tenant. Field validation is [Service.Accept]'s. valid says body is known
// to be valid JSON.
func decodeEvent(body []byte, valid bool) (Input, error) {
	if valid || validJSON(body) {
		if in, ok := fastEvent(body); ok {
			return in, nil
		}
	}
	return strictEvent(body)
}

// strictEvent is decodeEvent with encoding/json.
func strictEvent(body []byte) (Input, error) {
	var req eventRequest
	if err := httpapi.DecodeJSON(body, &req); err != nil {
		return Input{}, err
	}
	var in Input
	if req.Type != nil {
		in.Type = *req.Type
	}
	// The decoder took data as one complete JSON value.
	in.Data, in.jsonChecked = req.Data, len(req.Data) > 0
	if req.ID != nil {
		if *req.ID == "" {
			return Input{}, httpapi.Invalid(httpapi.FieldError{Field: "id", Message: "must match [A-Za-z0-9_-]{1,64}; omit it to have one generated"})
		}
		in.ID = *req.ID
	}
	if req.OrderingKey != nil {
		in.OrderingKey = *req.OrderingKey
	}
	return in, nil
}

// readBody is httpapi.ReadBody reading a body of announced length into one
// buffer of that size, instead of a growing one.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	n := r.ContentLength
	if n <= 0 || n > limit {
		return httpapi.ReadBody(r, limit)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		return nil, httpapi.BadRequest("reading the request body: " + err.Error())
	}
	return body, nil
}

type acceptedJSON struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	AcceptedAt string `json:"accepted_at"`
	Duplicate  bool   `json:"duplicate"`
}

func acceptedOf(r Result) acceptedJSON {
	return acceptedJSON{ID: r.ID, Type: r.Type, AcceptedAt: apitime.Format(r.AcceptedAt), Duplicate: r.Duplicate}
}

func (s *Service) handleCreate(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenant(r)
	if err != nil {
		return err
	}
	body, err := readBody(r, s.cfg.MaxEventBytes+envelopeBytes)
	if err != nil {
		return err
	}
	in, err := decodeEvent(body, false)
	if err != nil {
		return err
	}
	in.TenantID = tenant
	in.IdempotencyKey = r.Header.Get("Idempotency-Key")
	in.Source = "http"
	res, err := s.Accept(r.Context(), in)
	if err != nil {
		return s.logUnavailable(r.Context(), err)
	}
	httpapi.WriteJSON(w, http.StatusAccepted, acceptedOf(res))
	return nil
}

// logUnavailable logs the cause of a 503, which the problem does not show.
func (s *Service) logUnavailable(ctx context.Context, err error) error {
	var p *httpapi.Problem
	if errors.As(err, &p) && p.Status == http.StatusServiceUnavailable {
		s.log.WarnContext(ctx, "event not accepted", "err", err)
	}
	return err
}

type batchItemError struct {
	Error *httpapi.Problem `json:"error"`
}

func (s *Service) handleBatch(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenant(r)
	if err != nil {
		return err
	}
	limit := max(10*s.cfg.MaxEventBytes, 16<<20) + envelopeBytes
	body, err := readBody(r, limit)
	if err != nil {
		return err
	}
	valid := validJSON(body)
	var req struct {
		Events []json.RawMessage `json:"events"`
	}
	var raw [][]byte
	ok := false
	if valid {
		raw, ok = fastBatch(body)
	}
	if ok {
		req.Events = make([]json.RawMessage, len(raw))
		for i, r := range raw {
			req.Events[i] = r
		}
	} else if err := httpapi.DecodeJSON(body, &req); err != nil {
		return err
	}
	switch {
	case req.Events == nil:
		return httpapi.Invalid(httpapi.FieldError{Field: "events", Message: "is required (an array of events)"})
	case len(req.Events) > MaxBatch:
		return httpapi.Invalid(httpapi.FieldError{Field: "events", Message: fmt.Sprintf("must hold at most %d events", MaxBatch)})
	}

	results := make([]any, len(req.Events))
	var ins []Input
	var at []int // at[j]: the item of ins[j]
	for i, raw := range req.Events {
		in, err := decodeEvent(raw, valid)
		if err != nil {
			results[i] = batchItemError{Error: s.problemOf(r, err)}
			continue
		}
		in.TenantID = tenant
		in.Source = "http"
		ins = append(ins, in)
		at = append(at, i)
	}
	outs := s.acceptAll(r.Context(), ins)
	var unavailableErr error
	accepted := 0
	for j, o := range outs {
		if o.err != nil {
			p := s.problemOf(r, o.err)
			if p.Status == http.StatusServiceUnavailable {
				unavailableErr = o.err
			}
			results[at[j]] = batchItemError{Error: p}
			continue
		}
		accepted++
		results[at[j]] = acceptedOf(o.res)
	}
	if accepted == 0 && unavailableErr != nil {
		// Nothing could be made durable: tell the producer to retry it all.
		return s.logUnavailable(r.Context(), unavailableErr)
	}
	if unavailableErr != nil {
		s.log.WarnContext(r.Context(), "batch events not accepted", "err", unavailableErr, "tenant_id", tenant)
	}
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]any{"results": results})
	return nil
}

// problemOf returns err's problem; anything else is logged and shown as a 500.
func (s *Service) problemOf(r *http.Request, err error) *httpapi.Problem {
	var p *httpapi.Problem
	if errors.As(err, &p) {
		return p
	}
	s.log.ErrorContext(r.Context(), "batch item failed", "err", err)
	return httpapi.NewProblem(http.StatusInternalServerError, "internal", "internal error; see the service log")
}

type deliveryJSON struct {
	EndpointID     string  `json:"endpoint_id"`
	Status         string  `json:"status"`
	Attempts       int     `json:"attempts"`
	LastStatusCode *int    `json:"last_status_code"`
	LastError      *string `json:"last_error"`
	DeliveredAt    *string `json:"delivered_at"`
}

type eventJSON struct {
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	Data        json.RawMessage `json:"data"`
	OrderingKey *string         `json:"ordering_key"`
	AcceptedAt  string          `json:"accepted_at"`
	Deliveries  *[]deliveryJSON `json:"deliveries,omitempty"`

	acceptedAt time.Time
}

func (s *Service) handleGet(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenant(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	ctx := r.Context()
	var ev eventJSON
	var data string
	err = s.pool.QueryRow(ctx, `
SELECT id, type, data::text, ordering_key, accepted_at FROM events WHERE tenant_id = $1 AND id = $2`,
		tenant, id).Scan(&ev.ID, &ev.Type, &data, &ev.OrderingKey, &ev.acceptedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return httpapi.NotFound("event " + id)
	}
	if err != nil {
		return fmt.Errorf("get event %s: %w", id, err)
	}
	ev.Data = json.RawMessage(data)
	ev.AcceptedAt = apitime.Format(ev.acceptedAt)

	rows, err := s.pool.Query(ctx, `
SELECT DISTINCT ON (endpoint_id) endpoint_id, status, attempts, last_status_code, last_error, delivered_at
FROM deliveries
WHERE tenant_id = $1 AND event_id = $2
ORDER BY endpoint_id, created_at DESC, id DESC`, tenant, id)
	if err != nil {
		return fmt.Errorf("list deliveries of event %s: %w", id, err)
	}
	deliveries := []deliveryJSON{}
	for rows.Next() {
		var d deliveryJSON
		var at *time.Time
		if err := rows.Scan(&d.EndpointID, &d.Status, &d.Attempts, &d.LastStatusCode, &d.LastError, &at); err != nil {
			rows.Close()
			return fmt.Errorf("read deliveries of event %s: %w", id, err)
		}
		d.DeliveredAt = apitime.FormatPtr(at)
		deliveries = append(deliveries, d)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read deliveries of event %s: %w", id, err)
	}
	ev.Deliveries = &deliveries
	httpapi.WriteJSON(w, http.StatusOK, ev)
	return nil
}

func (s *Service) handleList(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenant(r)
	if err != nil {
		return err
	}
	lp, err := httpapi.ParseList(r)
	if err != nil {
		return err
	}
	since, err := httpapi.ParseTime(r, "since")
	if err != nil {
		return err
	}
	until, err := httpapi.ParseTime(r, "until")
	if err != nil {
		return err
	}
	var typ *string
	if v := r.URL.Query().Get("type"); v != "" {
		if !eventtype.Valid(v) {
			return httpapi.Invalid(httpapi.FieldError{Field: "type", Message: "must be an event type such as order.created"})
		}
		typ = &v
	}
	var curTime *time.Time
	var curID *string
	if lp.Cursor != nil {
		curTime, curID = &lp.Cursor.Time, &lp.Cursor.ID
	}
	query, args := listEventsSQL, []any{tenant, since, until, curTime, curID, lp.Limit + 1}
	if typ != nil {
		query, args = listEventsOfTypeSQL, append(args, *typ)
	}
	rows, err := s.pool.Query(r.Context(), query, args...)
	if err != nil {
		return fmt.Errorf("list events: %w", err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (eventJSON, error) {
		var ev eventJSON
		var data string
		err := row.Scan(&ev.ID, &ev.Type, &data, &ev.OrderingKey, &ev.acceptedAt)
		ev.Data = json.RawMessage(data)
		ev.AcceptedAt = apitime.Format(ev.acceptedAt)
		return ev, err
	})
	if err != nil {
		return fmt.Errorf("list events: %w", err)
	}
	page, next := httpapi.NextPage(items, lp.Limit, func(ev eventJSON) httpapi.Cursor {
		return httpapi.Cursor{Time: ev.acceptedAt, ID: ev.ID}
	})
	httpapi.WriteJSON(w, http.StatusOK, httpapi.Page[eventJSON]{Data: page, NextCursor: next})
	return nil
}

// listEventsSQL lists a tenant's events newest first: $2 since
// (inclusive), $3 until (exclusive), $4 and $5 the cursor (the last
// accepted_at and id returned), $6 the limit; each may be null but the
// tenant and the limit. Every bound is a range on events_tenant_time
// (tenant_id, accepted_at, id), written so that it stays one in a generic
// plan, which a prepared statement gets from its sixth execution on: as ($4
// IS NULL OR (accepted_at, id) < ($4, $5)) the cursor was a filter there,
// and each page read every event newer than itself again (a tenant's
// millionth event a million rows deep). listEventsOfTypeSQL adds type = $7,
// on events_tenant_type_time.
const (
	listEventsSQL = `
SELECT id, type, data::text, ordering_key, accepted_at FROM events
WHERE tenant_id = $1` + eventBoundsSQL
	listEventsOfTypeSQL = `
SELECT id, type, data::text, ordering_key, accepted_at FROM events
WHERE tenant_id = $1 AND type = $7` + eventBoundsSQL
	eventBoundsSQL = `
  AND accepted_at >= coalesce($2::timestamptz, '-infinity')
  AND accepted_at < coalesce($3::timestamptz, 'infinity')
  AND (accepted_at, id) < (coalesce($4::timestamptz, 'infinity'), coalesce($5::text, ''))
ORDER BY accepted_at DESC, id DESC
LIMIT $6`
)

type rejectedJSON struct {
	ID         string  `json:"id"`
	TenantID   *string `json:"tenant_id"`
	Subject    string  `json:"subject"`
	EventType  *string `json:"event_type"`
	EventID    *string `json:"event_id"`
	Reason     string  `json:"reason"`
	Detail     string  `json:"detail"`
	SizeBytes  int     `json:"size_bytes"`
	ReceivedAt string  `json:"received_at"`

	receivedAt time.Time
}

// handleRejected lists NATS messages that failed validation, newest first
// (admin only), optionally filtered by tenant and reason.
func (s *Service) handleRejected(w http.ResponseWriter, r *http.Request) error {
	if err := auth.RequireAdmin(r.Context()); err != nil {
		return err
	}
	lp, err := httpapi.ParseList(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	tenant, reason := nullIfEmpty(q.Get("tenant_id")), nullIfEmpty(q.Get("reason"))
	var curTime *time.Time
	var curID *string
	if lp.Cursor != nil {
		curTime, curID = &lp.Cursor.Time, &lp.Cursor.ID
	}
	rows, err := s.pool.Query(r.Context(), `
SELECT id, tenant_id, subject, event_type, event_id, reason, detail, size_bytes, received_at
FROM rejected_events
WHERE ($1::text IS NULL OR tenant_id = $1)
  AND ($2::text IS NULL OR reason = $2)
  AND (received_at, id) < (coalesce($3::timestamptz, 'infinity'), coalesce($4::text, ''))
ORDER BY received_at DESC, id DESC
LIMIT $5`, tenant, reason, curTime, curID, lp.Limit+1)
	if err != nil {
		return fmt.Errorf("list rejected events: %w", err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (rejectedJSON, error) {
		var e rejectedJSON
		err := row.Scan(&e.ID, &e.TenantID, &e.Subject, &e.EventType, &e.EventID, &e.Reason, &e.Detail, &e.SizeBytes, &e.receivedAt)
		e.ReceivedAt = apitime.Format(e.receivedAt)
		return e, err
	})
	if err != nil {
		return fmt.Errorf("list rejected events: %w", err)
	}
	page, next := httpapi.NextPage(items, lp.Limit, func(e rejectedJSON) httpapi.Cursor {
		return httpapi.Cursor{Time: e.receivedAt, ID: e.ID}
	})
	httpapi.WriteJSON(w, http.StatusOK, httpapi.Page[rejectedJSON]{Data: page, NextCursor: next})
	return nil
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
