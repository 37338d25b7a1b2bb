//go:build long

package e2e

import "time"

// ordScale is issue 5's property test: 3 dispatchers and 2 fan-outs, 200
// keys × 50 events over 4 endpoints plus 2,000 keyless events, one endpoint
// down for 30 s.
var ordScale = ordSizes{keys: 200, perKey: 50, keyless: 2000, endpoints: 4, fanouts: 2, dispatchers: 3, down: 30 * time.Second, within: 20 * time.Minute}
