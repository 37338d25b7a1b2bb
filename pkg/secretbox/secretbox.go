// Package secretbox encrypts small secrets (endpoint signing secrets) at rest
// with AES-256-GCM under a keyring read from configuration.
//
// A sealed value is self-describing: "enc:v1:<key-id>:<base64url(nonce|ciphertext)>".
// The keyring's first key seals; every key is tried, by id, to open. Any
// other value (a plain "whsec_..." secret stored before encryption was
// configured) opens to itself, so turning encryption on needs no migration
// step beyond re-sealing (hookline-ingest rotate-secrets).
//
// Each value is sealed with additional data (the endpoint id), so a
// ciphertext copied to another row does not open there.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Prefix starts every sealed value.
const Prefix = "enc:v1:"

// KeySize is the length of a key in bytes (AES-256).
const KeySize = 32

var keyIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// ErrNoKey means a sealed value names a key the keyring does not hold, or
// the keyring is empty.
var ErrNoKey = errors.New("no key to open the secret")

// ErrCorrupt means a sealed value is malformed or fails authentication.
var ErrCorrupt = errors.New("sealed secret is corrupt or was sealed for another record")

type key struct {
	id   string
	aead cipher.AEAD
}

// Keyring holds the encryption keys. The zero value and a nil *Keyring are
// valid and empty: Seal then returns the plaintext and Open opens only
// plaintext values.
type Keyring struct {
	keys []key // keys[0] seals
}

// Parse reads a keyring from its configuration form: comma-separated
// "<key-id>:<base64 of 32 bytes>" entries, the primary (sealing) key first.
// An empty string yields a nil keyring. Errors never contain key material.
func Parse(s string) (*Keyring, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	kr := &Keyring{}
	seen := map[string]bool{}
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		id, b64, ok := strings.Cut(entry, ":")
		if !ok {
			return nil, fmt.Errorf("entry %d is not <key-id>:<base64 key>", i+1)
		}
		if !keyIDRE.MatchString(id) {
			return nil, fmt.Errorf("entry %d: key id must match [A-Za-z0-9_-]{1,32}", i+1)
		}
		if seen[id] {
			return nil, fmt.Errorf("entry %d: key id %q appears twice", i+1, id)
		}
		seen[id] = true
		raw, err := decodeKey(b64)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", id, err)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", id, err)
		}
		kr.keys = append(kr.keys, key{id: id, aead: aead})
	}
	return kr, nil
}

func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("must be base64 of %d bytes, got %d bytes", KeySize, len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("is not valid base64")
}

// NewKey returns a random key in configuration form, "<id>:<base64>".
func NewKey(id string) string {
	b := make([]byte, KeySize)
	_, _ = rand.Read(b)
	return id + ":" + base64.StdEncoding.EncodeToString(b)
}

// Enabled reports whether the keyring holds a key, i.e. whether Seal encrypts.
func (k *Keyring) Enabled() bool { return k != nil && len(k.keys) > 0 }

// PrimaryID returns the id of the sealing key, or "".
func (k *Keyring) PrimaryID() string {
	if !k.Enabled() {
		return ""
	}
	return k.keys[0].id
}

// Sealed reports whether v is in the sealed form.
func Sealed(v string) bool { return strings.HasPrefix(v, Prefix) }

// KeyID returns the id of the key that sealed v, or "" for a plain value.
func KeyID(v string) string {
	if !Sealed(v) {
		return ""
	}
	id, _, _ := strings.Cut(strings.TrimPrefix(v, Prefix), ":")
	return id
}

// Seal encrypts plaintext for the record named by aad with the primary key.
// Without a key it returns plaintext unchanged.
func (k *Keyring) Seal(plaintext, aad string) (string, error) {
	if !k.Enabled() {
		return plaintext, nil
	}
	p := k.keys[0]
	nonce := make([]byte, p.aead.NonceSize(), p.aead.NonceSize()+len(plaintext)+p.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal secret: %w", err)
	}
	out := p.aead.Seal(nonce, nonce, []byte(plaintext), []byte(aad))
	return Prefix + p.id + ":" + base64.RawURLEncoding.EncodeToString(out), nil
}

// Open returns the plaintext of v, sealed for the record named by aad. A
// value that is not sealed is returned as it is.
func (k *Keyring) Open(v, aad string) (string, error) {
	if !Sealed(v) {
		return v, nil
	}
	id, b64, ok := strings.Cut(strings.TrimPrefix(v, Prefix), ":")
	if !ok {
		return "", ErrCorrupt
	}
	if k == nil {
		return "", fmt.Errorf("%w (sealed with key %q; set HOOKLINE_ENCRYPTION_KEYS)", ErrNoKey, id)
	}
	for _, kk := range k.keys {
		if kk.id != id {
			continue
		}
		raw, err := base64.RawURLEncoding.DecodeString(b64)
		ns := kk.aead.NonceSize()
		if err != nil || len(raw) < ns+kk.aead.Overhead() {
			return "", ErrCorrupt
		}
		pt, err := kk.aead.Open(nil, raw[:ns], raw[ns:], []byte(aad))
		if err != nil {
			return "", ErrCorrupt
		}
		return string(pt), nil
	}
	return "", fmt.Errorf("%w (sealed with key %q, which HOOKLINE_ENCRYPTION_KEYS does not hold)", ErrNoKey, id)
}

// NeedsReseal reports whether v is not sealed with the primary key: plain,
// or sealed with an older key. Without a key nothing needs resealing.
func (k *Keyring) NeedsReseal(v string) bool {
	return k.Enabled() && KeyID(v) != k.keys[0].id
}
