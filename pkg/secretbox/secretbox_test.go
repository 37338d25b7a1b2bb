package secretbox

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	good := NewKey("k1")
	cases := []struct {
		name string
		in   string
		ok   bool
		keys int
	}{
		{"empty", "", true, 0},
		{"blank", "  ", true, 0},
		{"one", good, true, 1},
		{"two", NewKey("new") + "," + good, true, 2},
		{"spaces", " " + NewKey("a") + " , " + NewKey("b"), true, 2},
		{"no colon", "abc", false, 0},
		{"bad id", "a.b:" + strings.SplitN(good, ":", 2)[1], false, 0},
		{"duplicate id", good + "," + good, false, 0},
		{"not base64", "k:!!!", false, 0},
		{"short key", "k:AAAA", false, 0},
		{"trailing comma", good + ",", false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kr, err := Parse(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("Parse(%q) error %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil {
				if b64 := strings.SplitN(good, ":", 2)[1]; strings.Contains(err.Error(), b64) {
					t.Fatal("error shows key material")
				}
				return
			}
			if got := len(kr.keysOrNil()); got != tc.keys {
				t.Fatalf("%d keys, want %d", got, tc.keys)
			}
		})
	}
}

func (k *Keyring) keysOrNil() []key {
	if k == nil {
		return nil
	}
	return k.keys
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	oldCfg := NewKey("old")
	oldKR, _ := Parse(oldCfg)
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

	sealed, err := oldKR.Seal(secret, "ep_1")
	if err != nil || !strings.HasPrefix(sealed, "enc:v1:old:") || strings.Contains(sealed, secret) {
		t.Fatalf("Seal = %q, %v", sealed, err)
	}
	again, _ := oldKR.Seal(secret, "ep_1")
	if again == sealed {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	if got, err := oldKR.Open(sealed, "ep_1"); err != nil || got != secret {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := oldKR.Open(sealed, "ep_2"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open for another record: %v", err)
	}
	tampered := sealed[:len(sealed)-2] + "AA"
	if _, err := oldKR.Open(tampered, "ep_1"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open tampered: %v", err)
	}
	if got, err := oldKR.Open(secret, "ep_1"); err != nil || got != secret {
		t.Fatalf("plain value opens to itself: %q, %v", got, err)
	}

	// Rotation: the new key seals, the old one still opens.
	rotated, _ := Parse(NewKey("new") + "," + oldCfg)
	if got, err := rotated.Open(sealed, "ep_1"); err != nil || got != secret {
		t.Fatalf("open with rotated keyring = %q, %v", got, err)
	}
	if !rotated.NeedsReseal(sealed) || rotated.NeedsReseal(must(rotated.Seal(secret, "x"))) || !rotated.NeedsReseal(secret) {
		t.Fatal("NeedsReseal wrong")
	}
	if KeyID(must(rotated.Seal(secret, "x"))) != "new" {
		t.Fatal("the first key must seal")
	}

	// Without the key: a clear error, never the plaintext.
	onlyNew, _ := Parse(NewKey("new"))
	if _, err := onlyNew.Open(sealed, "ep_1"); !errors.Is(err, ErrNoKey) {
		t.Fatalf("open without the key: %v", err)
	}
	var none *Keyring
	if _, err := none.Open(sealed, "ep_1"); !errors.Is(err, ErrNoKey) {
		t.Fatalf("open with no keyring: %v", err)
	}
	if got, _ := none.Seal(secret, "ep_1"); got != secret || none.Enabled() || none.NeedsReseal(secret) {
		t.Fatal("a nil keyring stores in clear")
	}
	for _, bad := range []string{"enc:v1:", "enc:v1:old", "enc:v1:old:", "enc:v1:old:!!", "enc:v1:old:AAAA"} {
		if _, err := oldKR.Open(bad, "ep_1"); err == nil {
			t.Errorf("Open(%q) succeeded", bad)
		}
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

func FuzzOpen(f *testing.F) {
	kr, _ := Parse(NewKey("k"))
	f.Add(must(kr.Seal("whsec_abc", "ep_1")))
	f.Add("enc:v1:k:AAAA")
	f.Add("whsec_x")
	f.Fuzz(func(t *testing.T, v string) {
		_, _ = kr.Open(v, "ep_1") // must not panic
	})
}
