package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hookline/hookline/pkg/eventtype"
	"github.com/hookline/hookline/pkg/httpapi"
	"github.com/hookline/hookline/pkg/signature"
	"github.com/hookline/hookline/pkg/ssrf"
)

// Endpoint limits and defaults (CONTRACT 2.2).
const (
	defaultTimeoutMS   = 15000
	minTimeoutMS       = 1
	maxTimeoutMS       = 60000
	maxRetryEntries    = 20
	maxRetryDelay      = 24 * time.Hour
	maxEventTypes      = 100
	maxHeaders         = 50
	maxHeaderValueLen  = 4096
	maxURLLen          = 2048
	maxDescriptionLen  = 1000
	maxFilterLen       = 4096
	maxRateLimit       = 1_000_000
	disabledByAPI      = "disabled by API"
	orderingKey        = "key"
	orderingNone       = "none"
	defaultGraceSecond = 86400
	maxGraceSeconds    = 30 * 86400
)

var defaultRetrySchedule = []string{"5s", "5m", "30m", "2h", "5h", "10h", "10h"}

// headerNameRE is RFC 9110's token.
var headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// reservedHeaders are set by the dispatcher and may not be overridden.
var reservedHeaders = map[string]bool{
	"content-type":      true,
	"user-agent":        true,
	"content-length":    true,
	"host":              true,
	"transfer-encoding": true,
	"connection":        true,
}

// fieldErrors collects validation failures, one per field.
type fieldErrors []httpapi.FieldError

func (f *fieldErrors) add(field, format string, args ...any) {
	for _, e := range *f {
		if e.Field == field {
			return // the first problem of a field is enough
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

// validateURL checks the scheme and, unless private destinations are allowed,
// that the host resolves only to public addresses (CONTRACT 3.4).
func (a *API) validateURL(ctx context.Context, raw string, errs *fieldErrors) error {
	if raw == "" {
		errs.add("url", "is required")
		return nil
	}
	if len(raw) > maxURLLen {
		errs.add("url", "must be at most %d characters", maxURLLen)
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		errs.add("url", "must be an absolute http or https URL")
		return nil
	}
	if a.cfg.AllowPrivateDestinations {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = ssrf.CheckURL(cctx, raw, false, nil)
	switch {
	case err == nil:
	case errors.Is(err, ssrf.ErrBlocked):
		errs.add("url", "%v", err)
	case errors.Is(err, ssrf.ErrInvalidURL):
		errs.add("url", "%v", err)
	case errors.Is(err, ssrf.ErrUnresolvable):
		errs.add("url", "%v", err)
	default:
		return httpapi.Unavailable("could not check the URL's destination; retry shortly", 2)
	}
	return nil
}

func validateDescription(s string, errs *fieldErrors) {
	if utf8.RuneCountInString(s) > maxDescriptionLen {
		errs.add("description", "must be at most %d characters", maxDescriptionLen)
	}
}

func validateEventTypes(types []string, errs *fieldErrors) {
	if len(types) > maxEventTypes {
		errs.add("event_types", "must have at most %d entries", maxEventTypes)
		return
	}
	for i, t := range types {
		if !eventtype.ValidPattern(t) {
			errs.add("event_types", "entry %d (%q) is not an event type or pattern such as order.created, order.* or order.>", i, t)
			return
		}
	}
}

func validateFilter(expr *string, errs *fieldErrors) {
	if expr == nil {
		return
	}
	if len(*expr) > maxFilterLen {
		errs.add("filter", "must be at most %d characters", maxFilterLen)
		return
	}
	if err := compileFilter(*expr); err != nil {
		errs.add("filter", "does not compile: %v", err)
	}
}

func validateHeaders(h map[string]string, errs *fieldErrors) {
	if len(h) > maxHeaders {
		errs.add("headers", "must have at most %d entries", maxHeaders)
		return
	}
	for name, value := range h {
		lower := strings.ToLower(name)
		switch {
		case !headerNameRE.MatchString(name):
			errs.add("headers", "%q is not a valid header name", name)
		case strings.HasPrefix(lower, "webhook-") || reservedHeaders[lower]:
			errs.add("headers", "%q is set by Hookline and may not be overridden", name)
		case len(value) > maxHeaderValueLen || !validHeaderValue(value):
			errs.add("headers", "value of %q is not a valid header value", name)
		}
	}
}

// validHeaderValue rejects control characters (CR and LF above all) except tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func validateSecret(s string, field string, errs *fieldErrors) {
	if _, err := signature.DecodeSecret(s); err != nil {
		errs.add(field, "%v", err)
	}
}

func validateTimeout(ms int, errs *fieldErrors) {
	if ms < minTimeoutMS || ms > maxTimeoutMS {
		errs.add("timeout_ms", "must be between %d and %d", minTimeoutMS, maxTimeoutMS)
	}
}

func validateRetrySchedule(s []string, errs *fieldErrors) {
	if len(s) > maxRetryEntries {
		errs.add("retry_schedule", "must have at most %d entries", maxRetryEntries)
		return
	}
	for i, v := range s {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > maxRetryDelay {
			errs.add("retry_schedule", "entry %d (%q) must be a Go duration from 0s to 24h, such as 30s or 5m", i, v)
			return
		}
	}
}

func validateRateLimit(n int, errs *fieldErrors) {
	if n < 0 || n > maxRateLimit {
		errs.add("rate_limit", "must be between 0 (no limit) and %d", maxRateLimit)
	}
}

func validateOrdering(s string, errs *fieldErrors) {
	if s != orderingKey && s != orderingNone {
		errs.add("ordering", `must be "key" or "none"`)
	}
}
