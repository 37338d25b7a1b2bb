//go:build !chaos

package e2e

import "time"

// faultScale sizes the fault tests for make test: small enough that the set
// runs in a few minutes beside the rest of the suite.
var faultScale = struct {
	killEvents, streamEvents, flakyEvents, isolationEvents int
	outage, settle                                         time.Duration
}{
	killEvents:      400,
	streamEvents:    300,
	flakyEvents:     100,
	isolationEvents: 150,
	outage:          5 * time.Second,
	settle:          3 * time.Minute,
}
