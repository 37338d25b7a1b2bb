// Package signature implements Standard Webhooks signatures (v1, HMAC-SHA256):
// the scheme Svix and every Standard Webhooks verifier accept. The signed
// content is "{webhook-id}.{webhook-timestamp}.{body}", keyed with the
// base64-decoded secret after its "whsec_" prefix.
package signature

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every signing secret.
const SecretPrefix = "whsec_"

// Secret key sizes accepted (CONTRACT 2.2).
const (
	MinKeyBytes = 24
	MaxKeyBytes = 64
)

// Tolerance is how far a webhook-timestamp may be from the verifier's clock,
// in either direction, before [Verify] refuses it (replay protection).
const Tolerance = 5 * time.Minute

// Header names of the Standard Webhooks scheme.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// ErrInvalidSecret is returned for a secret that is not whsec_ + base64 of
// 24 to 64 bytes.
var ErrInvalidSecret = errors.New("secret must be whsec_ followed by the base64 of 24 to 64 random bytes")

// Errors returned by [Verify]; check them with errors.Is.
var (
	// ErrMissingHeaders: webhook-id, webhook-timestamp or webhook-signature is empty.
	ErrMissingHeaders = errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	// ErrInvalidTimestamp: webhook-timestamp is not an integer number of Unix seconds.
	ErrInvalidTimestamp = errors.New("webhook-timestamp is not Unix seconds")
	// ErrTimestampTooOld: webhook-timestamp is more than [Tolerance] in the past.
	ErrTimestampTooOld = errors.New("webhook-timestamp too old")
	// ErrTimestampTooNew: webhook-timestamp is more than [Tolerance] in the future.
	ErrTimestampTooNew = errors.New("webhook-timestamp too new")
	// ErrNoMatch: no v1 signature in webhook-signature matches any secret.
	ErrNoMatch = errors.New("no matching signature")
)

// NewSecret returns a new secret holding 32 random bytes.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return SecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// DecodeSecret returns the HMAC key of a whsec_ secret.
func DecodeSecret(secret string) ([]byte, error) {
	raw, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, ErrInvalidSecret
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, ErrInvalidSecret
	}
	if len(key) < MinKeyBytes || len(key) > MaxKeyBytes {
		return nil, ErrInvalidSecret
	}
	return key, nil
}

// Sign returns one "v1,<base64>" signature of body for msgID at timestamp.
func Sign(secret, msgID string, timestamp time.Time, body []byte) (string, error) {
	key, err := DecodeSecret(secret)
	if err != nil {
		return "", err
	}
	return "v1," + base64.StdEncoding.EncodeToString(mac(key, msgID, timestamp.Unix(), body)), nil
}

// SignAll returns the webhook-signature header value: one signature per
// secret, space-separated (several secrets during a rotation's grace period).
func SignAll(secrets []string, msgID string, timestamp time.Time, body []byte) (string, error) {
	if len(secrets) == 0 {
		return "", errors.New("no signing secret")
	}
	parts := make([]string, 0, len(secrets))
	for i, s := range secrets {
		sig, err := Sign(s, msgID, timestamp, body)
		if err != nil {
			return "", fmt.Errorf("secret %d: %w", i, err)
		}
		parts = append(parts, sig)
	}
	return strings.Join(parts, " "), nil
}

// Verify checks a request the Standard Webhooks way: the three headers are
// present, the timestamp is within [Tolerance] of now, and at least one "v1,"
// entry of signatureHeader is the signature of body under at least one of
// secrets (several during a rotation). Entries of other versions are skipped.
// Comparisons are constant-time. A secret that does not decode is an error
// wrapping [ErrInvalidSecret], whatever the headers hold.
func Verify(secrets []string, msgID, timestampHeader, signatureHeader string, body []byte, now time.Time) error {
	if len(secrets) == 0 {
		return fmt.Errorf("no verification secret: %w", ErrInvalidSecret)
	}
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		key, err := DecodeSecret(s)
		if err != nil {
			return fmt.Errorf("secret %d: %w", i, err)
		}
		keys[i] = key
	}
	if msgID == "" || timestampHeader == "" || signatureHeader == "" {
		return ErrMissingHeaders
	}
	unix, err := strconv.ParseInt(timestampHeader, 10, 64)
	if err != nil {
		return ErrInvalidTimestamp
	}
	nowUnix := now.Unix()
	tol := int64(Tolerance / time.Second)
	switch {
	case unix < nowUnix-tol:
		return ErrTimestampTooOld
	case unix > nowUnix+tol:
		return ErrTimestampTooNew
	}

	expected := make([][sigLen]byte, len(keys))
	for i, key := range keys {
		base64.StdEncoding.Encode(expected[i][:], mac(key, msgID, unix, body))
	}
	for entry := range strings.SplitSeq(signatureHeader, " ") {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		for i := range expected {
			if hmac.Equal([]byte(sig), expected[i][:]) {
				return nil
			}
		}
	}
	return ErrNoMatch
}

// sigLen is the length of a base64-encoded HMAC-SHA256.
const sigLen = 44

func mac(key []byte, msgID string, unix int64, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	var buf [24]byte
	m.Write([]byte(msgID))
	m.Write(append(strconv.AppendInt(append(buf[:0], '.'), unix, 10), '.'))
	m.Write(body)
	return m.Sum(nil)
}
