// Package apitime fixes how Hookline stores and prints times: UTC, truncated
// to microseconds (PostgreSQL's precision, so a time read back prints the same),
// in RFC 3339. The 202 response's accepted_at and the timestamp in the body an
// endpoint receives are the same string.
package apitime

import "time"

// Now returns the current time in UTC at microsecond precision.
func Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Format prints t as RFC 3339 in UTC.
func Format(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// FormatPtr prints t, or returns nil for a nil or zero time (JSON null).
func FormatPtr(t *time.Time) *string {
	if t == nil || t.IsZero() {
		return nil
	}
	s := Format(*t)
	return &s
}
