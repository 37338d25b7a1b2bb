package delivery

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxRetryAfter caps how long an endpoint's Retry-After can hold a delivery.
const MaxRetryAfter = 24 * time.Hour

// Jitter bounds: each scheduled delay is multiplied by a factor in this range.
const (
	JitterMin = 0.9
	JitterMax = 1.1
)

// ParseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date
// (relative to now). ok is false for an absent or malformed value. The delay
// is capped at [MaxRetryAfter]; a date in the past is a delay of 0.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), MaxRetryAfter), true
}

// NextDelay is the wait before the attempt after attempt n (1-based) given
// the endpoint's schedule; ok is false when no attempt is left. factor is a
// random number in [0, 1) that picks the jitter; minimum (a Retry-After) is a
// floor applied after jitter.
func NextDelay(schedule []time.Duration, n int, minimum time.Duration, factor float64) (time.Duration, bool) {
	if n < 1 || n > len(schedule) {
		return 0, false
	}
	j := JitterMin + (JitterMax-JitterMin)*factor
	d := time.Duration(float64(schedule[n-1]) * j)
	return max(d, minimum), true
}

// Schedule converts an endpoint's retry_schedule_ms.
func Schedule(ms []uint64) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, v := range ms {
		out[i] = time.Duration(v) * time.Millisecond //nolint:gosec // schedules are validated at create time
	}
	return out
}
