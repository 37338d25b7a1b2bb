package retry

import (
	"testing"
	"time"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

func TestMsgIDDistinguishesHolds(t *testing.T) {
	t.Parallel()
	d := &hooklinev1.Delivery{Id: "dlv_1", Attempts: 2}
	due := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	if first, again := MsgID(d, due), MsgID(d, due); first != again {
		t.Error("the same parked row must republish under the same id (crash before commit)")
	}
	if MsgID(d, due) == MsgID(d, due.Add(time.Second)) {
		t.Error("two holds of a delivery with the same attempts must not collide in the duplicate window")
	}
}
