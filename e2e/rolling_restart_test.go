package e2e

import (
	"testing"
	"time"
)

// TestRollingRestartDispatcher simulates what Kubernetes does in a rolling
// update (issue 8): a replacement dispatcher starts, then the old one gets
// SIGTERM while it is delivering. The old one must stop fetching, finish or
// hand back its in-flight deliveries within HOOKLINE_SHUTDOWN_TIMEOUT and exit
// 0; the replacement picks the rest up. Nothing is lost, and nothing is sent
// twice beyond the deliveries that were in flight at the SIGTERM.
func TestRollingRestartDispatcher(t *testing.T) {
	t.Parallel()
	const inFlightCap = 32 // HOOKLINE_DISPATCH_CONCURRENCY: bounds what can be in flight
	f := newFaultEnv(t, faultOptions{env: map[string]string{
		"HOOKLINE_DISPATCH_CONCURRENCY": "32",
		"HOOKLINE_SHUTDOWN_TIMEOUT":     "10s",
	}})
	targets := f.createTargets(t, "rolling", 1, nil)
	rcv := targets[0].sink
	rcv.delay.Store(int64(100 * time.Millisecond)) // slow enough that deliveries are in flight
	settle()

	ids := eventIDs("roll", 400)
	accepted, _ := f.produce(t.Context(), "rolling", "order.created", ids, 100, 0)
	if len(accepted) != len(ids) {
		t.Fatalf("%d of %d events accepted", len(accepted), len(ids))
	}
	eventually(t, 60*time.Second, "a quarter delivered", func() error {
		if n := rcv.count(); n < len(ids)/4 {
			return errf("%d delivered", n)
		}
		return nil
	})

	// The new pod first, then SIGTERM to the old one, as a Deployment's
	// RollingUpdate (maxSurge 1, maxUnavailable 0) does.
	f.start(dispatcherName(1), "hookline-dispatcher", "")
	old := f.proc(dispatcherName(0))
	before := rcv.count()
	began := time.Now()
	if err := old.stop(t, 20*time.Second); err != nil {
		t.Fatalf("old dispatcher after SIGTERM: %v (want exit status 0 within the grace period)\n%s", err, tail(old.log.String(), 3000))
	}
	t.Logf("SIGTERM with %d of %d delivered: old dispatcher exited 0 after %s",
		before, len(ids), time.Since(began).Round(10*time.Millisecond))

	rep := f.waitNoLoss(accepted, targets, 90*time.Second)
	logReport(t, "rolling restart of the dispatcher", len(accepted), rep)
	if rep.duplicates > inFlightCap {
		t.Fatalf("%d duplicate receipts: more than the %d deliveries that can be in flight at the SIGTERM", rep.duplicates, inFlightCap)
	}
}
