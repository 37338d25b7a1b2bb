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

// ErrInvalidSecret is returned for a secret that is not whsec_ + base64 of
// 24 to 64 bytes.
var ErrInvalidSecret = errors.New("secret must be whsec_ followed by the base64 of 24 to 64 random bytes")

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

func mac(key []byte, msgID string, unix int64, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msgID))
	m.Write([]byte{'.'})
	m.Write(strconv.AppendInt(nil, unix, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}
