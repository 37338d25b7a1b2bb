package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// Signers written from each provider's documentation, independently of the
// verifier code.

func githubSig(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func stripeV1(secret string, t int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(t, 10) + "." + string(body)))
	return hex.EncodeToString(m.Sum(nil))
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func reasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return ""
}

func TestVerify(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"id":"evt_1","type":"invoice.paid"}`)

	const ghSecret = "It's a Secret to Everybody"
	const stripeSecret = "whsec_test_secret"
	const swSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	ts := now.Unix()
	tsS := strconv.FormatInt(ts, 10)

	hmacCfg := Config{Kind: HMAC, Header: "X-Signature", Prefix: "sha512=", Algorithm: "sha512", Encoding: "base64",
		SignedContent: "{timestamp}.{body}", TimestampHeader: "X-Timestamp"}
	hmacCfg.Normalize()
	m := hmac.New(sha512.New, []byte("hmac-secret"))
	m.Write([]byte(tsS + "." + string(body)))
	hmacSig := "sha512=" + base64.StdEncoding.EncodeToString(m.Sum(nil))
	plain := Config{Kind: HMAC, Header: "X-Sig"}
	plain.Normalize()
	m = hmac.New(sha256.New, []byte("k"))
	m.Write(body)
	plainSig := hex.EncodeToString(m.Sum(nil))

	tests := []struct {
		name    string
		cfg     Config
		secrets []string
		h       http.Header
		body    []byte
		want    string // reason, "" for success
	}{
		// GitHub's documented example (docs.github.com, "Validating webhook deliveries").
		{"github docs vector", Config{Kind: GitHub}, []string{ghSecret},
			hdr(HeaderGitHub, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"), []byte("Hello, World!"), ""},
		{"github uppercase hex", Config{Kind: GitHub}, []string{ghSecret},
			hdr(HeaderGitHub, "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17"), []byte("Hello, World!"), ""},
		{"github tampered body", Config{Kind: GitHub}, []string{ghSecret},
			hdr(HeaderGitHub, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"), []byte("Hello, World?"), ReasonInvalidSignature},
		{"github wrong secret", Config{Kind: GitHub}, []string{"nope"}, hdr(HeaderGitHub, githubSig(ghSecret, body)), body, ReasonInvalidSignature},
		{"github second secret", Config{Kind: GitHub}, []string{"new", ghSecret}, hdr(HeaderGitHub, githubSig(ghSecret, body)), body, ""},
		{"github missing", Config{Kind: GitHub}, []string{ghSecret}, hdr(), body, ReasonMissingSignature},
		{"github sha1 only", Config{Kind: GitHub}, []string{ghSecret}, hdr(HeaderGitHub, "sha1=abcd"), body, ReasonInvalidSignature},

		{"stripe valid", Config{Kind: Stripe}, []string{stripeSecret},
			hdr(HeaderStripe, "t="+tsS+",v1="+stripeV1(stripeSecret, ts, body)+",v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"), body, ""},
		{"stripe several v1 (rolled secret)", Config{Kind: Stripe}, []string{stripeSecret},
			hdr(HeaderStripe, "t="+tsS+",v1="+stripeV1("whsec_other", ts, body)+",v1="+stripeV1(stripeSecret, ts, body)), body, ""},
		{"stripe tampered", Config{Kind: Stripe}, []string{stripeSecret},
			hdr(HeaderStripe, "t="+tsS+",v1="+stripeV1(stripeSecret, ts, body)), []byte(`{"id":"evt_2"}`), ReasonInvalidSignature},
		{"stripe wrong secret", Config{Kind: Stripe}, []string{"whsec_nope"},
			hdr(HeaderStripe, "t="+tsS+",v1="+stripeV1(stripeSecret, ts, body)), body, ReasonInvalidSignature},
		{"stripe stale", Config{Kind: Stripe}, []string{stripeSecret},
			hdr(HeaderStripe, "t="+strconv.FormatInt(ts-301, 10)+",v1="+stripeV1(stripeSecret, ts-301, body)), body, ReasonStaleTimestamp},
		{"stripe within tolerance", Config{Kind: Stripe}, []string{stripeSecret},
			hdr(HeaderStripe, "t="+strconv.FormatInt(ts-299, 10)+",v1="+stripeV1(stripeSecret, ts-299, body)), body, ""},
		{"stripe timestamp moved", Config{Kind: Stripe}, []string{stripeSecret},
			hdr(HeaderStripe, "t="+strconv.FormatInt(ts-1, 10)+",v1="+stripeV1(stripeSecret, ts, body)), body, ReasonInvalidSignature},
		{"stripe missing", Config{Kind: Stripe}, []string{stripeSecret}, hdr(), body, ReasonMissingSignature},
		{"stripe no v1", Config{Kind: Stripe}, []string{stripeSecret}, hdr(HeaderStripe, "t="+tsS), body, ReasonInvalidSignature},

		{"hmac template sha512 base64", hmacCfg, []string{"hmac-secret"}, hdr("X-Signature", hmacSig, "X-Timestamp", tsS), body, ""},
		{"hmac template stale", hmacCfg, []string{"hmac-secret"},
			hdr("X-Signature", hmacSig, "X-Timestamp", strconv.FormatInt(ts-3600, 10)), body, ReasonStaleTimestamp},
		{"hmac template other timestamp", hmacCfg, []string{"hmac-secret"},
			hdr("X-Signature", hmacSig, "X-Timestamp", strconv.FormatInt(ts-5, 10)), body, ReasonInvalidSignature},
		{"hmac missing timestamp", hmacCfg, []string{"hmac-secret"}, hdr("X-Signature", hmacSig), body, ReasonMissingSignature},
		{"hmac missing prefix", hmacCfg, []string{"hmac-secret"}, hdr("X-Signature", hmacSig[7:], "X-Timestamp", tsS), body, ReasonInvalidSignature},
		{"hmac body hex", plain, []string{"k"}, hdr("x-sig", plainSig), body, ""},
		{"hmac body hex tampered", plain, []string{"k"}, hdr("X-Sig", plainSig), append([]byte(" "), body...), ReasonInvalidSignature},
		{"hmac not hex", plain, []string{"k"}, hdr("X-Sig", "zz"), body, ReasonInvalidSignature},

		{"basic ok", Config{Kind: BasicAuth, Username: "u"}, []string{"old", "p@ss"}, hdr("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("u:p@ss"))), body, ""},
		{"basic wrong user", Config{Kind: BasicAuth, Username: "u"}, []string{"p@ss"}, hdr("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("v:p@ss"))), body, ReasonInvalidCredentials},
		{"basic wrong password", Config{Kind: BasicAuth, Username: "u"}, []string{"p@ss"}, hdr("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("u:p@s"))), body, ReasonInvalidCredentials},
		{"basic missing", Config{Kind: BasicAuth, Username: "u"}, []string{"p@ss"}, hdr(), body, ReasonMissingCredentials},
		{"bearer ok", Config{Kind: Bearer}, []string{"tok"}, hdr("Authorization", "Bearer tok"), body, ""},
		{"bearer wrong", Config{Kind: Bearer}, []string{"tok"}, hdr("Authorization", "Bearer tok2"), body, ReasonInvalidCredentials},
		{"bearer missing", Config{Kind: Bearer}, []string{"tok"}, hdr("Authorization", "Basic x"), body, ReasonMissingCredentials},
		{"none", Config{Kind: None}, nil, hdr(), body, ""},

		// The Standard Webhooks vector from RESEARCH.md is checked in
		// TestStandardWebhooksVector (it needs its own clock).
		{"standard missing", Config{Kind: StandardWebhooks}, []string{swSecret}, hdr(), body, ReasonMissingSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := reasonOf(Verify(tc.cfg, tc.secrets, tc.h, tc.body, now))
			if got != tc.want {
				t.Fatalf("Verify = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestStandardWebhooksVector(t *testing.T) {
	t.Parallel()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	h := hdr("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp", "1614265330",
		"webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	body := []byte(`{"test": 2432232314}`)
	at := time.Unix(1614265330, 0)
	cfg := Config{Kind: StandardWebhooks}
	if err := Verify(cfg, []string{secret}, h, body, at.Add(time.Minute)); err != nil {
		t.Fatalf("vector: %v", err)
	}
	if got := reasonOf(Verify(cfg, []string{secret}, h, body, at.Add(6*time.Minute))); got != ReasonStaleTimestamp {
		t.Fatalf("stale: %q", got)
	}
	if got := reasonOf(Verify(cfg, []string{secret}, h, []byte(`{"test": 2432232315}`), at)); got != ReasonInvalidSignature {
		t.Fatalf("tampered: %q", got)
	}
}

func TestConfigProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		cfg   Config
		field string // "" for none
	}{
		{"github", Config{Kind: GitHub}, ""},
		{"unknown kind", Config{Kind: "svix"}, "kind"},
		{"hmac needs header", Config{Kind: HMAC}, "header"},
		{"hmac bad algorithm", Config{Kind: HMAC, Header: "X", Algorithm: "md5"}, "algorithm"},
		{"hmac bad encoding", Config{Kind: HMAC, Header: "X", Encoding: "b32"}, "encoding"},
		{"hmac timestamp without header", Config{Kind: HMAC, Header: "X", SignedContent: "{timestamp}.{body}"}, "timestamp_header"},
		{"hmac no body", Config{Kind: HMAC, Header: "X", SignedContent: "{timestamp}"}, "signed_content"},
		{"hmac unknown placeholder", Config{Kind: HMAC, Header: "X", SignedContent: "{id}.{body}"}, "signed_content"},
		{"basic needs username", Config{Kind: BasicAuth}, "username"},
		{"stripe tolerance", Config{Kind: Stripe, ToleranceSeconds: -1}, "tolerance_seconds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tc.cfg
			c.Normalize()
			p := c.Problems()
			if tc.field == "" && len(p) > 0 || tc.field != "" && p[tc.field] == "" {
				t.Fatalf("problems %v, want one for %q", p, tc.field)
			}
		})
	}
	if SecretProblem(StandardWebhooks, "plain") == "" || SecretProblem(GitHub, "") == "" || SecretProblem(None, "x") == "" ||
		SecretProblem(GitHub, "s") != "" {
		t.Fatal("SecretProblem")
	}
}

func FuzzVerifyStripe(f *testing.F) {
	f.Add("t=1700000000,v1=abcd,v0=ef", []byte("{}"))
	f.Add("t=,v1=", []byte(""))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		now := time.Unix(1_700_000_000, 0)
		err := Verify(Config{Kind: Stripe}, []string{"whsec_x"}, hdr(HeaderStripe, header), body, now)
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("untyped error %v", err)
		}
		good := "t=1700000000,v1=" + stripeV1("whsec_x", 1_700_000_000, body)
		if err := Verify(Config{Kind: Stripe}, []string{"whsec_x"}, hdr(HeaderStripe, good), body, now); err != nil {
			t.Fatalf("own signature refused: %v", err)
		}
	})
}
