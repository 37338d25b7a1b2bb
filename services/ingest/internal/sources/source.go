package sources

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/secretbox"
	"github.com/hookline/hookline/services/ingest/internal/sources/expr"
	"github.com/hookline/hookline/services/ingest/internal/sources/verify"
)

// IDPrefix starts every source id.
const IDPrefix = "src_"

// TokenPrefix starts every ingest token.
const TokenPrefix = "hlsrc_"

// IngestPrefix is the path under which sources receive webhooks; requests
// to it need no bearer token.
const IngestPrefix = "/v1/in/"

// Body formats a source may declare.
const (
	FormatJSON = "json"
	FormatForm = "form"
)

// Limits.
const (
	maxNameLen         = 200
	maxRuleLen         = 1024
	defaultGraceSecond = 86400
	maxGraceSeconds    = 30 * 86400
)

// newToken returns a new ingest token and its hash.
func newToken() (token string, hash []byte) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, hashToken(token)
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Rule computes one value of an event from a request: exactly one of Header
// (its first value; absent is ""), Value (a constant) or Expression (CEL,
// see package expr).
type Rule struct {
	Header     string `json:"header,omitempty"`
	Value      string `json:"value,omitempty"`
	Expression string `json:"expression,omitempty"`
}

// Mapping is how a request becomes an event.
type Mapping struct {
	EventType   Rule  `json:"event_type"`
	OrderingKey *Rule `json:"ordering_key"`
	// EventID nil: generated (ids sort by time).
	EventID *Rule `json:"event_id"`
}

// source is a sources row, secrets in clear.
type source struct {
	ID            string
	TenantID      string
	Name          string
	Verifier      verify.Config
	Secret        *string
	PrevSecret    *string
	PrevExpiresAt *time.Time
	Mapping       Mapping
	Filter        *string
	Format        string
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

const sourceColumns = `id, tenant_id, name, verifier, secret, previous_secret, previous_secret_expires_at,
	mapping, filter, format, created_at, updated_at`

func scanSource(row pgx.Row) (source, error) {
	var s source
	err := row.Scan(&s.ID, &s.TenantID, &s.Name, &s.Verifier, &s.Secret, &s.PrevSecret, &s.PrevExpiresAt,
		&s.Mapping, &s.Filter, &s.Format, &s.CreatedAt, &s.UpdatedAt)
	return s, err
}

// secrets returns the secrets valid at now: the current one, and the
// previous one until its grace period ends.
func (s *source) secrets(now time.Time) []string {
	var out []string
	if s.Secret != nil {
		out = append(out, *s.Secret)
	}
	if s.PrevSecret != nil && s.PrevExpiresAt != nil && now.Before(*s.PrevExpiresAt) {
		out = append(out, *s.PrevSecret)
	}
	return out
}

// open decrypts the row's secrets in place.
func (s *source) open(keys *secretbox.Keyring) error {
	for _, p := range []*string{s.Secret, s.PrevSecret} {
		if p == nil {
			continue
		}
		v, err := keys.Open(*p, s.ID)
		if err != nil {
			return fmt.Errorf("decrypt secret of source %s: %w", s.ID, err)
		}
		*p = v
	}
	return nil
}

// sealed returns the row's secrets as stored.
func (s *source) sealed(keys *secretbox.Keyring) (secret, prev *string, err error) {
	seal := func(p *string) (*string, error) {
		if p == nil {
			return nil, nil
		}
		v, err := keys.Seal(*p, s.ID)
		if err != nil {
			return nil, fmt.Errorf("encrypt secret of source %s: %w", s.ID, err)
		}
		return &v, nil
	}
	if secret, err = seal(s.Secret); err != nil {
		return nil, nil, err
	}
	if prev, err = seal(s.PrevSecret); err != nil {
		return nil, nil, err
	}
	return secret, prev, nil
}

// defaultMapping is what a provider kind maps when the source does not say:
// the provider's event type and delivery id.
func defaultMapping(k verify.Kind) (typ *Rule, id *Rule) {
	switch k {
	case verify.GitHub:
		return &Rule{Header: "X-GitHub-Event"}, &Rule{Header: "X-GitHub-Delivery"}
	case verify.Stripe:
		return &Rule{Expression: "body.type"}, &Rule{Expression: "body.id"}
	case verify.StandardWebhooks:
		return &Rule{Expression: "body.type"}, &Rule{Header: "webhook-id"}
	}
	return nil, nil
}

// fieldErrors collects validation failures, one per field.
type fieldErrors []httpapi.FieldError

func (f *fieldErrors) add(field, format string, args ...any) {
	for _, e := range *f {
		if e.Field == field {
			return
		}
	}
	*f = append(*f, httpapi.FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (f fieldErrors) err() error {
	if len(f) == 0 {
		return nil
	}
	return httpapi.Invalid(f...)
}

// checkRule validates r at field and compiles its expression.
func checkRule(r Rule, field string, errs *fieldErrors) {
	n := 0
	for _, v := range []string{r.Header, r.Value, r.Expression} {
		if v != "" {
			n++
		}
		if len(v) > maxRuleLen {
			errs.add(field, "values must be at most %d bytes", maxRuleLen)
			return
		}
	}
	if n != 1 {
		errs.add(field, "must set exactly one of header, value or expression")
		return
	}
	if r.Header != "" && !headerName(r.Header) {
		errs.add(field+".header", "must be a header name")
	}
	if r.Value != "" && (!utf8.ValidString(r.Value) || strings.ContainsRune(r.Value, 0)) {
		errs.add(field+".value", "must be UTF-8 text")
	}
	if r.Expression != "" {
		if _, err := expr.Compile(r.Expression, expr.String); err != nil {
			errs.add(field+".expression", "%s", err.Error())
		}
	}
}

func headerName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c > 0x7e || c <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", c) {
			return false
		}
	}
	return true
}
