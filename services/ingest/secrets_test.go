package ingest

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/secretbox"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// TestSecretsEncryptedAtRest: with HOOKLINE_ENCRYPTION_KEYS the database
// row and the KV entry hold only ciphertext, the API and a cache with the
// keyring show the plaintext, and rotate-secrets moves every secret to a
// new key so the old one can be dropped.
func TestSecretsEncryptedAtRest(t *testing.T) {
	t.Parallel()
	oldKey, newKey := secretbox.NewKey("k2026a"), secretbox.NewKey("k2026b")
	oldRing, err := secretbox.Parse(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, func(c *config.Config) { c.EncryptionKeys = oldRing })
	b.tenant(t, "acme")
	ep := b.endpoint(t, "acme", map[string]any{"url": epURL})
	id, secret := ep["id"].(string), ep["secret"].(string)
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("API shows %q, want the plaintext secret", secret)
	}

	stored := func() (string, *string) {
		t.Helper()
		var s string
		var prev *string
		if err := b.pool.QueryRow(t.Context(), `SELECT secret, previous_secret FROM endpoints WHERE id = $1`, id).Scan(&s, &prev); err != nil {
			t.Fatal(err)
		}
		return s, prev
	}
	kvRaw := func() string {
		t.Helper()
		e, err := b.kv.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		return string(e.Value())
	}
	plain := strings.TrimPrefix(secret, "whsec_")
	if s, _ := stored(); !strings.HasPrefix(s, "enc:v1:k2026a:") || strings.Contains(s, plain) {
		t.Fatalf("database holds %q", s)
	}
	b.waitKV(t, id, func(e *hooklinev1.Endpoint) bool { return e.GetVersion() == 1 })
	if raw := kvRaw(); strings.Contains(raw, plain) || !strings.Contains(raw, "enc:v1:k2026a:") {
		t.Fatal("KV holds the plaintext secret")
	}
	if r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints/"+id, adminToken, nil); r.body["secret"] != secret {
		t.Fatalf("GET shows %v", r.body["secret"])
	}

	// Rotation keeps both, each sealed; the API answers the new plaintext.
	r := b.must(t, http.StatusOK, "POST", "/v1/tenants/acme/endpoints/"+id+"/secret/rotate", adminToken, map[string]any{})
	rotated := r.body["secret"].(string)
	s, prev := stored()
	if !secretbox.Sealed(s) || prev == nil || !secretbox.Sealed(*prev) || strings.Contains(s, strings.TrimPrefix(rotated, "whsec_")) {
		t.Fatalf("after rotation the database holds %q / %v", s, prev)
	}
	if r := b.must(t, http.StatusOK, "GET", "/v1/tenants/acme/endpoints/"+id, adminToken, nil); r.body["secret"] != rotated {
		t.Fatalf("GET after rotation shows %v", r.body["secret"])
	}
	// PATCH with the same secret is not a change; with another one it is.
	b.must(t, http.StatusOK, "PATCH", "/v1/tenants/acme/endpoints/"+id, adminToken, map[string]any{"secret": rotated, "description": "x"})
	if _, p := stored(); p == nil {
		t.Fatal("patching the same secret dropped the previous one")
	}

	// Key rotation: the new key first, rotate-secrets, then the old key can go.
	both, _ := secretbox.Parse(newKey + "," + oldKey)
	n, err := ResealSecrets(t.Context(), b.pool, both)
	if err != nil || n != 1 {
		t.Fatalf("ResealSecrets = %d, %v", n, err)
	}
	if n, _ := ResealSecrets(t.Context(), b.pool, both); n != 0 {
		t.Fatalf("second ResealSecrets rewrote %d endpoints", n)
	}
	s, prev = stored()
	if secretbox.KeyID(s) != "k2026b" || secretbox.KeyID(*prev) != "k2026b" {
		t.Fatalf("after reseal: %q / %q", s, *prev)
	}
	if err := endpoints.SyncAll(t.Context(), b.pool, b.kv); err != nil {
		t.Fatal(err)
	}
	onlyNew, _ := secretbox.Parse(newKey)
	cache := endpoints.NewCache(b.kv, slog.New(slog.DiscardHandler), endpoints.WithSecrets(onlyNew))
	got, err := cache.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetSecrets()) != 2 || got.GetSecrets()[0].GetValue() != rotated || got.GetSecrets()[1].GetValue() != secret {
		t.Fatalf("cache with only the new key sees %d secrets", len(got.GetSecrets()))
	}
	if !strings.Contains(kvRaw(), "enc:v1:k2026b:") {
		t.Fatal("KV not re-encrypted")
	}
}

// TestPlainSecretsBecomeEncrypted: secrets stored before encryption was
// configured stay readable, and rotate-secrets encrypts them.
func TestPlainSecretsBecomeEncrypted(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.tenant(t, "acme")
	ep := b.endpoint(t, "acme", map[string]any{"url": epURL})
	id, secret := ep["id"].(string), ep["secret"].(string)
	var s string
	if err := b.pool.QueryRow(t.Context(), `SELECT secret FROM endpoints WHERE id = $1`, id).Scan(&s); err != nil || s != secret {
		t.Fatalf("without keys the secret is stored in clear: %q, %v", s, err)
	}
	kr, _ := secretbox.Parse(secretbox.NewKey("first"))
	if n, err := ResealSecrets(t.Context(), b.pool, kr); err != nil || n != 1 {
		t.Fatalf("ResealSecrets = %d, %v", n, err)
	}
	if err := b.pool.QueryRow(t.Context(), `SELECT secret FROM endpoints WHERE id = $1`, id).Scan(&s); err != nil || secretbox.KeyID(s) != "first" {
		t.Fatalf("after reseal: %q, %v", s, err)
	}
	if got, err := kr.Open(s, id); err != nil || got != secret {
		t.Fatal("resealed secret does not open to the original")
	}
}
