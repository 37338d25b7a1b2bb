package dispatcher

import (
	"testing"
	"time"

	"github.com/hookline/hookline/services/dispatcher/internal/dispatch"
)

func TestCheckAckWait(t *testing.T) {
	t.Parallel()
	if err := CheckAckWait(AckWait, dispatch.InProgressEvery); err != nil {
		t.Errorf("configured ack wait refused: %v", err)
	}
	if err := CheckAckWait(25*time.Second, 10*time.Second); err == nil {
		t.Error("an ack wait shorter than three heartbeats was accepted")
	}
}
