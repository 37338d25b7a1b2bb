package signature_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hookline/hookline/pkg/signature"
)

// The Standard Webhooks specification's own example.
const (
	specSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTS     = 1614265330
	specBody   = `{"test": 2432232314}`
	specSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignSpecVector(t *testing.T) {
	t.Parallel()
	got, err := signature.Sign(specSecret, specID, time.Unix(specTS, 0), []byte(specBody))
	if err != nil {
		t.Fatal(err)
	}
	if got != specSig {
		t.Fatalf("Sign = %q, want %q", got, specSig)
	}
	if err := signature.Verify([]string{specSecret}, specID, strconv.Itoa(specTS), specSig, []byte(specBody), time.Unix(specTS, 0)); err != nil {
		t.Fatalf("Verify(spec vector) = %v", err)
	}
}

// vector is one entry of testdata/vectors.json.
type vector struct {
	Name      string   `json:"name"`
	Secrets   []string `json:"secrets"`
	MsgID     string   `json:"msg_id"`
	Timestamp int64    `json:"timestamp"`
	Body      string   `json:"body"`
	Signature string   `json:"signature"`
}

const vectorsFile = "testdata/vectors.json"

func loadVectors(t *testing.T) []vector {
	t.Helper()
	raw, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatalf("decode %s: %v", vectorsFile, err)
	}
	if len(vs) < 5 {
		t.Fatalf("%s holds %d vectors, want at least 5", vectorsFile, len(vs))
	}
	return vs
}

func TestVectors(t *testing.T) {
	t.Parallel()
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			ts := time.Unix(v.Timestamp, 0)
			got, err := signature.SignAll(v.Secrets, v.MsgID, ts, []byte(v.Body))
			if err != nil {
				t.Fatal(err)
			}
			if got != v.Signature {
				t.Fatalf("SignAll = %q, want %q", got, v.Signature)
			}
			for i, s := range v.Secrets {
				if err := signature.Verify([]string{s}, v.MsgID, strconv.FormatInt(v.Timestamp, 10), v.Signature, []byte(v.Body), ts); err != nil {
					t.Fatalf("Verify with secret %d = %v", i, err)
				}
			}
		})
	}
}

// TestRegenerateVectors rewrites testdata/vectors.json, signing with the
// independent Standard Webhooks library (not ours), when
// HOOKLINE_REGENERATE_VECTORS=1. TestVectors then holds our code to it.
func TestRegenerateVectors(t *testing.T) {
	if os.Getenv("HOOKLINE_REGENERATE_VECTORS") != "1" {
		t.Skip("set HOOKLINE_REGENERATE_VECTORS=1 to rewrite " + vectorsFile)
	}
	secret := func(seed string, n int) string {
		var key []byte
		for i := 0; len(key) < n; i++ {
			h := sha256.Sum256([]byte(seed + strconv.Itoa(i)))
			key = append(key, h[:]...)
		}
		return signature.SecretPrefix + base64.StdEncoding.EncodeToString(key[:n])
	}
	vs := []vector{
		{Name: "spec example", Secrets: []string{specSecret}, MsgID: specID, Timestamp: specTS, Body: specBody},
		{Name: "24 byte key", Secrets: []string{secret("a", 24)}, MsgID: "evt_01JABCDEF", Timestamp: 1700000000, Body: `{"type":"order.created","timestamp":"2023-11-14T22:13:20Z","data":{"amount":150}}`},
		{Name: "64 byte key", Secrets: []string{secret("b", 64)}, MsgID: "evt_x", Timestamp: 1800000000, Body: `{}`},
		{Name: "empty body", Secrets: []string{secret("c", 32)}, MsgID: "msg_empty", Timestamp: 1614265330, Body: ``},
		{Name: "unicode body", Secrets: []string{secret("d", 32)}, MsgID: "producer-chosen_ID-1", Timestamp: 2000000000, Body: `{"name":"Zoë ☃ 日本","n":[1,2.5,null,true]}`},
		{Name: "two secrets (rotation)", Secrets: []string{secret("new", 32), secret("old", 32)}, MsgID: "evt_rotate", Timestamp: 1750000000, Body: `{"rotating":true}`},
		{Name: "three secrets", Secrets: []string{secret("e", 24), secret("f", 48), secret("g", 64)}, MsgID: "evt_3", Timestamp: 1650000000, Body: "line1\nline2\r\n"},
	}
	for i := range vs {
		v := &vs[i]
		sigs := make([]string, 0, len(v.Secrets))
		for _, s := range v.Secrets {
			wh, err := standardwebhooks.NewWebhook(s)
			if err != nil {
				t.Fatal(err)
			}
			sig, err := wh.Sign(v.MsgID, time.Unix(v.Timestamp, 0), []byte(v.Body))
			if err != nil {
				t.Fatal(err)
			}
			sigs = append(sigs, sig)
		}
		v.Signature = strings.Join(sigs, " ")
	}
	out, err := json.MarshalIndent(vs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newSecret(t *testing.T) string {
	t.Helper()
	s := signature.NewSecret()
	if _, err := signature.DecodeSecret(s); err != nil {
		t.Fatalf("NewSecret() = %q does not decode: %v", s, err)
	}
	return s
}

func headers(id string, ts time.Time, sig string) http.Header {
	h := http.Header{}
	h.Set(signature.HeaderID, id)
	h.Set(signature.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(signature.HeaderSignature, sig)
	return h
}

// The reference verifier checks the timestamp against time.Now, so these
// cross-checks sign at the current time.
func TestReferenceVerifierAcceptsOurs(t *testing.T) {
	t.Parallel()
	a, b := newSecret(t), newSecret(t)
	now := time.Now()
	body := []byte(`{"type":"order.created","data":{"amount":150,"currency":"EUR"}}`)
	for _, secrets := range [][]string{{a}, {a, b}} {
		sig, err := signature.SignAll(secrets, "evt_cross", now, body)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(strings.Fields(sig)); n != len(secrets) {
			t.Fatalf("SignAll with %d secrets gave %d signatures: %q", len(secrets), n, sig)
		}
		for i, s := range secrets {
			wh, err := standardwebhooks.NewWebhook(s)
			if err != nil {
				t.Fatal(err)
			}
			if err := wh.Verify(body, headers("evt_cross", now, sig)); err != nil {
				t.Fatalf("reference Verify (secret %d of %d) = %v", i+1, len(secrets), err)
			}
		}
	}
	// And it refuses ours under a secret we did not sign with.
	sig, err := signature.SignAll([]string{a}, "evt_cross", now, body)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := standardwebhooks.NewWebhook(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(body, headers("evt_cross", now, sig)); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Fatalf("reference Verify with wrong secret = %v, want no match", err)
	}
}

func TestVerifyAcceptsReference(t *testing.T) {
	t.Parallel()
	a, b := newSecret(t), newSecret(t)
	now := time.Now()
	body := []byte(`{"hello":"world"}`)
	sigs := make([]string, 0, 2)
	for _, s := range []string{a, b} {
		wh, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := wh.Sign("msg_ref", now, body)
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, sig)
		ours, err := signature.Sign(s, "msg_ref", now, body)
		if err != nil {
			t.Fatal(err)
		}
		if ours != sig {
			t.Fatalf("Sign = %q, reference = %q", ours, sig)
		}
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	for _, tc := range []struct {
		name    string
		secrets []string
		header  string
	}{
		{"one secret", []string{a}, sigs[0]},
		{"second secret", []string{b}, sigs[1]},
		{"both signatures, first secret", []string{a}, sigs[0] + " " + sigs[1]},
		{"both signatures, second secret", []string{b}, sigs[0] + " " + sigs[1]},
		{"both secrets", []string{b, a}, sigs[0]},
	} {
		if err := signature.Verify(tc.secrets, "msg_ref", ts, tc.header, body, now); err != nil {
			t.Errorf("%s: Verify = %v", tc.name, err)
		}
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret_, other := newSecret(t), newSecret(t), newSecret(t)
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"amount":150}`)
	const id = "evt_1"
	sig := func(secrets ...string) string {
		s, err := signature.SignAll(secrets, id, now, body)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	sigNew := sig(newSecret_)
	sigBoth := sig(newSecret_, oldSecret)
	_, b64, _ := strings.Cut(sigNew, ",")

	tests := []struct {
		name    string
		secrets []string
		id, ts  string
		sig     string
		body    []byte
		now     time.Time
		want    error
	}{
		{"valid", []string{newSecret_}, id, ts, sigNew, body, now, nil},
		{"rotation: receiver has old and new, sender only new", []string{oldSecret, newSecret_}, id, ts, sigNew, body, now, nil},
		{"rotation: receiver has only old", []string{oldSecret}, id, ts, sigBoth, body, now, nil},
		{"rotation: receiver has only new", []string{newSecret_}, id, ts, sigBoth, body, now, nil},
		{"wrong secret", []string{other}, id, ts, sigBoth, body, now, signature.ErrNoMatch},
		{"tampered body", []string{newSecret_}, id, ts, sigNew, []byte(`{"amount":151}`), now, signature.ErrNoMatch},
		{"tampered id", []string{newSecret_}, "evt_2", ts, sigNew, body, now, signature.ErrNoMatch},
		{"tampered timestamp", []string{newSecret_}, id, strconv.FormatInt(now.Unix()+1, 10), sigNew, body, now, signature.ErrNoMatch},
		{"other versions skipped", []string{newSecret_}, id, ts, "v1a,xyz v2," + b64 + " " + sigNew, body, now, nil},
		{"only other version", []string{newSecret_}, id, ts, "v2," + b64, body, now, signature.ErrNoMatch},
		{"entry without comma", []string{newSecret_}, id, ts, "garbage " + sigNew, body, now, nil},
		{"signature with trailing junk", []string{newSecret_}, id, ts, sigNew + "x", body, now, signature.ErrNoMatch},
		{"truncated signature", []string{newSecret_}, id, ts, sigNew[:len(sigNew)-2], body, now, signature.ErrNoMatch},
		{"empty signature value", []string{newSecret_}, id, ts, "v1,", body, now, signature.ErrNoMatch},
		{"missing id", []string{newSecret_}, "", ts, sigNew, body, now, signature.ErrMissingHeaders},
		{"missing timestamp", []string{newSecret_}, id, "", sigNew, body, now, signature.ErrMissingHeaders},
		{"missing signature", []string{newSecret_}, id, ts, "", body, now, signature.ErrMissingHeaders},
		{"timestamp not a number", []string{newSecret_}, id, "17e8", sigNew, body, now, signature.ErrInvalidTimestamp},
		{"timestamp overflows", []string{newSecret_}, id, "99999999999999999999", sigNew, body, now, signature.ErrInvalidTimestamp},
		{"at old edge of tolerance", []string{newSecret_}, id, ts, sigNew, body, now.Add(signature.Tolerance), nil},
		{"at new edge of tolerance", []string{newSecret_}, id, ts, sigNew, body, now.Add(-signature.Tolerance), nil},
		{"too old", []string{newSecret_}, id, ts, sigNew, body, now.Add(signature.Tolerance + time.Second), signature.ErrTimestampTooOld},
		{"too new", []string{newSecret_}, id, ts, sigNew, body, now.Add(-signature.Tolerance - time.Second), signature.ErrTimestampTooNew},
		{"no secrets", nil, id, ts, sigNew, body, now, signature.ErrInvalidSecret},
		{"bad secret among good", []string{newSecret_, "whsec_short"}, id, ts, sigNew, body, now, signature.ErrInvalidSecret},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := signature.Verify(tc.secrets, tc.id, tc.ts, tc.sig, tc.body, tc.now)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDecodeSecret(t *testing.T) {
	t.Parallel()
	enc := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa5}, n)) }
	tests := []struct {
		name    string
		secret  string
		wantLen int // 0: invalid
	}{
		{"24 bytes", "whsec_" + enc(24), 24},
		{"32 bytes", "whsec_" + enc(32), 32},
		{"64 bytes", "whsec_" + enc(64), 64},
		{"spec secret", specSecret, 24},
		{"23 bytes", "whsec_" + enc(23), 0},
		{"65 bytes", "whsec_" + enc(65), 0},
		{"empty key", "whsec_", 0},
		{"empty", "", 0},
		{"missing prefix", enc(32), 0},
		{"wrong prefix", "whsk_" + enc(32), 0},
		{"upper-case prefix", "WHSEC_" + enc(32), 0},
		{"bad base64", "whsec_" + enc(32)[:10] + "!!" + enc(32)[12:], 0},
		{"url-safe alphabet", "whsec_" + strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff}, 16))), 0},
		{"missing padding", "whsec_" + strings.TrimRight(enc(32), "="), 0},
		{"leading space", " whsec_" + enc(32), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			key, err := signature.DecodeSecret(tc.secret)
			if tc.wantLen == 0 {
				if !errors.Is(err, signature.ErrInvalidSecret) {
					t.Fatalf("DecodeSecret(%q) = %d bytes, %v; want ErrInvalidSecret", tc.secret, len(key), err)
				}
				if _, err := signature.Sign(tc.secret, "id", time.Unix(1, 0), nil); !errors.Is(err, signature.ErrInvalidSecret) {
					t.Fatalf("Sign with %q = %v, want ErrInvalidSecret", tc.secret, err)
				}
				return
			}
			if err != nil || len(key) != tc.wantLen {
				t.Fatalf("DecodeSecret(%q) = %d bytes, %v; want %d bytes", tc.secret, len(key), err, tc.wantLen)
			}
		})
	}
}

func TestSignAll(t *testing.T) {
	t.Parallel()
	if _, err := signature.SignAll(nil, "id", time.Now(), nil); err == nil {
		t.Fatal("SignAll(no secrets) succeeded")
	}
	if _, err := signature.SignAll([]string{newSecret(t), "nope"}, "id", time.Now(), nil); !errors.Is(err, signature.ErrInvalidSecret) {
		t.Fatalf("SignAll(bad second secret) = %v, want ErrInvalidSecret", err)
	}
}

func TestNewSecretIsRandom(t *testing.T) {
	t.Parallel()
	if a, b := newSecret(t), newSecret(t); a == b {
		t.Fatalf("two NewSecret calls returned the same %q", a)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add(specID, strconv.Itoa(specTS), specSig, []byte(specBody))
	f.Add("evt_1", "1700000000", "v1,abc v1a,def v2", []byte(`{}`))
	f.Add("", "", "", []byte(nil))
	f.Add("id", "-1", "v1, ,v1 v1,,,", []byte("\x00\xff"))
	f.Add("id", "+1614265330", "  v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=  ", []byte(specBody))
	secrets := []string{specSecret, "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 64))}
	now := time.Unix(specTS, 0)
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		// Arbitrary headers: must not panic; success only with a real signature.
		if err := signature.Verify(secrets, id, ts, sig, body, now); err == nil {
			if !strings.Contains(sig, "v1,") {
				t.Fatalf("Verify accepted %q without a v1 signature", sig)
			}
		}
		if id == "" {
			return
		}
		// Verify(Sign(x)) == nil for any id and body, with either secret.
		at := now.Add(time.Duration(len(body)%600-300) * time.Second)
		for i, s := range secrets {
			good, err := signature.Sign(s, id, at, body)
			if err != nil {
				t.Fatal(err)
			}
			header := sig + " " + good
			if err := signature.Verify(secrets, id, strconv.FormatInt(at.Unix(), 10), header, body, now); err != nil {
				t.Fatalf("Verify(Sign(x)) with secret %d = %v", i, err)
			}
		}
	})
}

func BenchmarkSign(b *testing.B) {
	secret := signature.NewSecret()
	body := bytes.Repeat([]byte(`{"type":"order.created","data":{"amount":150}}`), 20) // ~1 KiB
	ts := time.Now()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := signature.Sign(secret, "evt_01JBENCHMARK", ts, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	secrets := []string{signature.NewSecret(), signature.NewSecret()}
	body := bytes.Repeat([]byte(`{"type":"order.created","data":{"amount":150}}`), 20)
	now := time.Now()
	sig, err := signature.SignAll(secrets, "evt_01JBENCHMARK", now, body)
	if err != nil {
		b.Fatal(err)
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := signature.Verify(secrets[1:], "evt_01JBENCHMARK", ts, sig, body, now); err != nil {
			b.Fatal(err)
		}
	}
}
