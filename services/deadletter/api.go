package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/auth"
	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/ids"
)

// Limits of replay requests.
const (
	defaultRate = 50
	maxRate     = 10000
	maxIDs      = 1000
	maxBody     = 1 << 20
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
// tenant API keys.
func (s *service) handler(adminToken string) http.Handler {
	mux := http.NewServeMux()
	h := func(f httpapi.HandlerFunc) http.Handler { return httpapi.Handle(s.log, f) }
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
	return auth.New(adminToken, s.pool).Middleware(mux)
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
	p, err := httpapi.ParseList(r)
	if err != nil {
		return err
	}
	qv := r.URL.Query()
	f := filter{EndpointID: qv.Get("endpoint_id"), EventType: qv.Get("event_type"), Reason: qv.Get("reason")}
	if f.Since, err = httpapi.ParseTime(r, "since"); err != nil {
		return err
	}
	if f.Until, err = httpapi.ParseTime(r, "until"); err != nil {
		return err
	}
	if f.IncludeResolved, err = httpapi.ParseBool(r, "include_resolved"); err != nil {
		return err
	}
	q := deadLetterQuery(tenant, f)
	q.addCursor("dead_at", p.Cursor)
	rows, err := s.pool.Query(r.Context(),
		`SELECT `+deadLetterCols+` FROM dead_letters WHERE `+q.where()+
			` ORDER BY dead_at DESC, id DESC LIMIT `+strconv.Itoa(p.Limit+1), q.args...)
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

// attemptJSON is an attempt-log entry (CONTRACT 2.2).
type attemptJSON struct {
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
	rows, err := s.pool.Query(ctx, `
SELECT event_id, attempt, started_at, duration_ms, status_code, error, response_body, succeeded
  FROM attempts
 WHERE tenant_id = $1 AND event_id = $2 AND endpoint_id = $3
 ORDER BY started_at, attempt`, tenant, d.EventID, d.EndpointID)
	if err != nil {
		return fmt.Errorf("load attempts of %s: %w", id, err)
	}
	out.AttemptHistory, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (attemptJSON, error) {
		var a attemptJSON
		var started time.Time
		err := row.Scan(&a.EventID, &a.Attempt, &started, &a.DurationMS, &a.StatusCode, &a.Error, &a.ResponseBody, &a.Succeeded)
		a.StartedAt = apitime.Format(started)
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
		s.log.Warn("replay dead letter; the runner will retry", "dead_letter_id", id, "replay_id", rep.id, "err", err)
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
SELECT $`+strconv.Itoa(len(q.args))+`, id FROM dead_letters WHERE `+q.where(), q.args...)
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
	if len(f.IDs) > maxIDs {
		errs = append(errs, httpapi.FieldError{Field: "filter.ids", Message: fmt.Sprintf("at most %d ids", maxIDs)})
	}
	for i, id := range f.IDs {
		if id == "" {
			errs = append(errs, httpapi.FieldError{Field: fmt.Sprintf("filter.ids[%d]", i), Message: "must not be empty"})
		}
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
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters WHERE `+q.where(), q.args...).Scan(&n); err != nil {
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

// succeeded and failed count the replay's deliveries by their status now.
const replayCols = `r.id, r.state, r.matched, r.replayed,
       (SELECT count(*) FROM deliveries d WHERE d.replay_id = r.id AND d.status = 'succeeded'),
       (SELECT count(*) FROM deliveries d WHERE d.replay_id = r.id AND d.status = 'dead'),
       r.filter::text, r.rate_per_second, r.created_by, r.created_at, r.finished_at`

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
	rp, err := scanReplay(s.pool.QueryRow(ctx, `SELECT `+replayCols+` FROM replays r WHERE r.tenant_id = $1 AND r.id = $2`, tenant, id))
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
	rows, err := s.pool.Query(r.Context(), `SELECT `+replayCols+` FROM replays r WHERE `+q.where()+
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
