package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Ceilings are the machine's limits measured in the same run. Each runs
// inside this process (embedded NATS server, load generator, receiver), so
// its CPU cost per operation is this process's CPU time over the operations.
type Ceilings struct {
	HTTP       float64 // load generator straight to the receiver, requests/s
	JSPublish  float64 // JetStream async publish of 1 KiB messages, msgs/s
	JSConsume  float64 // JetStream pull consume and ack of 1 KiB messages, msgs/s
	HTTPErrors int64

	// CPU seconds per operation: one HTTP exchange (both sides), one
	// publish (client and server), one consume and ack (server and client).
	HTTPCPU, JSPublishCPU, JSConsumeCPU float64
	// ExchangeCPU is the CPU seconds of one HTTP exchange made as the
	// dispatcher makes an attempt (see exchangeCPU), both sides.
	ExchangeCPU float64
}

// FloorCPU is the CPU seconds one delivery at fan-out 1 costs in transport
// alone: its HTTP exchange, made as the dispatcher makes it (the cheaper of
// the two exchanges measured: the load generator's net/http client costs
// more than the dispatcher's own), before
// any work of Hookline's own: no validation, no PostgreSQL, no signing, no
// JetStream. At full load every JetStream hop travels grouped (an event with
// the others of its batch, a delivery with its endpoint's others of that
// batch, an attempt outcome with those of concurrent attempts), so their
// share per delivery is small and left out: the floor stays a floor. Zero
// when the HTTP ceiling was not measured.
func (c Ceilings) FloorCPU() float64 {
	if c.ExchangeCPU > 0 && (c.HTTPCPU <= 0 || c.ExchangeCPU < c.HTTPCPU) {
		return c.ExchangeCPU
	}
	return max(c.HTTPCPU, 0)
}

// selfCPU is this process's CPU time in seconds (user + system).
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

const ceilingSenders = 32

// httpCeiling posts 1 KiB events straight to the receiver for d.
// It returns requests/s, the errors and the CPU seconds per request.
func httpCeiling(ctx context.Context, recv *receiver, d time.Duration) (float64, int64, float64) {
	t := newTracker(-1, 1, 1<<16)
	recv.track(t)
	defer recv.track(nil)
	client := newHTTPClient()
	defer client.CloseIdleConnections()
	url := recv.healthyURL(0)
	var seq, errs atomic.Int64
	var wg sync.WaitGroup
	start, cpu0 := time.Now(), selfCPU()
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
	cpu := selfCPU() - cpu0
	_, last, _ := t.snapshot()
	elapsed := last.Sub(start)
	n := t.unique.Load()
	if elapsed <= 0 || n == 0 {
		return 0, errs.Load(), 0
	}
	return float64(n) / elapsed.Seconds(), errs.Load(), cpu / float64(n)
}

// exchangeCPU posts 1 KiB events straight to the receiver for d as the
// dispatcher's HTTP client (services/dispatcher/internal/http1) posts an
// attempt: the request written whole with one write on a kept-alive
// connection, the answer read with http.ReadResponse on the same goroutine.
// It returns the CPU seconds per exchange, both sides, or 0 if none
// completed.
func exchangeCPU(ctx context.Context, recv *receiver, d time.Duration) float64 {
	t := newTracker(-1, 1, 1<<16)
	recv.track(t)
	defer recv.track(nil)
	addr := strings.TrimPrefix(recv.base, "http://")
	var seq atomic.Int64
	start, cpu0 := time.Now(), selfCPU()
	var wg sync.WaitGroup
	for range ceilingSenders {
		wg.Go(func() {
			nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return
			}
			defer func() { _ = nc.Close() }()
			br := bufio.NewReader(nc)
			var body, req []byte
			for time.Since(start) < d && ctx.Err() == nil {
				body = appendEventData(body[:0], -1, seq.Add(1), time.Now().UnixNano())
				req = append(req[:0], "POST /h/0 HTTP/1.1\r\nHost: "...)
				req = append(req, addr...)
				req = append(req, "\r\nContent-Type: application/json\r\nContent-Length: "...)
				req = strconv.AppendInt(req, int64(len(body)), 10)
				req = append(req, "\r\n\r\n"...)
				req = append(req, body...)
				if _, err := nc.Write(req); err != nil {
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
	wg.Wait()
	cpu := selfCPU() - cpu0
	n := t.unique.Load()
	if n == 0 {
		return 0
	}
	return cpu / float64(n)
}

// jetStreamCeiling publishes 1 KiB messages asynchronously to a file-backed
// work-queue stream for d, each with a Nats-Msg-Id as Hookline's are, then
// consumes and acks all of them with a pull consumer (an ack removes the
// message, as in Hookline's streams). It returns the rates into c.
func jetStreamCeiling(ctx context.Context, js jetstream.JetStream, d time.Duration, c *Ceilings) error {
	const name = "BENCH_CEILING"
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:      name,
		Subjects:  []string{"bench.ceiling.>"},
		Storage:   jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy,
	})
	if err != nil {
		return fmt.Errorf("create ceiling stream: %w", err)
	}
	defer func() { _ = js.DeleteStream(context.WithoutCancel(ctx), name) }()

	data := appendEventData(nil, -1, 0, 0)
	var n int64
	start, cpu0 := time.Now(), selfCPU()
	for time.Since(start) < d && ctx.Err() == nil {
		for range 256 {
			m := &nats.Msg{Subject: "bench.ceiling.x", Header: nats.Header{}, Data: data}
			m.Header.Set(jetstream.MsgIDHeader, "ceiling:"+strconv.FormatInt(n, 10))
			_, err := js.PublishMsgAsync(m)
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				// Too far ahead of the server: let it catch up.
				<-js.PublishAsyncComplete()
				_, err = js.PublishMsgAsync(m)
			}
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			n++
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return fmt.Errorf("publish acks did not complete within a minute")
	}
	c.JSPublish = float64(n) / time.Since(start).Seconds()
	c.JSPublishCPU = (selfCPU() - cpu0) / float64(n)
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("ceiling stream info: %w", err)
	}
	stored := int64(info.State.Msgs)

	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       "bench",
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: 10000,
	})
	if err != nil {
		return fmt.Errorf("create ceiling consumer: %w", err)
	}
	var got atomic.Int64
	finished := make(chan struct{})
	start, cpu0 = time.Now(), selfCPU()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if got.Add(1) == stored {
			close(finished)
		}
	}, jetstream.PullMaxMessages(1000))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer cc.Stop()
	select {
	case <-finished:
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("consumed %d of %d within 2 minutes", got.Load(), stored)
	case <-ctx.Done():
		return ctx.Err()
	}
	c.JSConsume = float64(stored) / time.Since(start).Seconds()
	if stored > 0 {
		c.JSConsumeCPU = (selfCPU() - cpu0) / float64(stored)
	}
	return nil
}
