// Package freeport hands tests loopback addresses that nothing listens on,
// for the servers they start.
package freeport

import (
	"net"
	"strconv"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Port returns a loopback port that nothing listened on when asked and that
// no earlier call in this process returned: the kernel may hand out the
// same port to two probes in a row once the first one closed, and two
// servers of one test then collide.
func Port(t testing.TB) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		mu.Lock()
		dup := given[p]
		given[p] = true
		mu.Unlock()
		if !dup {
			return p
		}
	}
	t.Fatal("no loopback port not handed out before, after 100 tries")
	return 0
}

// Addr is [Port] as "127.0.0.1:<port>".
func Addr(t testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Port(t)))
}
