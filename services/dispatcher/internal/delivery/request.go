package delivery

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/hookline/hookline/pkg/signature"
	"github.com/hookline/hookline/pkg/version"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
	"github.com/hookline/hookline/services/dispatcher/internal/http1"
)

// Header names of the request (CONTRACT 3.1).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
	headerTrace     = "traceparent"
)

// Canonical forms of the per-attempt header names, set without
// canonicalising them on every request.
var (
	canonicalID        = http.CanonicalHeaderKey(HeaderID)
	canonicalTimestamp = http.CanonicalHeaderKey(HeaderTimestamp)
	canonicalSignature = http.CanonicalHeaderKey(HeaderSignature)
	canonicalTrace     = http.CanonicalHeaderKey(headerTrace)
)

// Body is the request body, byte for byte:
// {"type":...,"timestamp":...,"data":...} with data as accepted.
func Body(d *hooklinev1.Delivery) []byte {
	return appendBody(nil, d)
}

// appendBody appends d's request body to b.
func appendBody(b []byte, d *hooklinev1.Delivery) []byte {
	typ := d.GetEventType()
	data := d.GetData()
	if len(data) == 0 {
		data = []byte("null")
	}
	b = append(b, `{"type":`...)
	if plainJSONString(typ) {
		b = append(append(append(b, '"'), typ...), '"')
	} else {
		q, _ := json.Marshal(typ) // a string always marshals
		b = append(b, q...)
	}
	b = append(b, `,"timestamp":"`...)
	b = d.GetAcceptedAt().AsTime().UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// plainJSONString reports whether s encodes as a JSON string by quoting it
// alone, exactly as encoding/json would: printable ASCII without the
// characters it escapes (event types always are).
func plainJSONString(s string) bool {
	for i := range len(s) {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// ActiveSecrets returns the endpoint's secrets that have not expired at now,
// in the endpoint's order (newest first).
func ActiveSecrets(ep *hooklinev1.Endpoint, now time.Time) []string {
	out := make([]string, 0, len(ep.GetSecrets()))
	for _, s := range ep.GetSecrets() {
		if s.GetExpiresAt() != nil && !s.GetExpiresAt().AsTime().After(now) {
			continue
		}
		out = append(out, s.GetValue())
	}
	return out
}

// reserved headers an endpoint's own headers may not override. The API
// refuses them, and the framing ones (a Transfer-Encoding beside the
// Content-Length would let an endpoint's configuration split one request
// into two) are never sent whatever the configuration holds.
func reserved(name string) bool {
	n := strings.ToLower(name)
	return strings.HasPrefix(n, "webhook-") || n == "content-type" || n == "user-agent" ||
		n == "content-length" || n == "host" || n == headerTrace || n == "tracestate" ||
		n == "transfer-encoding" || n == "connection" || n == "te" || n == "upgrade" ||
		n == "keep-alive" || n == "trailer" || n == "proxy-connection"
}

// prepared is what every request to one endpoint configuration shares: the
// parsed URL, the headers that do not change between attempts and the
// decoded signing keys. It is built once per configuration (the endpoint
// cache hands out a new *Endpoint when the configuration changes).
type prepared struct {
	ep      *hooklinev1.Endpoint
	version uint64
	url     *url.URL
	// err is set when no request can be built (a malformed URL).
	err error
	// static holds the headers every request carries, in canonical form;
	// their value slices are shared by all requests and never modified.
	static http.Header
	keys   []signingKey
	trace  bool

	// target and head are the request on the wire: where it goes, and its
	// request line and static header lines (the per-attempt ones follow).
	target http1.Target
	head   []byte
}

// signingKey is one secret of the endpoint, decoded, with a pool of HMACs
// keyed with it (an HMAC is reset, not rebuilt, between uses).
type signingKey struct {
	expires time.Time // zero: never
	err     error     // the secret does not decode
	macs    *sync.Pool
}

func prepare(ep *hooklinev1.Endpoint) *prepared {
	p := &prepared{ep: ep, version: ep.GetVersion(), trace: ep.GetPropagateTrace()}
	u, err := url.Parse(ep.GetUrl())
	if err != nil {
		p.err = fmt.Errorf("build request: %w", err)
	} else {
		// As http.NewRequest does: "host:" is "host".
		u.Host = strings.TrimSuffix(u.Host, ":")
		p.url = u
	}
	h := make(http.Header, 3+len(ep.GetHeaders()))
	// Canonical keys: the transport checks "User-Agent" before adding its
	// own. Header names are case-insensitive on the wire.
	h["Content-Type"] = []string{"application/json"}
	h["User-Agent"] = []string{version.UserAgent()}
	for k, v := range ep.GetHeaders() {
		if !reserved(k) {
			h.Set(k, v)
		}
	}
	// What http.Client adds for a URL with credentials (requests go to the
	// transport directly).
	if u != nil && u.User != nil && h.Get("Authorization") == "" {
		pw, _ := u.User.Password()
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw)))
	}
	p.static = h
	if p.err == nil {
		p.target, p.head, p.err = wireHead(u, h)
	}
	for _, s := range ep.GetSecrets() {
		k := signingKey{}
		if s.GetExpiresAt() != nil {
			k.expires = s.GetExpiresAt().AsTime()
		}
		key, err := signature.DecodeSecret(s.GetValue())
		if err != nil {
			k.err = err
		} else {
			k.macs = &sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}
		}
		p.keys = append(p.keys, k)
	}
	return p
}

// active reports whether k signs at now.
func (k *signingKey) active(now time.Time) bool {
	return k.expires.IsZero() || k.expires.After(now)
}

// errNoSecret: the endpoint has no secret that has not expired.
var errNoSecret = errors.New("no signing secret")

// appendSignatures appends the webhook-signature header value to b: one
// "v1,<base64>" per active secret, space-separated (the Standard Webhooks
// scheme, as [signature.SignAll]).
func (p *prepared) appendSignatures(b []byte, msgID string, ts []byte, body []byte, now time.Time) ([]byte, error) {
	n := 0
	var sum [sha256.Size]byte
	for i := range p.keys {
		k := &p.keys[i]
		if !k.active(now) {
			continue
		}
		if k.err != nil {
			return nil, fmt.Errorf("sign: secret %d: %w", n, k.err)
		}
		m := k.macs.Get().(hash.Hash)
		m.Reset()
		_, _ = m.Write([]byte(msgID))
		_, _ = m.Write([]byte{'.'})
		_, _ = m.Write(ts)
		_, _ = m.Write([]byte{'.'})
		_, _ = m.Write(body)
		mac := m.Sum(sum[:0])
		k.macs.Put(m)
		if n > 0 {
			b = append(b, ' ')
		}
		b = append(b, "v1,"...)
		b = base64.StdEncoding.AppendEncode(b, mac)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("sign: %w", errNoSecret)
	}
	return b, nil
}

// attemptValues are the values of the headers that change with every
// attempt, in one buffer: the timestamp, the signatures and, when the
// endpoint propagates traces, the traceparent.
type attemptValues struct {
	vals          []byte
	tsEnd, sigEnd int // vals[:tsEnd], vals[tsEnd:sigEnd], vals[sigEnd:]
}

func (a *attemptValues) timestamp() []byte   { return a.vals[:a.tsEnd] }
func (a *attemptValues) signatures() []byte  { return a.vals[a.tsEnd:a.sigEnd] }
func (a *attemptValues) traceparent() []byte { return a.vals[a.sigEnd:] }

// sign computes the per-attempt header values of body, the request body of
// d, signed at now, appending them to vals.
func (p *prepared) sign(ctx context.Context, vals []byte, d *hooklinev1.Delivery, body []byte, now time.Time) (attemptValues, error) {
	var scratch [24]byte
	ts := strconv.AppendInt(scratch[:0], now.Unix(), 10)
	vals = append(vals, ts...)
	vals, err := p.appendSignatures(vals, d.GetEventId(), ts, body, now)
	if err != nil {
		return attemptValues{}, err
	}
	a := attemptValues{tsEnd: len(ts), sigEnd: len(vals)}
	if p.trace {
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			vals = appendTraceparent(vals, sc)
		}
	}
	a.vals = vals
	return a, nil
}

// appendTraceparent appends the W3C traceparent of sc, as
// propagation.TraceContext writes it (without tracestate, never sent).
func appendTraceparent(b []byte, sc trace.SpanContext) []byte {
	tid, sid := sc.TraceID(), sc.SpanID()
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, tid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, sid[:])
	b = append(b, '-')
	return hex.AppendEncode(b, []byte{byte(sc.TraceFlags() & (trace.FlagsSampled | trace.FlagsRandom))})
}
