package bus

import (
	"strings"
	"testing"
)

func TestAttemptBatchMsgID(t *testing.T) {
	a := AttemptBatchMsgID([]string{"dlv_a", "dlv_b"}, []uint32{1, 2})
	if !strings.HasPrefix(a, "atb:") || len(a) != len("atb:")+32 {
		t.Fatalf("id %q: want atb: and 32 hex digits", a)
	}
	if again := AttemptBatchMsgID([]string{"dlv_a", "dlv_b"}, []uint32{1, 2}); again != a {
		t.Errorf("same batch: %q, then %q", a, again)
	}
	others := [][2]any{
		{[]string{"dlv_b", "dlv_a"}, []uint32{2, 1}},  // another order
		{[]string{"dlv_a", "dlv_b"}, []uint32{1, 3}},  // another attempt
		{[]string{"dlv_a"}, []uint32{1}},              // fewer
		{[]string{"dlv_a1", "dlv_b"}, []uint32{1, 2}}, // ids that would run together
		{[]string{"dlv_a", "1dlv_b"}, []uint32{1, 2}},
	}
	for _, o := range others {
		if id := AttemptBatchMsgID(o[0].([]string), o[1].([]uint32)); id == a {
			t.Errorf("batch %v %v shares the id %q", o[0], o[1], a)
		}
	}
}
