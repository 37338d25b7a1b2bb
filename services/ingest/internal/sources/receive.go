package sources

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/eventtype"
	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/ids"
	"github.com/hookline/hookline/services/ingest/internal/events"
	"github.com/hookline/hookline/services/ingest/internal/sources/expr"
	"github.com/hookline/hookline/services/ingest/internal/sources/verify"
)

// Reasons a request is recorded in rejected_events, besides the verifier's
// (verify.Reason*).
const (
	ReasonTooLarge      = "too_large"
	ReasonInvalidBody   = "invalid_body"
	ReasonMappingFailed = "mapping_failed"
	ReasonInvalidEvent  = "invalid_event"
	ReasonFiltered      = "filtered"
	ReasonDuplicate     = "duplicate"
)

// rejectPayloadBytes is how much of a rejected body is kept.
const rejectPayloadBytes = 4 << 10

// compiled is a source's programs, built once per source version.
type compiled struct {
	updatedAt    time.Time
	typ, key, id *rule
	filter       *expr.Program
	needsBody    bool
}

// rule is a compiled [Rule].
type rule struct {
	header, value string
	prg           *expr.Program
}

func compileRule(r *Rule) (*rule, error) {
	if r == nil {
		return nil, nil
	}
	out := &rule{header: r.Header, value: r.Value}
	if r.Expression != "" {
		p, err := expr.Compile(r.Expression, expr.String)
		if err != nil {
			return nil, err
		}
		out.prg = p
	}
	return out, nil
}

func (r *rule) eval(h http.Header, vars expr.Vars) (string, error) {
	switch {
	case r == nil:
		return "", nil
	case r.prg != nil:
		return r.prg.EvalString(vars)
	case r.header != "":
		return h.Get(r.header), nil
	default:
		return r.value, nil
	}
}

// programCache holds compiled programs by source id. Entries are replaced
// when the source's updated_at changes; the cache is cleared when it grows
// past a bound, so deleted sources do not accumulate.
type programCache struct {
	mu sync.Mutex
	m  map[string]*compiled
}

const maxCached = 10_000

func (c *programCache) get(src *source) (*compiled, error) {
	c.mu.Lock()
	p := c.m[src.ID]
	c.mu.Unlock()
	if p != nil && p.updatedAt.Equal(src.UpdatedAt) {
		return p, nil
	}
	p = &compiled{updatedAt: src.UpdatedAt}
	var err error
	m := src.Mapping
	if p.typ, err = compileRule(&m.EventType); err != nil {
		return nil, fmt.Errorf("compile event_type of source %s: %w", src.ID, err)
	}
	if p.key, err = compileRule(m.OrderingKey); err != nil {
		return nil, fmt.Errorf("compile ordering_key of source %s: %w", src.ID, err)
	}
	if p.id, err = compileRule(m.EventID); err != nil {
		return nil, fmt.Errorf("compile event_id of source %s: %w", src.ID, err)
	}
	if src.Filter != nil {
		if p.filter, err = expr.Compile(*src.Filter, expr.Bool); err != nil {
			return nil, fmt.Errorf("compile filter of source %s: %w", src.ID, err)
		}
	}
	p.needsBody = p.filter != nil
	for _, r := range []*rule{p.typ, p.key, p.id} {
		if r != nil && r.prg != nil {
			p.needsBody = true
		}
	}
	c.mu.Lock()
	if len(c.m) >= maxCached {
		clear(c.m)
	}
	c.m[src.ID] = p
	c.mu.Unlock()
	return p, nil
}

// received is the answer to an accepted (or filtered) request.
type received struct {
	ID         *string `json:"id"`
	Type       *string `json:"type"`
	AcceptedAt *string `json:"accepted_at"`
	Duplicate  bool    `json:"duplicate"`
	Filtered   bool    `json:"filtered"`
}

// receive handles POST /v1/in/{source_token}.
func (s *Service) receive(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	src, err := s.lookup(ctx, r.PathValue("source_token"))
	if err != nil {
		return err
	}
	body, err := httpapi.ReadBody(r, s.maxBytes)
	if err != nil {
		var p *httpapi.Problem
		if errors.As(err, &p) && p.Status == http.StatusRequestEntityTooLarge {
			s.reject(ctx, src, ReasonTooLarge, fmt.Sprintf("body exceeds %d bytes", s.maxBytes), body, "", "")
		}
		return err
	}
	now := s.now()
	if err := verify.Verify(src.Verifier, src.secrets(now), r.Header, body, now); err != nil {
		var ve *verify.Error
		if !errors.As(err, &ve) {
			return err
		}
		s.reject(ctx, src, ve.Reason, ve.Detail, body, "", "")
		if src.Verifier.Kind == verify.BasicAuth {
			w.Header().Set("WWW-Authenticate", `Basic realm="hookline"`)
		}
		return httpapi.NewProblem(http.StatusUnauthorized, "unauthorized", ve.Detail)
	}
	prog, err := s.programs.get(src)
	if err != nil {
		return err
	}
	data, parsed, detail := decodeBody(src.Format, body, prog.needsBody)
	if detail != "" {
		s.reject(ctx, src, ReasonInvalidBody, detail, body, "", "")
		return httpapi.BadRequest(detail)
	}
	vars := expr.NewVars(parsed, r.Header)
	if prog.filter != nil {
		ok, err := prog.filter.EvalBool(vars)
		if !ok {
			why := "the filter is false"
			if err != nil {
				why = "the filter could not be evaluated: " + err.Error()
			}
			s.reject(ctx, src, ReasonFiltered, why, body, "", "")
			httpapi.WriteJSON(w, http.StatusOK, received{Filtered: true})
			return nil
		}
	}
	typ, err := prog.typ.eval(r.Header, vars)
	if err != nil || !eventtype.Valid(typ) {
		detail := fmt.Sprintf("mapping.event_type gave %q, which is not an event type", typ)
		if err != nil {
			detail = "mapping.event_type: " + err.Error()
		}
		s.reject(ctx, src, ReasonMappingFailed, detail, body, "", "")
		return httpapi.NewProblem(http.StatusUnprocessableEntity, "mapping-failed", detail)
	}
	key, err := prog.key.eval(r.Header, vars)
	if err != nil {
		detail := "mapping.ordering_key: " + err.Error()
		s.reject(ctx, src, ReasonMappingFailed, detail, body, typ, "")
		return httpapi.NewProblem(http.StatusUnprocessableEntity, "mapping-failed", detail)
	}
	providerID, err := prog.id.eval(r.Header, vars)
	if err != nil {
		// A provider id the body lacks: the event gets a generated id.
		providerID = ""
	}
	in := events.Input{
		TenantID: src.TenantID, ID: eventID(providerID), Type: typ, Data: data,
		OrderingKey: key, Source: subject(src.ID),
	}
	res, err := s.accept.Accept(ctx, in)
	if err != nil {
		var p *httpapi.Problem
		if errors.As(err, &p) && (p.Status == http.StatusUnprocessableEntity || p.Status == http.StatusRequestEntityTooLarge) {
			s.reject(ctx, src, ReasonInvalidEvent, p.Detail, body, typ, in.ID)
		} else if p != nil && p.Status == http.StatusServiceUnavailable {
			s.log.WarnContext(ctx, "inbound event not accepted", "source_id", src.ID, "tenant_id", src.TenantID, "err", err)
		}
		return err
	}
	if res.Duplicate {
		s.reject(ctx, src, ReasonDuplicate, "event "+res.ID+" was already accepted", body, res.Type, res.ID)
	}
	at := apitime.Format(res.AcceptedAt)
	httpapi.WriteJSON(w, http.StatusAccepted, received{ID: &res.ID, Type: &res.Type, AcceptedAt: &at, Duplicate: res.Duplicate})
	return nil
}

// eventID returns the event id for a provider's delivery id: the id itself
// when it is a valid event id, else one derived from it (so idempotency
// still holds), or "" (generated) without one.
func eventID(providerID string) string {
	if providerID == "" || ids.ValidEventID(providerID) {
		return providerID
	}
	h := sha256.Sum256([]byte(providerID))
	return "ext_" + hex.EncodeToString(h[:24])
}

// lookup returns the source of an ingest token, secrets opened, or 404.
func (s *Service) lookup(ctx context.Context, token string) (*source, error) {
	if !strings.HasPrefix(token, TokenPrefix) || len(token) > 128 {
		return nil, httpapi.NotFound("source")
	}
	src, err := scanSource(s.pool.QueryRow(ctx, `SELECT `+sourceColumns+` FROM sources WHERE token_hash = $1`, hashToken(token)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, httpapi.NotFound("source")
	}
	if err != nil {
		return nil, httpapi.Unavailable("the database is unreachable; retry shortly", 2)
	}
	if err := src.open(s.keys); err != nil {
		return nil, err
	}
	return &src, nil
}

// decodeBody checks that body is what the source declares and returns the
// event data (JSON) and, when wanted, the parsed body for expressions. A
// non-empty detail says what is wrong.
func decodeBody(format string, body []byte, parse bool) (data []byte, parsed any, detail string) {
	if format == FormatForm {
		vals, err := url.ParseQuery(string(body))
		if err != nil || !utf8.Valid(body) {
			return nil, nil, "the body is not application/x-www-form-urlencoded"
		}
		obj := make(map[string]any, len(vals))
		for k, v := range vals {
			obj[k] = v[0]
		}
		data, err := json.Marshal(obj)
		if err != nil {
			return nil, nil, "the form cannot be encoded as JSON"
		}
		return data, obj, ""
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil, "the body is empty; this source expects JSON"
	}
	if !utf8.Valid(body) || !json.Valid(body) {
		return nil, nil, "the body is not valid JSON, which this source expects"
	}
	if parse {
		if err := json.Unmarshal(body, &parsed); err != nil {
			return nil, nil, "the body is not valid JSON, which this source expects"
		}
	}
	return body, parsed, ""
}

// reject records a refused, filtered or duplicate request. Recording is
// best effort: a failure is logged, and the sender gets its answer anyway.
func (s *Service) reject(ctx context.Context, src *source, reason, detail string, body []byte, eventType, eventID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	payload := body
	if len(payload) > rejectPayloadBytes {
		payload = payload[:rejectPayloadBytes]
	}
	_, err := s.pool.Exec(ctx, `
INSERT INTO rejected_events (id, tenant_id, subject, event_type, event_id, reason, detail, size_bytes, payload)
VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''), $6, $7, $8, $9)`,
		ids.New(ids.Reject), src.TenantID, subject(src.ID), eventType, eventID, reason, detail, len(body), payload)
	if err != nil {
		s.log.WarnContext(ctx, "record inbound reject", "source_id", src.ID, "tenant_id", src.TenantID, "reason", reason, "err", err)
		return
	}
	s.log.InfoContext(ctx, "inbound request rejected", "source_id", src.ID, "tenant_id", src.TenantID, "reason", reason)
}
