package dispatcher

import (
	"testing"
	"time"

	"github.com/hookline/hookline/services/dispatcher/internal/delivery"
)

func TestCheckAckWait(t *testing.T) {
	t.Parallel()
	if err := CheckAckWait(AckWait, delivery.MaxTimeout); err != nil {
		t.Errorf("configured ack wait refused: %v", err)
	}
	if err := CheckAckWait(70*time.Second, delivery.MaxTimeout); err == nil {
		t.Error("ack wait within the margin accepted")
	}
}
