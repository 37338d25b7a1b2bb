package eventtype

import "testing"

func TestMatch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, typ string
		want         bool
	}{
		{"order.created", "order.created", true},
		{"order.created", "order.updated", false},
		{"order.*", "order.created", true},
		{"order.*", "order.created.v2", false},
		{"order.*", "order", false},
		{"order.>", "order.created", true},
		{"order.>", "order.created.v2", true},
		{"order.>", "order", false},
		{"*.created", "order.created", true},
		{"*.created", "created", false},
		{">", "anything.at.all", true},
		{"*", "one", true},
		{"*", "one.two", false},
		{"order", "order.created", false},
	}
	for _, tc := range cases {
		if got := Match(tc.pattern, tc.typ); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.typ, got, tc.want)
		}
	}
	if !MatchAny(nil, "x") {
		t.Error("no patterns must match every type")
	}
}

func TestValid(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"order.created", "a", "A_b-c.d"} {
		if !Valid(ok) {
			t.Errorf("Valid(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", ".a", "a.", "a..b", "a b", "a.*", "ü"} {
		if Valid(bad) {
			t.Errorf("Valid(%q) = true", bad)
		}
	}
	for _, ok := range []string{"order.*", "order.>", "*", ">", "*.created"} {
		if !ValidPattern(ok) {
			t.Errorf("ValidPattern(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", ">.a", "a..b", "a.**", "a b"} {
		if ValidPattern(bad) {
			t.Errorf("ValidPattern(%q) = true", bad)
		}
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("order.*", "order.created")
	f.Add("order.>", "order")
	f.Fuzz(func(t *testing.T, p, typ string) {
		if Valid(typ) && Match(typ, typ) != true {
			t.Fatalf("a type must match itself: %q", typ)
		}
		_ = Match(p, typ)
	})
}
