//go:build long

package e2e

import "testing"

// TestOrderingNATSIntakeTwoIngests is [TestOrderingNATSIntake] with two
// ingest replicas sharing HOOKLINE_INTAKE (issue 5: "ingest must not reorder
// a key either", with any number of replicas): only the intake leader
// consumes.
func TestOrderingNATSIntakeTwoIngests(t *testing.T) {
	t.Parallel()
	natsIntakeOrder(t, natsOrderRun{ingests: 2, keys: 50, perKey: 20})
}
