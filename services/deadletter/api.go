package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/auth"
	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/ids"
)

// Limits of replay requests.
const (
	defaultRate = 50
	// retryAfterSeconds is the Retry-After of a 503.
	retryAfterSeconds = 2
	maxRate           = 10000
	maxIDs            = 1000
	maxBody           = 1 << 20
	// maxAttemptHistory bounds the attempt history of one dead letter.
	maxAttemptHistory = 1000
	// sendTimeout bounds an immediate single-dead-letter replay; when it
	// runs out, the runner finishes the replay.
	sendTimeout = 10 * time.Second
)

// Audit actions.
const (
	actionDiscard      = "dead_letter.discard"
	actionReplayOne    = "dead_letter.replay"
	actionReplayCreate = "replay.create"
	actionReplayCancel = "replay.cancel"
)

// handler is the service's HTTP API, authenticated with the admin token and
// tenant API keys, each request in a server span (see [traced]).
func (s *service) handler(adminToken string) http.Handler {
	mux := http.NewServeMux()
	h := func(f httpapi.HandlerFunc) http.Handler { return httpapi.Handle(s.log, s.unavailable(f)) }
	const base = "/v1/tenants/{tenant}"
	routes := []struct {
		method, path string
		f            httpapi.HandlerFunc
	}{
		{"GET", "/dead-letters", s.listDeadLetters},
		{"GET", "/dead-letters/{id}", s.showDeadLetter},
		{"DELETE", "/dead-letters/{id}", s.discardDeadLetter},
		{"POST", "/dead-letters/{id}/replay", s.replayDeadLetter},
		{"POST", "/replays", s.createReplay},
		{"GET", "/replays", s.listReplays},
		{"GET", "/replays/{id}", s.showReplay},
		{"DELETE", "/replays/{id}", s.cancelReplay},
	}
	allowed := map[string][]string{}
	for _, rt := range routes {
		mux.Handle(rt.method+" "+base+rt.path, h(rt.f))
		allowed[rt.path] = append(allowed[rt.path], rt.method)
	}
	// Without these, the mux would answer a wrong method in plain text.
	for path, methods := range allowed {
		allow := strings.Join(methods, ", ")
		mux.Handle(base+path, h(func(w http.ResponseWriter, _ *http.Request) error {
			w.Header().Set("Allow", allow)
			return httpapi.NewProblem(http.StatusMethodNotAllowed, "method-not-allowed", "allowed methods: "+allow)
		}))
	}
	mux.Handle("/", h(func(_ http.ResponseWriter, r *http.Request) error {
		return httpapi.NotFound("route " + r.URL.Path)
	}))
	return traced(s.tracer, mux, auth.New(adminToken, s.pool).Middleware(mux))
}

// unavailable turns every error of f that is not already a problem into a
// 503 with Retry-After: past validation, what fails here is PostgreSQL or
// JetStream, and the request can be retried once they are back. The cause is
// logged, never shown.
func (s *service) unavailable(f httpapi.HandlerFunc) httpapi.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		err := f(w, r)
		var p *httpapi.Problem
		if err == nil || errors.As(err, &p) {
			return err
		}
		s.log.WarnContext(r.Context(), "request failed; answering 503", "method", r.Method, "path", r.URL.Path, "err", err)
		return httpapi.Unavailable("the dead-letter store is unavailable; retry shortly", retryAfterSeconds)
	}
}

// Reasons are the dead-letter reasons of CONTRACT 2.4, the only values the
// reason filter accepts.
var Reasons = []string{"exhausted", "non_retryable_status", "endpoint_disabled", "endpoint_deleted", "destination_blocked", "expired"}

// maxFilterText bounds a text filter value (ids, event types).
const maxFilterText = 256

// checkText appends a problem with v, a text filter value, to errs: it must
// be UTF-8 without NUL (PostgreSQL stores neither) and not too long.
func checkText(errs []httpapi.FieldError, field, v string) []httpapi.FieldError {
	switch {
	case !utf8.ValidString(v) || strings.ContainsRune(v, 0):
		return append(errs, httpapi.FieldError{Field: field, Message: "must be UTF-8 text without NUL characters"})
	case len(v) > maxFilterText:
		return append(errs, httpapi.FieldError{Field: field, Message: fmt.Sprintf("must be at most %d bytes", maxFilterText)})
	}
	return errs
}

// checkReason appends a problem to errs unless v is empty or a known reason.
func checkReason(errs []httpapi.FieldError, field, v string) []httpapi.FieldError {
	if v == "" || slices.Contains(Reasons, v) {
		return errs
	}
	return append(errs, httpapi.FieldError{Field: field, Message: "must be one of " + strings.Join(Reasons, ", ")})
}

// tenant returns the request's tenant after checking the principal may act in
// it and that it exists.
func (s *service) tenant(r *http.Request) (string, error) {
	ctx := r.Context()
	t := r.PathValue("tenant")
	if err := auth.RequireTenant(ctx, t); err != nil {
		return "", err
	}
	if !auth.From(ctx).Admin {
		return t, nil // a key's tenant exists as long as the key does
	}
	var ok bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)`, t).Scan(&ok); err != nil {
		return "", fmt.Errorf("look up tenant %s: %w", t, err)
	}
	if !ok {
		return "", httpapi.NotFound("tenant " + t)
	}
	return t, nil
}

// filter selects dead letters, for lists and for replays.
type filter struct {
	EndpointID      string     `json:"endpoint_id,omitempty"`
	EventType       string     `json:"event_type,omitempty"`
	Reason          string     `json:"reason,omitempty"`
	Since           *time.Time `json:"since,omitempty"`
	Until           *time.Time `json:"until,omitempty"`
	IDs             []string   `json:"ids,omitempty"`
	IncludeResolved bool       `json:"include_resolved,omitempty"`
}

// query builds a WHERE clause with numbered parameters.
type query struct {
	conds []string
	args  []any
}

// add appends cond, whose "?" stands for v.
func (q *query) add(cond string, v any) {
	q.args = append(q.args, v)
	q.conds = append(q.conds, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(q.args))))
}

// addCursor appends the keyset condition of a newest-first list.
func (q *query) addCursor(timeCol string, c *httpapi.Cursor) {
	if c == nil {
		return
	}
	q.args = append(q.args, c.Time, c.ID)
	n := len(q.args)
	q.conds = append(q.conds, fmt.Sprintf("(%s, id) < ($%d, $%d)", timeCol, n-1, n))
}

func (q *query) where() string { return strings.Join(q.conds, " AND ") }

// argsCustomPlan returns the query's arguments for a query planned with its
// values every time. The best index depends on the values: a reason that
// is 1% of the dead letters and an endpoint that is 40% of them call for
// different plans, and the generic plan PostgreSQL switches a prepared
// statement to after five runs took 220 ms where the custom one takes 3 ms
// at a million rows. pgx's describe-only cache sends an unnamed statement,
// which is always planned with its values.
func (q *query) argsCustomPlan() []any {
	return append([]any{pgx.QueryExecModeCacheDescribe}, q.args...)
}

// deadLetterQuery is the WHERE clause of f inside tenant. Discarded dead
// letters never match.
func deadLetterQuery(tenant string, f filter) *query {
	q := &query{}
	q.add("tenant_id = ?", tenant)
	q.conds = append(q.conds, "discarded_at IS NULL")
	if !f.IncludeResolved {
		q.conds = append(q.conds, "resolved_at IS NULL")
	}
	if f.EndpointID != "" {
		q.add("endpoint_id = ?", f.EndpointID)
	}
	if f.EventType != "" {
		q.add("event_type = ?", f.EventType)
	}
	if f.Reason != "" {
		q.add("reason = ?", f.Reason)
	}
	if f.Since != nil {
		q.add("dead_at >= ?", *f.Since)
	}
	if f.Until != nil {
		q.add("dead_at < ?", *f.Until)
	}
	if len(f.IDs) > 0 {
		q.add("id = ANY(?)", f.IDs)
	}
	return q
}

// deadLetterJSON is a dead letter as the API shows it.
type deadLetterJSON struct {
	ID             string  `json:"id"`
	EventID        string  `json:"event_id"`
	EndpointID     string  `json:"endpoint_id"`
	EventType      string  `json:"event_type"`
	OrderingKey    *string `json:"ordering_key"`
	Reason         string  `json:"reason"`
	Attempts       int     `json:"attempts"`
	LastStatusCode *int    `json:"last_status_code"`
	LastError      *string `json:"last_error"`
	DeadAt         string  `json:"dead_at"`
	Replays        int     `json:"replays"`
	ResolvedAt     *string `json:"resolved_at"`

	deadAt time.Time
}

const deadLetterCols = `id, event_id, endpoint_id, event_type, ordering_key, reason, attempts,
       last_status_code, last_error, dead_at, replays, resolved_at`

func scanDeadLetter(row pgx.Row) (deadLetterJSON, error) {
	var d deadLetterJSON
	var resolved *time.Time
	err := row.Scan(&d.ID, &d.EventID, &d.EndpointID, &d.EventType, &d.OrderingKey, &d.Reason, &d.Attempts,
		&d.LastStatusCode, &d.LastError, &d.deadAt, &d.Replays, &resolved)
	d.DeadAt = apitime.Format(d.deadAt)
	d.ResolvedAt = apitime.FormatPtr(resolved)
	return d, err
}

func (s *service) listDeadLetters(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenant(r)
	if err != nil {
		return err
	}
	p, perr := httpapi.ParseList(r)
	f, err := parseListFilter(r)
	if err = joinInvalid(perr, err); err != nil {
		return err
	}
	sql, args := listSQL(tenant, f, p.Cursor, p.Limit+1)
	rows, err := s.pool.Query(r.Context(), sql, args...)
	if err != nil {
		return fmt.Errorf("list dead letters: %w", err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (deadLetterJSON, error) { return scanDeadLetter(row) })
	if err != nil {
		return fmt.Errorf("list dead letters: %w", err)
	}
	data, next := httpapi.NextPage(items, p.Limit, func(d deadLetterJSON) httpapi.Cursor {
		return httpapi.Cursor{Time: d.deadAt, ID: d.ID}
	})
	httpapi.WriteJSON(w, http.StatusOK, httpapi.Page[deadLetterJSON]{Data: data, NextCursor: next})
	return nil
}

// parseListFilter reads the filter of GET /dead-letters, reporting every
// malformed parameter at once.
func parseListFilter(r *http.Request) (filter, error) {
	qv := r.URL.Query()
	f := filter{EndpointID: qv.Get("endpoint_id"), EventType: qv.Get("event_type"), Reason: qv.Get("reason")}
	var errs []httpapi.FieldError
	errs = checkText(errs, "endpoint_id", f.EndpointID)
	errs = checkText(errs, "event_type", f.EventType)
	errs = checkReason(errs, "reason", f.Reason)
	collect := func(err error) {
		var p *httpapi.Problem
		if errors.As(err, &p) {
			errs = append(errs, p.Errors...)
		}
	}
	var err error
	f.Since, err = httpapi.ParseTime(r, "since")
	collect(err)
	f.Until, err = httpapi.ParseTime(r, "until")
	collect(err)
	f.IncludeResolved, err = httpapi.ParseBool(r, "include_resolved")
	collect(err)
	if len(errs) > 0 {
		return f, httpapi.Invalid(errs...)
	}
	return f, nil
}

// joinInvalid merges validation problems into one 422 naming every field;
// any other error is returned as it is.
func joinInvalid(errs ...error) error {
	var fields []httpapi.FieldError
	for _, err := range errs {
		if err == nil {
			continue
		}
		var p *httpapi.Problem
		if !errors.As(err, &p) || p.Status != http.StatusUnprocessableEntity {
			return err
		}
		fields = append(fields, p.Errors...)
	}
	if len(fields) == 0 {
		return nil
	}
	return httpapi.Invalid(fields...)
}

// listSQL is the query of one page of dead letters, newest first, and its
// arguments. Every filter combination is served by one of the
// dead_letters_* indexes (see scale_test.go for the plans at a million rows).
func listSQL(tenant string, f filter, c *httpapi.Cursor, limit int) (string, []any) {
	q := deadLetterQuery(tenant, f)
	q.addCursor("dead_at", c)
	return `SELECT ` + deadLetterCols + ` FROM dead_letters WHERE ` + q.where() +
		` ORDER BY dead_at DESC, id DESC LIMIT ` + strconv.Itoa(limit), q.argsCustomPlan()
}

// attemptJSON is an attempt-log entry (CONTRACT 2.2).
type attemptJSON struct {
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

type deadLetterDetail struct {
	deadLetterJSON
	Data           json.RawMessage `json:"data"`
	AttemptHistory []attemptJSON   `json:"attempt_history"`
}

func (s *service) showDeadLetter(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenant(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	id := r.PathValue("id")
	d, err := scanDeadLetter(s.pool.QueryRow(ctx,
		`SELECT `+deadLetterCols+` FROM dead_letters WHERE tenant_id = $1 AND id = $2 AND discarded_at IS NULL`, tenant, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return httpapi.NotFound("dead letter " + id)
	}
	if err != nil {
		return fmt.Errorf("load dead letter %s: %w", id, err)
	}
	out := deadLetterDetail{deadLetterJSON: d, AttemptHistory: []attemptJSON{}}
	var data *string
	err = s.pool.QueryRow(ctx, `SELECT data::text FROM events WHERE tenant_id = $1 AND id = $2`, tenant, d.EventID).Scan(&data)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("load event %s: %w", d.EventID, err)
	}
	if data != nil {
		out.Data = json.RawMessage(*data)
	}
	// Every attempt at this event to this endpoint, the first delivery's and
	// every replay's, newest first as in the attempt log (CONTRACT 2.2).
	rows, err := s.pool.Query(ctx, `
SELECT delivery_id, event_id, attempt, started_at, duration_ms, status_code, error, response_body, succeeded
  FROM attempts
 WHERE tenant_id = $1 AND event_id = $2 AND endpoint_id = $3
 ORDER BY started_at DESC, delivery_id DESC, attempt DESC
 LIMIT $4`, tenant, d.EventID, d.EndpointID, maxAttemptHistory)
	if err != nil {
		return fmt.Errorf("load attempts of %s: %w", id, err)
	}
	out.AttemptHistory, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (attemptJSON, error) {
		var a attemptJSON
		var started time.Time
		err := row.Scan(&a.DeliveryID, &a.EventID, &a.Attempt, &started, &a.DurationMS, &a.StatusCode, &a.Error, &a.ResponseBody, &a.Succeeded)
		a.StartedAt = apitime.Format(started)
		// Absent is null, never 0 or "" (CONTRACT 2).
		if a.StatusCode != nil && *a.StatusCode == 0 {
			a.StatusCode = nil
		}
		if a.Error != nil && *a.Error == "" {
			a.Error = nil
		}
		return a, err
	})
	if err != nil {
		return fmt.Errorf("load attempts of %s: %w", id, err)
	}
	if out.AttemptHistory == nil {
		out.AttemptHistory = []attemptJSON{}
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *service) discardDeadLetter(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenant(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	id := r.PathValue("id")
	who := auth.From(ctx).Who()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
UPDATE dead_letters SET discarded_at = now(), discarded_by = $3
 WHERE tenant_id = $1 AND id = $2 AND discarded_at IS NULL`, tenant, id, who)
		if err != nil {
			return fmt.Errorf("discard dead letter %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return httpapi.NotFound("dead letter " + id)
		}
		return audit(ctx, tx, tenant, who, actionDiscard, id)
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// audit records who did what.
func audit(ctx context.Context, tx pgx.Tx, tenant, actor, action, target string) error {
	if _, err := tx.Exec(ctx, `INSERT INTO audit_log (tenant_id, actor, action, target) VALUES ($1, $2, $3, $4)`,
		tenant, actor, action, target); err != nil {
		return fmt.Errorf("write audit record: %w", err)
	}
	return nil
}

func (s *service) replayDeadLetter(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenant(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	id := r.PathValue("id")
	who := auth.From(ctx).Who()
	f := filter{IDs: []string{id}, IncludeResolved: true}
	var rep replayRef
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var ok bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM dead_letters WHERE tenant_id = $1 AND id = $2 AND discarded_at IS NULL)`,
			tenant, id).Scan(&ok); err != nil {
			return fmt.Errorf("look up dead letter %s: %w", id, err)
		}
		if !ok {
			return httpapi.NotFound("dead letter " + id)
		}
		var err error
		rep, _, err = insertReplay(ctx, tx, tenant, who, f, defaultRate)
		if err != nil {
			return err
		}
		return audit(ctx, tx, tenant, who, actionReplayOne, id)
	})
	if err != nil {
		return err
	}
	// Send at once; if that fails, the replay stays running and the runner
	// sends it.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sendTimeout)
	defer cancel()
	if err := s.runner.process(sctx, rep); err != nil {
		s.log.WarnContext(ctx, "replay dead letter; the runner will retry", "dead_letter_id", id, "replay_id", rep.id, "err", err)
	}
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]string{"replay_id": rep.id})
	return nil
}

// insertReplay creates a running replay of the dead letters f matches and
// returns it with the number matched. A replay matching nothing is done at
// once.
func insertReplay(ctx context.Context, tx pgx.Tx, tenant, who string, f filter, rate int) (replayRef, int, error) {
	rep := replayRef{id: ids.New(ids.Replay), tenant: tenant, rate: rate}
	fj, err := json.Marshal(f)
	if err != nil {
		return rep, 0, fmt.Errorf("encode filter: %w", err)
	}
	if _, err := tx.Exec(ctx, `
INSERT INTO replays (id, tenant_id, filter, rate_per_second, created_by, created_at)
VALUES ($1, $2, $3, $4, $5, $6)`, rep.id, tenant, fj, rate, who, apitime.Now()); err != nil {
		return rep, 0, fmt.Errorf("create replay: %w", err)
	}
	q := deadLetterQuery(tenant, f)
	q.args = append(q.args, rep.id)
	tag, err := tx.Exec(ctx, `
INSERT INTO replay_items (replay_id, dead_letter_id)
SELECT $`+strconv.Itoa(len(q.args))+`, id FROM dead_letters WHERE `+q.where(), q.argsCustomPlan()...)
	if err != nil {
		return rep, 0, fmt.Errorf("select dead letters to replay: %w", err)
	}
	matched := int(tag.RowsAffected())
	if _, err := tx.Exec(ctx, `
UPDATE replays SET matched = $2,
       state = CASE WHEN $2 = 0 THEN 'done' ELSE state END,
       finished_at = CASE WHEN $2 = 0 THEN now() END
 WHERE id = $1`, rep.id, matched); err != nil {
		return rep, 0, fmt.Errorf("count replay %s: %w", rep.id, err)
	}
	return rep, matched, nil
}

// replayRequest is the body of POST /replays.
type replayRequest struct {
	Filter struct {
		EndpointID      string   `json:"endpoint_id"`
		EventType       string   `json:"event_type"`
		Reason          string   `json:"reason"`
		Since           *string  `json:"since"`
		Until           *string  `json:"until"`
		IDs             []string `json:"ids"`
		IncludeResolved bool     `json:"include_resolved"`
	} `json:"filter"`
	RatePerSecond *int `json:"rate_per_second"`
	DryRun        bool `json:"dry_run"`
}

func (req *replayRequest) validate() (filter, int, error) {
	var errs []httpapi.FieldError
	f := filter{
		EndpointID:      req.Filter.EndpointID,
		EventType:       req.Filter.EventType,
		Reason:          req.Filter.Reason,
		IDs:             req.Filter.IDs,
		IncludeResolved: req.Filter.IncludeResolved,
	}
	parseTime := func(field string, v *string) *time.Time {
		if v == nil || *v == "" {
			return nil
		}
		t, err := time.Parse(time.RFC3339Nano, *v)
		if err != nil {
			errs = append(errs, httpapi.FieldError{Field: field, Message: "must be an RFC 3339 time such as 2026-11-22T10:00:00Z"})
			return nil
		}
		t = t.UTC()
		return &t
	}
	f.Since = parseTime("filter.since", req.Filter.Since)
	f.Until = parseTime("filter.until", req.Filter.Until)
	errs = checkText(errs, "filter.endpoint_id", f.EndpointID)
	errs = checkText(errs, "filter.event_type", f.EventType)
	errs = checkReason(errs, "filter.reason", f.Reason)
	if len(f.IDs) > maxIDs {
		errs = append(errs, httpapi.FieldError{Field: "filter.ids", Message: fmt.Sprintf("at most %d ids", maxIDs)})
	}
	for i, id := range f.IDs {
		if id == "" {
			errs = append(errs, httpapi.FieldError{Field: fmt.Sprintf("filter.ids[%d]", i), Message: "must not be empty"})
			continue
		}
		errs = checkText(errs, fmt.Sprintf("filter.ids[%d]", i), id)
	}
	rate := defaultRate
	if req.RatePerSecond != nil {
		rate = *req.RatePerSecond
		if rate < 1 || rate > maxRate {
			errs = append(errs, httpapi.FieldError{Field: "rate_per_second", Message: fmt.Sprintf("must be between 1 and %d", maxRate)})
		}
	}
	if len(errs) > 0 {
		return f, 0, httpapi.Invalid(errs...)
	}
	return f, rate, nil
}

func (s *service) createReplay(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenant(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	body, err := httpapi.ReadBody(r, maxBody)
	if err != nil {
		return err
	}
	var req replayRequest
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := httpapi.DecodeJSON(body, &req); err != nil {
			return err
		}
	}
	f, rate, err := req.validate()
	if err != nil {
		return err
	}
	if req.DryRun {
		q := deadLetterQuery(tenant, f)
		var n int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters WHERE `+q.where(), q.argsCustomPlan()...).Scan(&n); err != nil {
			return fmt.Errorf("count dead letters: %w", err)
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]int{"matched": n})
		return nil
	}
	who := auth.From(ctx).Who()
	var rep replayRef
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if rep, _, err = insertReplay(ctx, tx, tenant, who, f, rate); err != nil {
			return err
		}
		return audit(ctx, tx, tenant, who, actionReplayCreate, rep.id)
	})
	if err != nil {
		return err
	}
	s.runner.wakeUp()
	out, err := s.loadReplay(ctx, tenant, rep.id)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusAccepted, out)
	return nil
}

// replayJSON is a replay as the API shows it.
type replayJSON struct {
	ID            string          `json:"id"`
	State         string          `json:"state"`
	Matched       int             `json:"matched"`
	Replayed      int             `json:"replayed"`
	Succeeded     int             `json:"succeeded"`
	Failed        int             `json:"failed"`
	Filter        json.RawMessage `json:"filter"`
	RatePerSecond int             `json:"rate_per_second"`
	CreatedBy     string          `json:"created_by"`
	CreatedAt     string          `json:"created_at"`
	FinishedAt    *string         `json:"finished_at"`

	createdAt time.Time
}

// succeeded and failed count the deliveries the replay's items queued (or,
// for an item whose dead letter already had a replay on its way, joined) by
// the first of succeeded or dead each reached, so they keep counting after
// the replay is done: the items settled so far (see settleSQL), kept on the
// replay, plus those not settled yet whose delivery has got there since. A
// read looks up only the unsettled items' deliveries, so it costs what is
// still on its way, not the whole replay (joining a million items to their
// deliveries on every read took 1.3 s).
const replayCols = `r.id, r.state, r.matched, r.replayed, r.succeeded + c.succeeded, r.failed + c.failed,
       r.filter::text, r.rate_per_second, r.created_by, r.created_at, r.finished_at`

// replayFrom is the FROM clause that replayCols needs. Each unsettled
// item's delivery is looked up by its key (a subquery per item, which the
// planner cannot turn into a join): a join could be planned as a scan of
// all deliveries whenever the statistics, taken before the items settled,
// promise many. OFFSET 0 keeps u a subquery of its own, so that the lookup
// runs once per item rather than once per count.
const replayFrom = ` FROM replays r CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE u.status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE u.status = 'dead') AS failed
      FROM (SELECT (SELECT dv.status FROM deliveries dv WHERE dv.id = ri.delivery_id) AS status
              FROM replay_items ri
             WHERE ri.replay_id = r.id AND ri.delivery_id IS NOT NULL AND ri.outcome IS NULL
            OFFSET 0) u) c`

func scanReplay(row pgx.Row) (replayJSON, error) {
	var rp replayJSON
	var fj string
	var finished *time.Time
	err := row.Scan(&rp.ID, &rp.State, &rp.Matched, &rp.Replayed, &rp.Succeeded, &rp.Failed, &fj, &rp.RatePerSecond,
		&rp.CreatedBy, &rp.createdAt, &finished)
	rp.Filter = json.RawMessage(fj)
	rp.CreatedAt = apitime.Format(rp.createdAt)
	rp.FinishedAt = apitime.FormatPtr(finished)
	return rp, err
}

func (s *service) loadReplay(ctx context.Context, tenant, id string) (replayJSON, error) {
	rp, err := scanReplay(s.pool.QueryRow(ctx, `SELECT `+replayCols+replayFrom+` WHERE r.tenant_id = $1 AND r.id = $2`, tenant, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return rp, httpapi.NotFound("replay " + id)
	}
	if err != nil {
		return rp, fmt.Errorf("load replay %s: %w", id, err)
	}
	return rp, nil
}

func (s *service) showReplay(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenant(r)
	if err != nil {
		return err
	}
	rp, err := s.loadReplay(r.Context(), tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, rp)
	return nil
}

func (s *service) listReplays(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenant(r)
	if err != nil {
		return err
	}
	p, err := httpapi.ParseList(r)
	if err != nil {
		return err
	}
	q := &query{}
	q.add("r.tenant_id = ?", tenant)
	if p.Cursor != nil {
		q.args = append(q.args, p.Cursor.Time, p.Cursor.ID)
		q.conds = append(q.conds, fmt.Sprintf("(r.created_at, r.id) < ($%d, $%d)", len(q.args)-1, len(q.args)))
	}
	rows, err := s.pool.Query(r.Context(), `SELECT `+replayCols+replayFrom+` WHERE `+q.where()+
		` ORDER BY r.created_at DESC, r.id DESC LIMIT `+strconv.Itoa(p.Limit+1), q.args...)
	if err != nil {
		return fmt.Errorf("list replays: %w", err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (replayJSON, error) { return scanReplay(row) })
	if err != nil {
		return fmt.Errorf("list replays: %w", err)
	}
	data, next := httpapi.NextPage(items, p.Limit, func(rp replayJSON) httpapi.Cursor {
		return httpapi.Cursor{Time: rp.createdAt, ID: rp.ID}
	})
	httpapi.WriteJSON(w, http.StatusOK, httpapi.Page[replayJSON]{Data: data, NextCursor: next})
	return nil
}

// cancelReplay stops a running replay; a finished one is shown unchanged.
// Waiting for the row lock means no item is sent after the answer.
func (s *service) cancelReplay(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenant(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	id := r.PathValue("id")
	who := auth.From(ctx).Who()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
UPDATE replays SET state = 'cancelled', finished_at = now()
 WHERE tenant_id = $1 AND id = $2 AND state = 'running'`, tenant, id)
		if err != nil {
			return fmt.Errorf("cancel replay %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		return audit(ctx, tx, tenant, who, actionReplayCancel, id)
	})
	if err != nil {
		return err
	}
	rp, err := s.loadReplay(ctx, tenant, id)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, rp)
	return nil
}
