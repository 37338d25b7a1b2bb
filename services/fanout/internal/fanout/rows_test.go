package fanout

import (
	"fmt"
	"sync"
	"testing"

	"github.com/hookline/hookline/pkg/pgtest"
)

// TestRowWriterCoalescesAndIsolates: concurrent events' rows are all
// written, and a row PostgreSQL refuses fails its own event only.
func TestRowWriterCoalescesAndIsolates(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	w := newRowWriter(pool, 2, 50)
	const events = 200
	errs := make([]error, events)
	var wg sync.WaitGroup
	for i := range events {
		wg.Go(func() {
			status := "pending"
			if i == 77 {
				status = "bogus" // violates the status check
			}
			rows := []deliveryRow{
				{id: fmt.Sprintf("dlv_%03d_b", i), tenant: "acme", event: fmt.Sprintf("evt_%d", i), endpoint: "ep_2", status: status},
				{id: fmt.Sprintf("dlv_%03d_a", i), tenant: "acme", event: fmt.Sprintf("evt_%d", i), endpoint: "ep_1", status: "pending", hold: i%2 == 0},
			}
			errs[i] = w.insert(t.Context(), rows)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 77) {
			t.Errorf("event %d: err %v", i, err)
		}
	}
	var n, held int
	if err := pool.QueryRow(t.Context(), `SELECT count(*), count(*) FILTER (WHERE circuit_hold) FROM deliveries`).Scan(&n, &held); err != nil {
		t.Fatal(err)
	}
	if n != 2*(events-1) || held != events/2 {
		t.Errorf("%d rows (%d held), want %d (%d held)", n, held, 2*(events-1), events/2)
	}
}
