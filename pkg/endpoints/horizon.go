package endpoints

import (
	"time"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// HorizonGrace is added to the sum of a retry schedule's delays to make the
// retry horizon (CONTRACT 2.4).
const HorizonGrace = 24 * time.Hour

// Horizon is how long after its creation a delivery to ep may still be
// attempted while a circuit breaker holds it: the sum of ep's retry
// schedule plus [HorizonGrace]. Past it, a held delivery is dead-lettered
// as "expired".
func Horizon(ep *hooklinev1.Endpoint) time.Duration {
	h := HorizonGrace
	for _, ms := range ep.GetRetryScheduleMs() {
		h += time.Duration(ms) * time.Millisecond //nolint:gosec // schedules are validated at create time
	}
	return h
}
