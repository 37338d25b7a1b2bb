package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestOrderingNATSIntake checks order at the first hop (issue 5, "order at
// every hop") with one ingest replica, whose intake handlers run
// concurrently: events published over NATS with a Hookline-Ordering-Key
// header reach the endpoint, per key, in publish order.
func TestOrderingNATSIntake(t *testing.T) {
	t.Parallel()
	natsIntakeOrder(t, 1)
}

// natsIntakeOrder publishes 50 keys × 20 events over NATS while ingests
// ingest replicas share HOOKLINE_INTAKE, and checks that per key the
// endpoint's first receipts, and the events' accepted_at, follow publish
// order (the order of the intake stream, which the publish acknowledgement
// accepts).
func natsIntakeOrder(t *testing.T, ingests int) {
	const (
		tenant = "natsord"
		keys   = 50
		perKey = 20
	)
	f := newFaultEnv(t, faultOptions{env: map[string]string{"HOOKLINE_LOG_LEVEL": "warn"}})
	for i := 1; i < ingests; i++ {
		f.start(fmt.Sprintf("hookline-ingest#%d", i+1), "hookline-ingest", freeAddr(t))
	}
	f.ingest.must(t, "POST", "/v1/tenants", map[string]any{"id": tenant, "name": "NATS ordering"}, http.StatusCreated, nil)
	rcv := newKeyReceiver(t)
	f.createEndpoint(t, tenant, rcv.url, map[string]any{"ordering": "key"})
	settle()

	nc, err := nats.Connect(f.nats.URL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Each key's events back to back, without waiting for acks: adjacent
	// messages of a key reach different intake handlers (and, with two
	// replicas, different processes) at nearly the same time.
	var ids []string
	var keyNames []string
	for k := range keys {
		keyNames = append(keyNames, fmt.Sprintf("nk-%02d", k))
	}
	for _, key := range keyNames {
		for n := range perKey {
			id := fmt.Sprintf("%s-%03d", key, n)
			body, _ := json.Marshal(keyedData{Key: key, N: n})
			msg := nats.NewMsg("hookline.publish." + tenant + ".order.updated")
			msg.Data = body
			msg.Header.Set("Nats-Msg-Id", id)
			msg.Header.Set("Hookline-Ordering-Key", key)
			if _, err := js.PublishMsgAsync(msg); err != nil {
				t.Fatalf("publish %s: %v", id, err)
			}
			ids = append(ids, id)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatalf("publish acks: %v", ctx.Err())
	}
	began := time.Now()
	eventually(t, 2*time.Minute, "every event delivered", func() error {
		if got := rcv.countOf(ids); got < len(ids) {
			return errf("%d of %d received", got, len(ids))
		}
		return nil
	})
	violations := rcv.checkOrder(t, keyNames, perKey)
	rcv.mu.Lock()
	dups := rcv.dups
	rcv.mu.Unlock()
	// Where the order was lost: ingest's acceptance (accepted_at) against
	// publish order.
	acceptInversions, err := acceptedOutOfOrder(t.Context(), f.dbURL, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if acceptInversions > 0 {
		t.Errorf("ingest accepted %d events before an event of their key published earlier (accepted_at against publish order)", acceptInversions)
	}
	t.Logf("NATS intake, %d ingest replica(s): %d keys × %d events delivered in %s: %d receipt order violations, %d acceptance order violations, %d duplicates",
		ingests, keys, perKey, time.Since(began).Round(time.Millisecond), violations, acceptInversions, dups)
}

// acceptedOutOfOrder counts the events of tenant whose accepted_at is
// earlier than that of the event published just before them with the same
// key (the event data's n gives publish order).
func acceptedOutOfOrder(ctx context.Context, dbURL, tenant string) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(cctx, `
		SELECT count(*) FROM (
			SELECT accepted_at < lag(accepted_at) OVER (PARTITION BY ordering_key ORDER BY (data->>'n')::int) AS inverted
			FROM events WHERE tenant_id = $1) e
		WHERE inverted`, tenant).Scan(&n)
	return n, err
}
