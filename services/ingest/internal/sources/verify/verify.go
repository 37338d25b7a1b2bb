// Package verify authenticates inbound webhook requests the way their
// providers sign them: Standard Webhooks, GitHub (X-Hub-Signature-256),
// Stripe (Stripe-Signature), a generic HMAC scheme, HTTP basic auth, a bearer
// token, or nothing at all when a source explicitly chooses "none".
//
// [Verify] takes every active secret of a source (two during a rotation's
// grace period) and passes when any of them matches. Every comparison of a
// signature or credential is constant-time. A failure is an [*Error] whose
// Reason is a short, stable code recorded with the rejected request.
package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hookline/hookline/pkg/signature"
)

// Kind names a verification scheme.
type Kind string

// The verification schemes.
const (
	StandardWebhooks Kind = "standard_webhooks"
	GitHub           Kind = "github"
	Stripe           Kind = "stripe"
	HMAC             Kind = "hmac"
	BasicAuth        Kind = "basic_auth"
	Bearer           Kind = "bearer"
	None             Kind = "none"
)

// Kinds lists every scheme, in documentation order.
var Kinds = []Kind{StandardWebhooks, GitHub, Stripe, HMAC, BasicAuth, Bearer, None}

// Header names of the provider schemes.
const (
	HeaderGitHub = "X-Hub-Signature-256"
	HeaderStripe = "Stripe-Signature"
)

// DefaultTolerance is how far a signed timestamp may be from the clock, in
// either direction, before the request is refused as a replay.
const DefaultTolerance = 5 * time.Minute

// MaxTolerance bounds tolerance_seconds.
const MaxTolerance = 24 * time.Hour

// Placeholders of a generic HMAC signed_content template.
const (
	PlaceholderBody      = "{body}"
	PlaceholderTimestamp = "{timestamp}"
)

// Config is a source's verifier without its secrets: the scheme and the
// options of the generic ones. It is stored and shown as JSON.
type Config struct {
	Kind Kind `json:"kind"`
	// Username is basic_auth's user name (its password is the secret).
	Username string `json:"username,omitempty"`
	// Header carries the signature (hmac).
	Header string `json:"header,omitempty"`
	// Algorithm is sha256 or sha512 (hmac).
	Algorithm string `json:"algorithm,omitempty"`
	// Encoding of the signature: hex or base64 (hmac).
	Encoding string `json:"encoding,omitempty"`
	// Prefix precedes the encoded signature in the header, e.g. "sha256=" (hmac).
	Prefix string `json:"prefix,omitempty"`
	// SignedContent is what is signed (hmac): a template over {body} and
	// {timestamp}, default "{body}".
	SignedContent string `json:"signed_content,omitempty"`
	// TimestampHeader carries the Unix-seconds timestamp that
	// SignedContent's {timestamp} stands for (hmac).
	TimestampHeader string `json:"timestamp_header,omitempty"`
	// ToleranceSeconds is the replay window of timestamped schemes (stripe,
	// hmac with a timestamp); 0 means [DefaultTolerance]. Standard Webhooks
	// always uses its specification's 5 minutes.
	ToleranceSeconds int `json:"tolerance_seconds,omitempty"`
}

// Normalize fills in the defaults of the options the kind uses and clears
// those it does not, so the stored form shows exactly what applies.
func (c *Config) Normalize() {
	switch c.Kind {
	case HMAC:
		c.Username = ""
		if c.Algorithm == "" {
			c.Algorithm = "sha256"
		}
		if c.Encoding == "" {
			c.Encoding = "hex"
		}
		if c.SignedContent == "" {
			c.SignedContent = PlaceholderBody
		}
		if c.TimestampHeader != "" && c.ToleranceSeconds == 0 {
			c.ToleranceSeconds = int(DefaultTolerance / time.Second)
		}
	case Stripe:
		c.Username, c.Header, c.Algorithm, c.Encoding, c.Prefix, c.SignedContent, c.TimestampHeader = "", "", "", "", "", "", ""
		if c.ToleranceSeconds == 0 {
			c.ToleranceSeconds = int(DefaultTolerance / time.Second)
		}
	case BasicAuth:
		*c = Config{Kind: c.Kind, Username: c.Username}
	default:
		*c = Config{Kind: c.Kind}
	}
}

// NeedsSecret reports whether the kind verifies with a secret.
func (k Kind) NeedsSecret() bool { return k != None && k != "" }

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool {
	for _, v := range Kinds {
		if k == v {
			return true
		}
	}
	return false
}

// headerNameRE is RFC 9110's token.
var headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// MaxSecretLen bounds a secret's length.
const MaxSecretLen = 1024

// Problems returns what is wrong with a normalized c, as field (relative to
// the verifier object) → message.
func (c Config) Problems() map[string]string {
	p := map[string]string{}
	if !c.Kind.Valid() {
		names := make([]string, len(Kinds))
		for i, k := range Kinds {
			names[i] = string(k)
		}
		p["kind"] = "must be one of " + strings.Join(names, ", ")
		return p
	}
	if c.Kind == BasicAuth && (c.Username == "" || strings.Contains(c.Username, ":") || len(c.Username) > 256) {
		p["username"] = "is required: at most 256 characters, without a colon"
	}
	if c.Kind == HMAC {
		if c.Header == "" || !headerNameRE.MatchString(c.Header) {
			p["header"] = "is required: the name of the header carrying the signature"
		}
		if c.Algorithm != "sha256" && c.Algorithm != "sha512" {
			p["algorithm"] = "must be sha256 or sha512"
		}
		if c.Encoding != "hex" && c.Encoding != "base64" {
			p["encoding"] = "must be hex or base64"
		}
		if len(c.Prefix) > 64 {
			p["prefix"] = "must be at most 64 characters"
		}
		rest := strings.ReplaceAll(strings.ReplaceAll(c.SignedContent, PlaceholderBody, ""), PlaceholderTimestamp, "")
		switch {
		case strings.Count(c.SignedContent, PlaceholderBody) != 1:
			p["signed_content"] = "must contain {body} exactly once"
		case strings.ContainsAny(rest, "{}"):
			p["signed_content"] = "may use only the placeholders {body} and {timestamp}"
		case len(c.SignedContent) > 256:
			p["signed_content"] = "must be at most 256 characters"
		}
		hasTS := strings.Contains(c.SignedContent, PlaceholderTimestamp)
		switch {
		case hasTS && c.TimestampHeader == "":
			p["timestamp_header"] = "is required when signed_content uses {timestamp}"
		case c.TimestampHeader != "" && !headerNameRE.MatchString(c.TimestampHeader):
			p["timestamp_header"] = "must be a header name"
		}
	}
	if c.ToleranceSeconds < 0 || time.Duration(c.ToleranceSeconds)*time.Second > MaxTolerance {
		p["tolerance_seconds"] = fmt.Sprintf("must be between 1 and %d", int(MaxTolerance/time.Second))
	}
	return p
}

// SecretProblem returns what is wrong with a secret for kind k, or "".
func SecretProblem(k Kind, secret string) string {
	switch {
	case !k.NeedsSecret():
		if secret != "" {
			return "must be absent for kind none"
		}
		return ""
	case secret == "":
		return "is required for kind " + string(k)
	case len(secret) > MaxSecretLen:
		return fmt.Sprintf("must be at most %d characters", MaxSecretLen)
	case k == StandardWebhooks:
		if _, err := signature.DecodeSecret(secret); err != nil {
			return "must be whsec_ followed by the base64 of 24 to 64 bytes"
		}
	case k == BasicAuth && strings.ContainsAny(secret, "\r\n"):
		return "must not contain line breaks"
	}
	return ""
}

// Reasons a request fails verification, recorded with the reject.
const (
	ReasonMissingSignature   = "missing_signature"
	ReasonInvalidSignature   = "invalid_signature"
	ReasonStaleTimestamp     = "stale_timestamp"
	ReasonMissingCredentials = "missing_credentials"
	ReasonInvalidCredentials = "invalid_credentials"
)

// Error is a failed verification.
type Error struct {
	Reason string // one of the Reason constants
	Detail string // for the sender and the reject record; never secret
}

func (e *Error) Error() string { return e.Reason + ": " + e.Detail }

func fail(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Verify authenticates a request with headers h and raw body against any of
// secrets at time now. It returns nil or an [*Error].
func Verify(c Config, secrets []string, h http.Header, body []byte, now time.Time) error {
	if c.Kind == None {
		return nil
	}
	if len(secrets) == 0 {
		return errors.New("verify: source has no secret")
	}
	switch c.Kind {
	case StandardWebhooks:
		return verifyStandard(secrets, h, body, now)
	case GitHub:
		return verifyGitHub(secrets, h, body)
	case Stripe:
		return verifyStripe(secrets, h, body, now, c.tolerance())
	case HMAC:
		return verifyHMAC(c, secrets, h, body, now)
	case BasicAuth:
		return verifyBasic(c.Username, secrets, h)
	case Bearer:
		return verifyBearer(secrets, h)
	}
	return fmt.Errorf("verify: unknown kind %q", c.Kind)
}

func (c Config) tolerance() time.Duration {
	if c.ToleranceSeconds <= 0 {
		return DefaultTolerance
	}
	return time.Duration(c.ToleranceSeconds) * time.Second
}

func verifyStandard(secrets []string, h http.Header, body []byte, now time.Time) error {
	err := signature.Verify(secrets, h.Get(signature.HeaderID), h.Get(signature.HeaderTimestamp), h.Get(signature.HeaderSignature), body, now)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, signature.ErrMissingHeaders):
		return fail(ReasonMissingSignature, "webhook-id, webhook-timestamp and webhook-signature are required")
	case errors.Is(err, signature.ErrInvalidTimestamp):
		return fail(ReasonInvalidSignature, "webhook-timestamp is not Unix seconds")
	case errors.Is(err, signature.ErrTimestampTooOld), errors.Is(err, signature.ErrTimestampTooNew):
		return fail(ReasonStaleTimestamp, "webhook-timestamp is more than %v from the current time", signature.Tolerance)
	case errors.Is(err, signature.ErrNoMatch):
		return fail(ReasonInvalidSignature, "no webhook-signature entry matches")
	default:
		return fmt.Errorf("verify standard webhooks signature: %w", err)
	}
}

// verifyGitHub checks X-Hub-Signature-256: "sha256=" + hex HMAC-SHA256 of
// the raw body.
func verifyGitHub(secrets []string, h http.Header, body []byte) error {
	v := strings.TrimSpace(h.Get(HeaderGitHub))
	if v == "" {
		return fail(ReasonMissingSignature, "the %s header is missing", HeaderGitHub)
	}
	hexSig, ok := strings.CutPrefix(v, "sha256=")
	got, err := hex.DecodeString(hexSig)
	if !ok || err != nil {
		return fail(ReasonInvalidSignature, "%s is not sha256=<hex>", HeaderGitHub)
	}
	for _, s := range secrets {
		if hmac.Equal(got, mac(sha256.New, []byte(s), body)) {
			return nil
		}
	}
	return fail(ReasonInvalidSignature, "%s does not match the body", HeaderGitHub)
}

// verifyStripe checks Stripe-Signature: "t=<unix>,v1=<hex>[,v1=<hex>...]"
// where each v1 is the hex HMAC-SHA256 of "<t>.<body>" keyed with the
// endpoint secret as it is (whsec_ included). Other schemes (v0) are ignored.
func verifyStripe(secrets []string, h http.Header, body []byte, now time.Time, tol time.Duration) error {
	v := h.Get(HeaderStripe)
	if v == "" {
		return fail(ReasonMissingSignature, "the %s header is missing", HeaderStripe)
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = val
		case "v1":
			if b, err := hex.DecodeString(val); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	if ts == "" || len(sigs) == 0 {
		return fail(ReasonInvalidSignature, "%s has no t= timestamp or no v1= signature", HeaderStripe)
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fail(ReasonInvalidSignature, "%s timestamp is not Unix seconds", HeaderStripe)
	}
	if stale(unix, now, tol) {
		return fail(ReasonStaleTimestamp, "%s timestamp is more than %v from the current time", HeaderStripe, tol)
	}
	signed := make([]byte, 0, len(ts)+1+len(body))
	signed = append(append(append(signed, ts...), '.'), body...)
	for _, s := range secrets {
		want := mac(sha256.New, []byte(s), signed)
		for _, got := range sigs {
			if hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return fail(ReasonInvalidSignature, "no v1 signature in %s matches the body", HeaderStripe)
}

func verifyHMAC(c Config, secrets []string, h http.Header, body []byte, now time.Time) error {
	v := strings.TrimSpace(h.Get(c.Header))
	if v == "" {
		return fail(ReasonMissingSignature, "the %s header is missing", c.Header)
	}
	encoded, ok := strings.CutPrefix(v, c.Prefix)
	if !ok {
		return fail(ReasonInvalidSignature, "%s does not start with %q", c.Header, c.Prefix)
	}
	var got []byte
	var err error
	if c.Encoding == "base64" {
		got, err = base64.StdEncoding.DecodeString(encoded)
		if err != nil {
			got, err = base64.RawStdEncoding.DecodeString(encoded)
		}
	} else {
		got, err = hex.DecodeString(encoded)
	}
	if err != nil {
		return fail(ReasonInvalidSignature, "%s is not %s", c.Header, c.Encoding)
	}
	var ts string
	if c.TimestampHeader != "" {
		ts = strings.TrimSpace(h.Get(c.TimestampHeader))
		if ts == "" {
			return fail(ReasonMissingSignature, "the %s header is missing", c.TimestampHeader)
		}
		unix, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return fail(ReasonInvalidSignature, "%s is not Unix seconds", c.TimestampHeader)
		}
		if stale(unix, now, c.tolerance()) {
			return fail(ReasonStaleTimestamp, "%s is more than %v from the current time", c.TimestampHeader, c.tolerance())
		}
	}
	signed := signedContent(c.SignedContent, ts, body)
	newHash := sha256.New
	if c.Algorithm == "sha512" {
		newHash = sha512.New
	}
	for _, s := range secrets {
		if hmac.Equal(got, mac(newHash, []byte(s), signed)) {
			return nil
		}
	}
	return fail(ReasonInvalidSignature, "%s does not match the signed content", c.Header)
}

// signedContent expands a template: {body} is the raw body, {timestamp} ts.
func signedContent(tmpl, ts string, body []byte) []byte {
	if tmpl == "" || tmpl == PlaceholderBody {
		return body
	}
	before, after, _ := strings.Cut(tmpl, PlaceholderBody)
	out := make([]byte, 0, len(tmpl)+len(ts)+len(body))
	out = append(out, strings.ReplaceAll(before, PlaceholderTimestamp, ts)...)
	out = append(out, body...)
	return append(out, strings.ReplaceAll(after, PlaceholderTimestamp, ts)...)
}

func verifyBasic(username string, secrets []string, h http.Header) error {
	r := http.Request{Header: h}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return fail(ReasonMissingCredentials, "basic credentials are required in Authorization")
	}
	userOK := equal(user, username)
	for _, s := range secrets {
		if equal(pass, s) && userOK {
			return nil
		}
	}
	return fail(ReasonInvalidCredentials, "the user name or password is wrong")
}

func verifyBearer(secrets []string, h http.Header) error {
	scheme, token, ok := strings.Cut(h.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return fail(ReasonMissingCredentials, "a bearer token is required in Authorization")
	}
	token = strings.TrimSpace(token)
	for _, s := range secrets {
		if equal(token, s) {
			return nil
		}
	}
	return fail(ReasonInvalidCredentials, "the bearer token is wrong")
}

// equal compares two credentials in constant time, their lengths included.
func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

func stale(unix int64, now time.Time, tol time.Duration) bool {
	d := now.Unix() - unix
	t := int64(tol / time.Second)
	return d > t || d < -t
}

func mac(newHash func() hash.Hash, key, content []byte) []byte {
	m := hmac.New(newHash, key)
	m.Write(content)
	return m.Sum(nil)
}
