package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/hookline/hookline/pkg/ssrf"
)

// Kind is what happens to a delivery after an attempt.
type Kind int

// Kinds of outcome.
const (
	// Succeeded: the endpoint answered 2xx.
	Succeeded Kind = iota + 1
	// Retry: the attempt failed in a way worth repeating.
	Retry
	// Dead: the delivery will not be attempted again.
	Dead
)

// Dead-letter reasons (CONTRACT 2.4).
const (
	ReasonExhausted          = "exhausted"
	ReasonNonRetryableStatus = "non_retryable_status"
	ReasonEndpointDisabled   = "endpoint_disabled"
	ReasonEndpointDeleted    = "endpoint_deleted"
	ReasonDestinationBlocked = "destination_blocked"
	ReasonExpired            = "expired"
)

// Outcome classifies one attempt.
type Outcome struct {
	Kind Kind
	// StatusCode is 0 when no response arrived.
	StatusCode int
	// Error is a short description for the attempt log ("status 500",
	// "timeout"); empty on success.
	Error string
	// Reason is the dead-letter reason when Kind is Dead.
	Reason string
	// RetryAfter is the minimum delay the endpoint asked for (429 and 503
	// only); 0 when it asked for none.
	RetryAfter time.Duration
	// DisableEndpoint is set for 410 Gone.
	DisableEndpoint bool
}

// Classify maps an attempt's result to its outcome: the one place that
// decides between success, retry and dead. resp is nil when err is set.
func Classify(resp *http.Response, err error, now time.Time) Outcome {
	if err != nil {
		if errors.Is(err, ssrf.ErrBlocked) {
			return Outcome{Kind: Dead, Error: "destination blocked", Reason: ReasonDestinationBlocked}
		}
		return Outcome{Kind: Retry, Error: DescribeError(err)}
	}
	code := resp.StatusCode
	o := Outcome{StatusCode: code}
	switch {
	case code >= 200 && code < 300:
		o.Kind = Succeeded
		return o
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests,
		code >= 500, code < 200:
		o.Kind = Retry
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			o.RetryAfter, _ = ParseRetryAfter(resp.Header.Get("Retry-After"), now)
		}
	default: // other 3xx (redirects are not followed) and 4xx
		o.Kind = Dead
		o.Reason = ReasonNonRetryableStatus
		o.DisableEndpoint = code == http.StatusGone
	}
	o.Error = "status " + strconv.Itoa(code)
	return o
}

// DescribeError turns a transport error into a short, secret-free
// description for the attempt log.
func DescribeError(err error) string {
	var (
		netErr  net.Error
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		uaErr   x509.UnknownAuthorityError
		hostErr x509.HostnameError
		recErr  tls.RecordHeaderError
		reqErr  *RequestError
	)
	switch {
	case errors.As(err, &reqErr):
		return "invalid endpoint configuration"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, ssrf.ErrBlocked):
		return "destination blocked"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "dns: no such host"
		}
		return "dns lookup failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	case errors.As(err, &certErr), errors.As(err, &uaErr), errors.As(err, &hostErr):
		return "tls certificate invalid"
	case errors.As(err, &recErr):
		return "tls handshake failed"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	default:
		return "connection error"
	}
}
