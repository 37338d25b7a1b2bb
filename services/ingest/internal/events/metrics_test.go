package events

import "testing"

func TestSourceLabelIsBounded(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"http": "http", "nats": "nats", "source:src_123": "inbound", "": "other", "x": "other"} {
		if got := sourceLabel(in); got != want {
			t.Errorf("sourceLabel(%q) = %q, want %q", in, got, want)
		}
	}
}
