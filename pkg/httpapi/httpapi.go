// Package httpapi holds what every Hookline HTTP API handler shares: RFC 9457
// problem responses, strict JSON decoding with size limits, pagination
// cursors and list parameters.
package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// FieldError names a request field at fault.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Problem is an RFC 9457 problem document. It is also an error, so handlers
// can return it.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail"`
	Errors []FieldError `json:"errors,omitempty"`
	// RetryAfter, when positive, is sent as the Retry-After header (seconds).
	RetryAfter int `json:"-"`
}

func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail) }

const typeBase = "https://hookline.dev/problems/"

// NewProblem returns a problem of the given status with a type slug.
func NewProblem(status int, slug, detail string) *Problem {
	return &Problem{Type: typeBase + slug, Title: http.StatusText(status), Status: status, Detail: detail}
}

// Common problems.
func BadRequest(detail string) *Problem {
	return NewProblem(http.StatusBadRequest, "bad-request", detail)
}
func NotFound(what string) *Problem {
	return NewProblem(http.StatusNotFound, "not-found", what+" not found")
}
func Unauthorized() *Problem {
	return NewProblem(http.StatusUnauthorized, "unauthorized", "missing or invalid bearer token")
}
func Forbidden(detail string) *Problem { return NewProblem(http.StatusForbidden, "forbidden", detail) }
func Conflict(detail string) *Problem  { return NewProblem(http.StatusConflict, "conflict", detail) }
func Unavailable(detail string, retryAfter int) *Problem {
	p := NewProblem(http.StatusServiceUnavailable, "unavailable", detail)
	p.RetryAfter = retryAfter
	return p
}

// Invalid is a 422 validation problem listing the fields at fault.
func Invalid(errs ...FieldError) *Problem {
	p := NewProblem(http.StatusUnprocessableEntity, "validation", "the request has invalid fields")
	if len(errs) == 1 {
		p.Detail = errs[0].Field + ": " + errs[0].Message
	}
	p.Errors = errs
	return p
}

// TooLarge is a 413 problem.
func TooLarge(limit int64) *Problem {
	return NewProblem(http.StatusRequestEntityTooLarge, "too-large", fmt.Sprintf("request body exceeds %d bytes", limit))
}

// WriteJSON writes v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// WriteProblem writes p as application/problem+json.
func WriteProblem(w http.ResponseWriter, p *Problem) {
	if p.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(p)
}

// WriteError writes err: a *Problem as itself, anything else as a 500 whose
// detail hides the cause (logged instead).
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var p *Problem
	if errors.As(err, &p) {
		WriteProblem(w, p)
		return
	}
	log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	WriteProblem(w, NewProblem(http.StatusInternalServerError, "internal", "internal error; see the service log"))
}

// HandlerFunc is an API handler that returns its error instead of writing it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts h to http.Handler, writing any returned error as a problem
// and turning a panic into a 500 problem rather than a dropped connection.
func Handle(log *slog.Logger, h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				WriteError(w, r, log, fmt.Errorf("panic: %v", v))
			}
		}()
		if err := h(w, r); err != nil {
			WriteError(w, r, log, err)
		}
	})
}

// ReadBody reads at most limit bytes of r's body; more answers 413.
func ReadBody(r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, BadRequest("reading the request body: " + err.Error())
	}
	if int64(len(body)) > limit {
		return nil, TooLarge(limit)
	}
	return body, nil
}

// DecodeJSON strictly decodes a JSON object body into v: unknown fields,
// trailing data and wrong types are 400/422 problems naming the field.
func DecodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return BadRequest("the request body is empty; a JSON object is required")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return decodeProblem(err)
	}
	if dec.More() {
		return BadRequest("the request body has data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return BadRequest("the request body has data after the JSON object")
	}
	return nil
}

func decodeProblem(err error) *Problem {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return BadRequest("the request body must be a JSON object")
		}
		return Invalid(FieldError{Field: field, Message: "must be " + jsonKind(typeErr.Type.Kind().String())})
	case errors.As(err, &syntaxErr):
		return BadRequest(fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, syntaxErr))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return Invalid(FieldError{Field: field, Message: "unknown field"})
	case errors.Is(err, io.ErrUnexpectedEOF):
		return BadRequest("malformed JSON: unexpected end of input")
	default:
		return BadRequest("malformed JSON: " + err.Error())
	}
}

func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "a number"
	default:
		return "of another type"
	}
}

// Page is a list response.
type Page[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

// List limits (CONTRACT 2).
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// Cursor is the opaque position after the last item of a page: the sort time
// and id of that item.
type Cursor struct {
	Time time.Time `json:"t"`
	ID   string    `json:"i"`
}

// Encode returns the cursor's opaque form.
func (c Cursor) Encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ListParams are the common list parameters.
type ListParams struct {
	Limit  int
	Cursor *Cursor
}

// ParseList reads limit and cursor from q.
func ParseList(r *http.Request) (ListParams, error) {
	q := r.URL.Query()
	p := ListParams{Limit: DefaultLimit}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return p, Invalid(FieldError{Field: "limit", Message: "must be a positive whole number"})
		}
		p.Limit = min(n, MaxLimit)
	}
	if v := q.Get("cursor"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		var c Cursor
		if err != nil || json.Unmarshal(b, &c) != nil || c.ID == "" {
			return p, Invalid(FieldError{Field: "cursor", Message: "is not a cursor this API returned"})
		}
		p.Cursor = &c
	}
	return p, nil
}

// ParseTime reads an optional RFC 3339 time query parameter.
func ParseTime(r *http.Request, name string) (*time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return nil, Invalid(FieldError{Field: name, Message: "must be an RFC 3339 time such as 2026-11-22T10:00:00Z"})
	}
	t = t.UTC()
	return &t, nil
}

// ParseBool reads an optional boolean query parameter.
func ParseBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, Invalid(FieldError{Field: name, Message: "must be true or false"})
	}
	return b, nil
}

// NextPage trims items to limit and returns the cursor of the next page, if
// any: callers query limit+1 rows.
func NextPage[T any](items []T, limit int, cursorOf func(T) Cursor) ([]T, *string) {
	if len(items) <= limit {
		if items == nil {
			items = []T{}
		}
		return items, nil
	}
	items = items[:limit]
	c := cursorOf(items[limit-1]).Encode()
	return items, &c
}
