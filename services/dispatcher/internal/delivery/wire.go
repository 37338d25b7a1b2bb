package delivery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/dispatcher/internal/http1"
)

// wireHead returns where requests to u go and the start of each on the
// wire: the request line, Host and the static headers h, one line per
// value, in the order of their names (as net/http writes them). A header
// net/http would refuse to send (a name that is not a token, a value with a
// control character) is an error of the endpoint's configuration.
func wireHead(u *url.URL, h http.Header) (http1.Target, []byte, error) {
	var t http1.Target
	switch u.Scheme {
	case "http":
	case "https":
		t.TLS = true
	default:
		return t, nil, fmt.Errorf("build request: unsupported scheme %q", u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return t, nil, errors.New("build request: no host in the URL")
	}
	if !printableASCII(host) {
		return t, nil, fmt.Errorf("build request: host %q is not ASCII (use its punycode form)", host)
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if t.TLS {
			port = "443"
		}
	}
	t.Addr = net.JoinHostPort(host, port)
	// A zone names the sender's interface: it is dialled, never sent.
	t.ServerName, _, _ = strings.Cut(host, "%")
	hostHeader := u.Host
	if i := strings.Index(hostHeader, "%"); i >= 0 && strings.HasPrefix(hostHeader, "[") {
		if j := strings.Index(hostHeader, "]"); j > i {
			hostHeader = hostHeader[:i] + hostHeader[j:]
		}
	}
	// The path comes escaped; a query is kept as it was written, so what
	// is not printable ASCII in it is escaped here, as browsers do.
	uri := escapeUnprintable(u.RequestURI())

	b := make([]byte, 0, 128)
	b = append(b, "POST "...)
	b = append(b, uri...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, hostHeader...)
	b = append(b, "\r\n"...)
	for _, k := range slices.Sorted(maps.Keys(h)) {
		if !httpguts.ValidHeaderFieldName(k) {
			return t, nil, fmt.Errorf("build request: invalid header name %q", k)
		}
		for _, v := range h[k] {
			if !httpguts.ValidHeaderFieldValue(v) {
				return t, nil, fmt.Errorf("build request: invalid value of header %q", k)
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, strings.TrimSpace(v)...)
			b = append(b, "\r\n"...)
		}
	}
	return t, b, nil
}

// buffers are the scratch space of one attempt's request, reused between
// attempts.
type buffers struct {
	wire, body []byte
}

// maxPooled is the largest buffer kept for reuse.
const maxPooled = 64 << 10

// wire returns the signed POST of d, signed at now, in HTTP/1.1 wire form,
// built in bufs: what [prepared.request] builds, as it is sent.
func (p *prepared) wire(ctx context.Context, bufs *buffers, d *hooklinev1.Delivery, now time.Time) ([]byte, error) {
	if p.err != nil {
		return nil, p.err
	}
	if !httpguts.ValidHeaderFieldValue(d.GetEventId()) {
		return nil, errors.New("build request: the event id is not a valid header value")
	}
	body := appendBody(bufs.body[:0], d)
	bufs.body = body
	var scratch [256]byte
	a, err := p.sign(ctx, scratch[:0], d, body, now)
	if err != nil {
		return nil, err
	}
	b := append(bufs.wire[:0], p.head...)
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n"...)
	b = appendHeader(b, canonicalID, d.GetEventId())
	b = appendHeader(b, canonicalTimestamp, a.timestamp())
	b = appendHeader(b, canonicalSignature, a.signatures())
	if tp := a.traceparent(); len(tp) > 0 {
		b = appendHeader(b, canonicalTrace, tp)
	}
	b = append(b, "\r\n"...)
	b = append(b, body...)
	bufs.wire = b
	return b, nil
}

func appendHeader[V string | []byte](b []byte, name string, value V) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

// escapeUnprintable percent-encodes the bytes of s that are not printable
// ASCII (spaces and controls included).
func escapeUnprintable(s string) string {
	if printableASCII(s) {
		return s
	}
	const hexDigits = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+16)
	for i := range len(s) {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

// printableASCII reports whether s is printable ASCII without spaces.
func printableASCII(s string) bool {
	for i := range len(s) {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}
