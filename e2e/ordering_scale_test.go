//go:build !long

package e2e

import "time"

// ordScale is the short property test run by make test; the long one
// (issue 5) runs with -tags long (make test/ordering-long).
var ordScale = ordSizes{keys: 20, perKey: 10, keyless: 100, endpoints: 2, fanouts: 2, dispatchers: 2, down: 0, within: 4 * time.Minute}
