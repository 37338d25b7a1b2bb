package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerRef names a durable consumer of a stream.
type ConsumerRef struct{ Stream, Consumer string }

// WatchConsumers samples the backlog of each consumer every interval until
// ctx ends. Errors (a consumer not created yet, NATS down) are logged at debug
// level and the gauges keep their last values.
func (m *Metrics) WatchConsumers(ctx context.Context, js jetstream.JetStream, refs []ConsumerRef, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, r := range refs {
			m.sample(ctx, js, r, log)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Metrics) sample(ctx context.Context, js jetstream.JetStream, r ConsumerRef, log *slog.Logger) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := js.Consumer(cctx, r.Stream, r.Consumer)
	if err != nil {
		log.Debug("sample consumer", "stream", r.Stream, "consumer", r.Consumer, "err", err)
		return
	}
	info, err := c.Info(cctx)
	if err != nil {
		log.Debug("sample consumer", "stream", r.Stream, "consumer", r.Consumer, "err", err)
		return
	}
	m.ConsumerPending.WithLabelValues(r.Stream, r.Consumer).Set(float64(info.NumPending))
	m.ConsumerAckPending.WithLabelValues(r.Stream, r.Consumer).Set(float64(info.NumAckPending))
	m.ConsumerRedelivered.WithLabelValues(r.Stream, r.Consumer).Set(float64(info.NumRedelivered))
}
