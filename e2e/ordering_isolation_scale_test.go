//go:build !long

package e2e

import "time"

// isoScale is the short isolation test run by make test: a 10 s block,
// asserted loosely (the machine is shared); -tags long runs issue 5's 60 s.
var isoScale = isoSizes{keys: 20, every: 500 * time.Millisecond, block: 10 * time.Second, retry: "1s", abs: 2 * time.Second, overBaseline: time.Second}
