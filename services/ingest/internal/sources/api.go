package sources

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/auth"
	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/ids"
	"github.com/hookline/hookline/pkg/secretbox"
	"github.com/hookline/hookline/services/ingest/internal/events"
	"github.com/hookline/hookline/services/ingest/internal/sources/expr"
	"github.com/hookline/hookline/services/ingest/internal/sources/verify"
)

// Acceptor makes an event durable; *events.Service is one. Its errors are
// *httpapi.Problem values (possibly wrapping a cause).
type Acceptor interface {
	Accept(ctx context.Context, in events.Input) (events.Result, error)
}

// Service serves the source routes: the tenant API and the ingest URL.
type Service struct {
	pool     *pgxpool.Pool
	accept   Acceptor
	keys     *secretbox.Keyring // nil: secrets stored in clear
	maxBytes int64
	log      *slog.Logger
	now      func() time.Time
	programs programCache
}

// New returns the sources service. cfg.MaxEventBytes bounds a request body,
// cfg.EncryptionKeys seals verifier secrets.
func New(pool *pgxpool.Pool, cfg config.Config, accept Acceptor, log *slog.Logger) *Service {
	limit := cfg.MaxEventBytes
	if limit <= 0 {
		limit = config.DefaultMaxEventBytes
	}
	return &Service{pool: pool, accept: accept, keys: cfg.EncryptionKeys, maxBytes: limit, log: log, now: time.Now,
		programs: programCache{m: map[string]*compiled{}}}
}

// Mux is where routes are registered; *http.ServeMux satisfies it.
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Register adds the source routes to mux. The tenant routes expect
// authentication in front; the ingest route (under [IngestPrefix]) must be
// reachable without it.
func (s *Service) Register(mux Mux) {
	h := func(pattern string, f httpapi.HandlerFunc) { mux.Handle(pattern, httpapi.Handle(s.log, f)) }
	const t = "/v1/tenants/{tenant}/sources"
	h("POST "+t, s.create)
	h("GET "+t, s.list)
	h("GET "+t+"/{id}", s.get)
	h("PATCH "+t+"/{id}", s.patch)
	h("DELETE "+t+"/{id}", s.delete)
	h("POST "+t+"/{id}/secret/rotate", s.rotateSecret)
	h("POST "+t+"/{id}/token/rotate", s.rotateToken)
	h("GET "+t+"/{id}/rejects", s.listRejects)
	h("POST "+IngestPrefix+"{source_token}", s.receive)
}

// maxBody bounds a source API request body.
const maxBody = 64 << 10

func (s *Service) tenantScope(r *http.Request) (string, error) {
	tenant := r.PathValue("tenant")
	if err := auth.RequireTenant(r.Context(), tenant); err != nil {
		return "", err
	}
	var one int
	err := s.pool.QueryRow(r.Context(), `SELECT 1 FROM tenants WHERE id = $1`, tenant).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", httpapi.NotFound("tenant " + tenant)
	}
	if err != nil {
		return "", fmt.Errorf("look up tenant %s: %w", tenant, err)
	}
	return tenant, nil
}

// verifierInput is a verifier as written: its options and the secret
// (write-only; for basic_auth the password).
type verifierInput struct {
	verify.Config
	Secret *string `json:"secret"`
}

// sourceInput is a create or PATCH body; present names the keys it held.
type sourceInput struct {
	Name     *string        `json:"name"`
	Verifier *verifierInput `json:"verifier"`
	Mapping  *struct {
		EventType   *Rule `json:"event_type"`
		OrderingKey *Rule `json:"ordering_key"`
		EventID     *Rule `json:"event_id"`
	} `json:"mapping"`
	Filter *string `json:"filter"`
	Format *string `json:"format"`

	present map[string]bool
}

func readInput(r *http.Request) (*sourceInput, error) {
	body, err := httpapi.ReadBody(r, maxBody)
	if err != nil {
		return nil, err
	}
	in := &sourceInput{}
	if err := httpapi.DecodeJSON(body, in); err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, httpapi.BadRequest("the request body must be a JSON object")
	}
	in.present = map[string]bool{}
	for k := range raw {
		in.present[k] = true
	}
	return in, nil
}

// apply merges in into src (a new source, or the current row for a PATCH)
// and validates the result.
func (s *Service) apply(src *source, in *sourceInput, creating bool) error {
	var errs fieldErrors
	if creating || in.present["name"] {
		switch {
		case in.Name == nil || strings.TrimSpace(*in.Name) == "":
			errs.add("name", "is required")
		case len(*in.Name) > maxNameLen || !utf8.ValidString(*in.Name):
			errs.add("name", "must be UTF-8 text of at most %d bytes", maxNameLen)
		default:
			src.Name = *in.Name
		}
	}
	kindChanged := false
	if creating || in.present["verifier"] {
		if in.Verifier == nil {
			errs.add("verifier", "is required: an object with a kind, e.g. {\"kind\": \"github\", \"secret\": \"...\"}")
			return errs.err()
		}
		c := in.Verifier.Config
		c.Normalize()
		for field, msg := range c.Problems() {
			errs.add("verifier."+field, "%s", msg)
		}
		kindChanged = c.Kind != src.Verifier.Kind
		src.Verifier = c
		switch {
		case in.Verifier.Secret != nil:
			if msg := verify.SecretProblem(c.Kind, *in.Verifier.Secret); msg != "" {
				errs.add("verifier.secret", "%s", msg)
			}
			if c.Kind.NeedsSecret() {
				sec := *in.Verifier.Secret
				if src.Secret == nil || sec != *src.Secret {
					// Replaced outright, without a grace period.
					src.Secret, src.PrevSecret, src.PrevExpiresAt = &sec, nil, nil
				}
			} else {
				src.Secret, src.PrevSecret, src.PrevExpiresAt = nil, nil, nil
			}
		case !c.Kind.NeedsSecret():
			src.Secret, src.PrevSecret, src.PrevExpiresAt = nil, nil, nil
		case creating || kindChanged || src.Secret == nil:
			errs.add("verifier.secret", "is required for kind %s", c.Kind)
		}
	}
	if creating || in.present["mapping"] || kindChanged {
		defType, defID := defaultMapping(src.Verifier.Kind)
		var m Mapping
		if in.present["mapping"] && in.Mapping != nil {
			switch {
			case in.Mapping.EventType != nil:
				m.EventType = *in.Mapping.EventType
			case defType != nil:
				m.EventType = *defType
			default:
				errs.add("mapping.event_type", "is required for kind %s: a header, value or expression", src.Verifier.Kind)
			}
			m.OrderingKey = in.Mapping.OrderingKey
			m.EventID = in.Mapping.EventID
			if m.EventID == nil {
				m.EventID = defID
			}
		} else if in.present["mapping"] || creating {
			if defType == nil {
				errs.add("mapping.event_type", "is required for kind %s: a header, value or expression", src.Verifier.Kind)
			} else {
				m.EventType, m.EventID = *defType, defID
			}
		} else {
			// Only the kind changed: keep the rules, fill in the new defaults.
			m = src.Mapping
			if m.EventID == nil {
				m.EventID = defID
			}
		}
		if m.EventType != (Rule{}) {
			checkRule(m.EventType, "mapping.event_type", &errs)
		}
		if m.OrderingKey != nil {
			checkRule(*m.OrderingKey, "mapping.ordering_key", &errs)
		}
		if m.EventID != nil {
			checkRule(*m.EventID, "mapping.event_id", &errs)
		}
		src.Mapping = m
	}
	if in.present["filter"] {
		src.Filter = in.Filter
		if src.Filter != nil && strings.TrimSpace(*src.Filter) == "" {
			src.Filter = nil
		}
		if src.Filter != nil {
			if _, err := expr.Compile(*src.Filter, expr.Bool); err != nil {
				errs.add("filter", "%s", err.Error())
			}
		}
	}
	if in.present["format"] {
		src.Format = FormatJSON
		if in.Format != nil {
			src.Format = *in.Format
		}
		if src.Format != FormatJSON && src.Format != FormatForm {
			errs.add("format", "must be json or form")
		}
	}
	return errs.err()
}

// view is a source as the API shows it. Secrets are write-only.
type view struct {
	ID                      string        `json:"id"`
	TenantID                string        `json:"tenant_id"`
	Name                    string        `json:"name"`
	IngestURL               *string       `json:"ingest_url"`
	Verifier                verify.Config `json:"verifier"`
	SecretSet               bool          `json:"secret_set"`
	PreviousSecretExpiresAt *string       `json:"previous_secret_expires_at"`
	Mapping                 Mapping       `json:"mapping"`
	Filter                  *string       `json:"filter"`
	Format                  string        `json:"format"`
	CreatedAt               string        `json:"created_at"`
	UpdatedAt               string        `json:"updated_at"`
}

func (s *Service) view(src source, ingestURL *string) view {
	v := view{
		ID: src.ID, TenantID: src.TenantID, Name: src.Name, IngestURL: ingestURL, Verifier: src.Verifier,
		SecretSet: src.Secret != nil, Mapping: src.Mapping, Filter: src.Filter, Format: src.Format,
		CreatedAt: apitime.Format(src.CreatedAt), UpdatedAt: apitime.Format(src.UpdatedAt),
	}
	if src.PrevSecret != nil && src.PrevExpiresAt != nil && s.now().Before(*src.PrevExpiresAt) {
		v.PreviousSecretExpiresAt = apitime.FormatPtr(src.PrevExpiresAt)
	}
	return v
}

// ingestURL is the absolute URL of token as the client reached this API.
func ingestURL(r *http.Request, token string) *string {
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	u := scheme + "://" + r.Host + IngestPrefix + token
	return &u
}

func (s *Service) create(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenantScope(r)
	if err != nil {
		return err
	}
	in, err := readInput(r)
	if err != nil {
		return err
	}
	now := apitime.Now()
	src := source{ID: ids.New(IDPrefix), TenantID: tenant, Format: FormatJSON, CreatedAt: now, UpdatedAt: now}
	if err := s.apply(&src, in, true); err != nil {
		return err
	}
	secret, prev, err := src.sealed(s.keys)
	if err != nil {
		return err
	}
	token, hash := newToken()
	_, err = s.pool.Exec(r.Context(), `
		INSERT INTO sources (id, tenant_id, name, token_hash, verifier, secret, previous_secret,
			previous_secret_expires_at, mapping, filter, format, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		src.ID, src.TenantID, src.Name, hash, src.Verifier, secret, prev, src.PrevExpiresAt,
		src.Mapping, src.Filter, src.Format, src.CreatedAt, src.UpdatedAt)
	if err != nil {
		return fmt.Errorf("insert source: %w", err)
	}
	httpapi.WriteJSON(w, http.StatusCreated, s.view(src, ingestURL(r, token)))
	return nil
}

func (s *Service) load(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, tenant, id string, lock bool) (source, error) {
	sql := `SELECT ` + sourceColumns + ` FROM sources WHERE tenant_id = $1 AND id = $2`
	if lock {
		sql += ` FOR UPDATE`
	}
	src, err := scanSource(q.QueryRow(ctx, sql, tenant, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return src, httpapi.NotFound("source " + id)
	}
	if err != nil {
		return src, fmt.Errorf("load source %s: %w", id, err)
	}
	return src, src.open(s.keys)
}

func (s *Service) get(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenantScope(r)
	if err != nil {
		return err
	}
	src, err := s.load(r.Context(), s.pool, tenant, r.PathValue("id"), false)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, s.view(src, nil))
	return nil
}

func (s *Service) list(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenantScope(r)
	if err != nil {
		return err
	}
	p, err := httpapi.ParseList(r)
	if err != nil {
		return err
	}
	var curT *time.Time
	var curID *string
	if p.Cursor != nil {
		curT, curID = &p.Cursor.Time, &p.Cursor.ID
	}
	rows, err := s.pool.Query(r.Context(), `SELECT `+sourceColumns+` FROM sources
		WHERE tenant_id = $1 AND (created_at, id) > (coalesce($2::timestamptz, '-infinity'), coalesce($3::text, ''))
		ORDER BY created_at, id LIMIT $4`, tenant, curT, curID, p.Limit+1)
	if err != nil {
		return fmt.Errorf("list sources: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (source, error) { return scanSource(row) })
	if err != nil {
		return fmt.Errorf("list sources: %w", err)
	}
	list, next := httpapi.NextPage(list, p.Limit, func(src source) httpapi.Cursor {
		return httpapi.Cursor{Time: src.CreatedAt, ID: src.ID}
	})
	out := httpapi.Page[view]{Data: make([]view, 0, len(list)), NextCursor: next}
	for _, src := range list {
		out.Data = append(out.Data, s.view(src, nil))
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// update runs change on the locked row and writes it back. A non-nil
// tokenHash replaces the ingest token.
func (s *Service) update(ctx context.Context, tenant, id string, change func(src *source) ([]byte, error)) (source, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return source{}, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	src, err := s.load(ctx, tx, tenant, id, true)
	if err != nil {
		return src, err
	}
	tokenHash, err := change(&src)
	if err != nil {
		return src, err
	}
	secret, prev, err := src.sealed(s.keys)
	if err != nil {
		return src, err
	}
	src.UpdatedAt = apitime.Now()
	_, err = tx.Exec(ctx, `
		UPDATE sources SET name = $2, verifier = $3, secret = $4, previous_secret = $5,
			previous_secret_expires_at = $6, mapping = $7, filter = $8, format = $9, updated_at = $10,
			token_hash = coalesce($11, token_hash)
		WHERE id = $1`,
		src.ID, src.Name, src.Verifier, secret, prev, src.PrevExpiresAt, src.Mapping, src.Filter, src.Format,
		src.UpdatedAt, tokenHash)
	if err != nil {
		return src, fmt.Errorf("update source %s: %w", id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return src, fmt.Errorf("commit source %s: %w", id, err)
	}
	return src, nil
}

func (s *Service) patch(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenantScope(r)
	if err != nil {
		return err
	}
	if _, err := s.load(r.Context(), s.pool, tenant, r.PathValue("id"), false); err != nil {
		return err
	}
	in, err := readInput(r)
	if err != nil {
		return err
	}
	src, err := s.update(r.Context(), tenant, r.PathValue("id"), func(src *source) ([]byte, error) {
		return nil, s.apply(src, in, false)
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, s.view(src, nil))
	return nil
}

func (s *Service) delete(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenantScope(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	tag, err := s.pool.Exec(r.Context(), `DELETE FROM sources WHERE tenant_id = $1 AND id = $2`, tenant, id)
	if err != nil {
		return fmt.Errorf("delete source %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return httpapi.NotFound("source " + id)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Service) rotateSecret(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenantScope(r)
	if err != nil {
		return err
	}
	if _, err := s.load(r.Context(), s.pool, tenant, r.PathValue("id"), false); err != nil {
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
	if err := httpapi.DecodeJSON(body, &in); err != nil {
		return err
	}
	grace := defaultGraceSecond
	var errs fieldErrors
	if in.GraceSeconds != nil {
		grace = *in.GraceSeconds
		if grace < 0 || grace > maxGraceSeconds {
			errs.add("grace_seconds", "must be between 0 and %d", maxGraceSeconds)
		}
	}
	expires := apitime.Now().Add(time.Duration(grace) * time.Second)
	_, err = s.update(r.Context(), tenant, r.PathValue("id"), func(src *source) ([]byte, error) {
		switch {
		case !src.Verifier.Kind.NeedsSecret():
			errs.add("secret", "a source with verifier kind none has no secret")
		case in.Secret == nil:
			errs.add("secret", "is required: the new secret the provider signs with")
		default:
			if msg := verify.SecretProblem(src.Verifier.Kind, *in.Secret); msg != "" {
				errs.add("secret", "%s", msg)
			} else if src.Secret != nil && *src.Secret == *in.Secret {
				errs.add("secret", "must differ from the current secret")
			}
		}
		if err := errs.err(); err != nil {
			return nil, err
		}
		src.PrevSecret, src.Secret, src.PrevExpiresAt = src.Secret, in.Secret, &expires
		return nil, nil
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"previous_secret_expires_at": apitime.Format(expires)})
	return nil
}

func (s *Service) rotateToken(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenantScope(r)
	if err != nil {
		return err
	}
	token, hash := newToken()
	src, err := s.update(r.Context(), tenant, r.PathValue("id"), func(*source) ([]byte, error) { return hash, nil })
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, s.view(src, ingestURL(r, token)))
	return nil
}

type rejectView struct {
	ID         string  `json:"id"`
	Reason     string  `json:"reason"`
	Detail     string  `json:"detail"`
	EventType  *string `json:"event_type"`
	EventID    *string `json:"event_id"`
	SizeBytes  int     `json:"size_bytes"`
	Payload    *string `json:"payload"`
	ReceivedAt string  `json:"received_at"`

	receivedAt time.Time
}

// listRejects lists the source's refused, filtered and duplicate requests,
// newest first, optionally of one reason.
func (s *Service) listRejects(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.tenantScope(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	var one int
	err = s.pool.QueryRow(r.Context(), `SELECT 1 FROM sources WHERE tenant_id = $1 AND id = $2`, tenant, id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return httpapi.NotFound("source " + id)
	}
	if err != nil {
		return fmt.Errorf("look up source %s: %w", id, err)
	}
	p, err := httpapi.ParseList(r)
	if err != nil {
		return err
	}
	var reason *string
	if v := r.URL.Query().Get("reason"); v != "" {
		reason = &v
	}
	var curT *time.Time
	var curID *string
	if p.Cursor != nil {
		curT, curID = &p.Cursor.Time, &p.Cursor.ID
	}
	rows, err := s.pool.Query(r.Context(), `
SELECT id, reason, detail, event_type, event_id, size_bytes, payload, received_at FROM rejected_events
WHERE tenant_id = $1 AND subject = $2
  AND ($3::text IS NULL OR reason = $3)
  AND (received_at, id) < (coalesce($4::timestamptz, 'infinity'), coalesce($5::text, ''))
ORDER BY received_at DESC, id DESC
LIMIT $6`, tenant, subject(id), reason, curT, curID, p.Limit+1)
	if err != nil {
		return fmt.Errorf("list rejects of source %s: %w", id, err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (rejectView, error) {
		var v rejectView
		var payload []byte
		err := row.Scan(&v.ID, &v.Reason, &v.Detail, &v.EventType, &v.EventID, &v.SizeBytes, &payload, &v.receivedAt)
		if payload != nil {
			s := strings.ToValidUTF8(string(payload), "\uFFFD")
			v.Payload = &s
		}
		v.ReceivedAt = apitime.Format(v.receivedAt)
		return v, err
	})
	if err != nil {
		return fmt.Errorf("list rejects of source %s: %w", id, err)
	}
	page, next := httpapi.NextPage(items, p.Limit, func(v rejectView) httpapi.Cursor {
		return httpapi.Cursor{Time: v.receivedAt, ID: v.ID}
	})
	httpapi.WriteJSON(w, http.StatusOK, httpapi.Page[rejectView]{Data: page, NextCursor: next})
	return nil
}

// subject is how a source's rejects are recorded in rejected_events.
func subject(sourceID string) string { return "source:" + sourceID }
