package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Ceilings are the machine's limits measured in the same run.
type Ceilings struct {
	HTTP       float64 // load generator straight to the receiver, requests/s
	JSPublish  float64 // JetStream async publish of 1 KiB messages, msgs/s
	JSConsume  float64 // JetStream pull consume and ack of 1 KiB messages, msgs/s
	HTTPErrors int64
}

const ceilingSenders = 32

// httpCeiling posts 1 KiB events straight to the receiver for d.
func httpCeiling(ctx context.Context, recv *receiver, d time.Duration) (float64, int64) {
	t := newTracker(-1, 1, 1<<16)
	recv.track(t)
	defer recv.track(nil)
	client := newHTTPClient()
	defer client.CloseIdleConnections()
	url := recv.healthyURL(0)
	var seq, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range ceilingSenders {
		wg.Go(func() {
			var body []byte
			for time.Since(start) < d && ctx.Err() == nil {
				s := seq.Add(1)
				body = appendEventData(body[:0], -1, s, time.Now().UnixNano())
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				if err != nil {
					errs.Add(1)
					continue
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					errs.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs.Add(1)
				}
			}
		})
	}
	wg.Wait()
	_, last, _ := t.snapshot()
	elapsed := last.Sub(start)
	if elapsed <= 0 {
		return 0, errs.Load()
	}
	return float64(t.unique.Load()) / elapsed.Seconds(), errs.Load()
}

// jetStreamCeiling publishes 1 KiB messages asynchronously to a file-backed
// stream for d, then consumes and acks all of them with a pull consumer.
func jetStreamCeiling(ctx context.Context, js jetstream.JetStream, d time.Duration) (pub, cons float64, err error) {
	const name = "BENCH_CEILING"
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     name,
		Subjects: []string{"bench.ceiling.>"},
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("create ceiling stream: %w", err)
	}
	defer func() { _ = js.DeleteStream(context.WithoutCancel(ctx), name) }()

	data := appendEventData(nil, -1, 0, 0)
	var n int64
	start := time.Now()
	for time.Since(start) < d && ctx.Err() == nil {
		for range 256 {
			if _, err := js.PublishAsync("bench.ceiling.x", data); err != nil {
				return 0, 0, fmt.Errorf("publish: %w", err)
			}
			n++
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return 0, 0, fmt.Errorf("publish acks did not complete within a minute")
	}
	pub = float64(n) / time.Since(start).Seconds()
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("ceiling stream info: %w", err)
	}
	stored := int64(info.State.Msgs)

	c, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       "bench",
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: 10000,
	})
	if err != nil {
		return 0, 0, fmt.Errorf("create ceiling consumer: %w", err)
	}
	var got atomic.Int64
	finished := make(chan struct{})
	start = time.Now()
	cc, err := c.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if got.Add(1) == stored {
			close(finished)
		}
	}, jetstream.PullMaxMessages(1000))
	if err != nil {
		return 0, 0, fmt.Errorf("consume: %w", err)
	}
	defer cc.Stop()
	select {
	case <-finished:
	case <-time.After(2 * time.Minute):
		return pub, 0, fmt.Errorf("consumed %d of %d within 2 minutes", got.Load(), stored)
	case <-ctx.Done():
		return pub, 0, ctx.Err()
	}
	cons = float64(stored) / time.Since(start).Seconds()
	return pub, cons, nil
}
