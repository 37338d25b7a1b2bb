package attemptlog

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// A partition is due for ANALYZE when the rows stored in it reach
// analyzeFirst and each time they double, up to analyzeLast; each day's
// partition counts on its own, and only the newest few are remembered.
func TestFillingDue(t *testing.T) {
	t.Parallel()
	day := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	at := func(d time.Time, n int) []*hooklinev1.AttemptOutcome {
		outs := make([]*hooklinev1.AttemptOutcome, n)
		for i := range outs {
			outs[i] = &hooklinev1.AttemptOutcome{StartedAt: timestamppb.New(d)}
		}
		return outs
	}
	var f filling
	var dueAt []int
	stored := 0
	batch := at(day, 300)
	for stored < 3*analyzeLast {
		n := len(batch)
		due := f.stored(batch)
		stored += n
		if len(due) > 0 {
			if !slices.Equal(due, []string{PartitionName(day)}) {
				t.Fatalf("due %v", due)
			}
			dueAt = append(dueAt, stored)
		}
	}
	var want []int
	for n := analyzeFirst; n <= analyzeLast; n *= 2 {
		want = append(want, (n+299)/300*300) // the batch that crosses it
	}
	want = slices.Compact(want)
	if !slices.Equal(dueAt, want) {
		t.Fatalf("analyzed after %v rows, want %v", dueAt, want)
	}

	// The next day starts again; a straggler of yesterday's does not.
	if due := f.stored(at(day.Add(24*time.Hour), analyzeFirst)); !slices.Equal(due, []string{PartitionName(day.Add(24 * time.Hour))}) {
		t.Fatalf("next day: due %v", due)
	}
	if due := f.stored(at(day, analyzeFirst)); len(due) != 0 {
		t.Fatalf("yesterday again: due %v", due)
	}
	for d := range 10 {
		f.stored(at(day.Add(time.Duration(d+2)*24*time.Hour), 1))
	}
	if len(f.rows) > 5 || len(f.next) != len(f.rows) {
		t.Fatalf("remembers %d partitions (%d thresholds)", len(f.rows), len(f.next))
	}
}
