package bus

import (
	"strconv"
	"testing"
)

func TestKeyToken(t *testing.T) {
	t.Parallel()
	if got := KeyToken(""); got != NoKey {
		t.Fatalf("KeyToken(\"\") = %q, want %q", got, NoKey)
	}
	a, b := KeyToken("customer-42"), KeyToken("customer-43")
	if len(a) != 16 || a == b || KeyToken("customer-42") != a {
		t.Fatalf("tokens %q %q: want 16 stable hex digits, distinct", a, b)
	}
}

func TestParsePublishSubject(t *testing.T) {
	t.Parallel()
	cases := []struct {
		subject, tenant, typ string
		ok                   bool
	}{
		{"hookline.publish.acme.order.created", "acme", "order.created", true},
		{"hookline.publish.acme.ping", "acme", "ping", true},
		{"hookline.publish.acme", "", "", false},
		{"hookline.events.acme.x", "", "", false},
	}
	for _, tc := range cases {
		tenant, typ, ok := ParsePublishSubject(tc.subject)
		if tenant != tc.tenant || typ != tc.typ || ok != tc.ok {
			t.Errorf("ParsePublishSubject(%q) = %q, %q, %v", tc.subject, tenant, typ, ok)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	t.Parallel()
	cases := []struct {
		have string
		want bool
	}{{"2.9.10", false}, {"2.10.22", false}, {"2.11.0", true}, {"2.15.2", true}, {"3.0.0-beta", true}}
	for _, tc := range cases {
		if got := versionAtLeast(tc.have, MinServerVersion); got != tc.want {
			t.Errorf("versionAtLeast(%q) = %v", tc.have, got)
		}
	}
}

// TestEventSubjectPartitions: keyed events of a tenant are spread over
// KeyPartitions subjects, a key always on the same one, none of them the
// keyless subject or a key token's.
func TestEventSubjectPartitions(t *testing.T) {
	seen := map[string]bool{}
	for i := range 10_000 {
		key := "key-" + strconv.Itoa(i)
		subj := EventSubject("acme", key)
		if subj != EventSubject("acme", key) {
			t.Fatalf("key %s: subject not stable", key)
		}
		if subj == EventSubject("acme", "") || subj == eventsPrefix+"acme."+KeyToken(key) {
			t.Fatalf("key %s on %s", key, subj)
		}
		seen[subj] = true
	}
	if len(seen) != KeyPartitions {
		t.Errorf("%d subjects, want %d", len(seen), KeyPartitions)
	}
	if got, want := EventSubject("acme", ""), "hookline.events.acme._"; got != want {
		t.Errorf("keyless subject %s, want %s", got, want)
	}
}
