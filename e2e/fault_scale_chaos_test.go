//go:build chaos

package e2e

import "time"

// faultScale sizes the fault tests for make test/chaos (-tags chaos).
var faultScale = struct {
	killEvents, streamEvents, flakyEvents, isolationEvents int
	outage, settle                                         time.Duration
}{
	killEvents:      2000,
	streamEvents:    2000,
	flakyEvents:     1000,
	isolationEvents: 1000,
	outage:          20 * time.Second,
	settle:          6 * time.Minute,
}
