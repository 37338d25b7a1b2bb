//go:build long

package e2e

import "time"

// isoScale is issue 5's isolation check: one key blocked for 60 s delays no
// other key by more than a second (p99, against the run without the block).
// The retry schedule (20 × 4 s, at least 72 s with jitter) outlasts the block,
// so the head is never dead-lettered while blocked.
var isoScale = isoSizes{keys: 20, every: 500 * time.Millisecond, block: 60 * time.Second, retry: "4s", abs: 0, overBaseline: time.Second}
