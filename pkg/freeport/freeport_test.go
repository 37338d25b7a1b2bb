package freeport

import "testing"

func TestPortsAreNotHandedOutTwice(t *testing.T) {
	t.Parallel()
	seen := map[int]bool{}
	for range 200 {
		p := Port(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
