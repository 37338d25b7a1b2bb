package attemptlog

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hookline/hookline/pkg/pgtest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

func outcome(attempt uint32, st hooklinev1.DeliveryStatus, code uint32, errText string) *hooklinev1.AttemptOutcome {
	return &hooklinev1.AttemptOutcome{
		DeliveryId: "dlv_1", TenantId: "acme", EventId: "evt_1", EndpointId: "ep_1", Attempt: attempt,
		StartedAt: timestamppb.New(time.Now()), DurationMs: 12, StatusCode: code, Error: errText,
		Succeeded: st == hooklinev1.DeliveryStatus_DELIVERY_STATUS_SUCCEEDED, Status: st,
		ResponseBody: []byte("ok\xff\x00"), DeadLetterId: "dl_1",
	}
}

func TestStore(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `
INSERT INTO dead_letters (id, tenant_id, delivery_id, event_id, endpoint_id, event_type, reason, attempts, dead_at)
VALUES ('dl_1', 'acme', 'dlv_0', 'evt_1', 'ep_1', 'order.created', 'exhausted', 3, now())`); err != nil {
		t.Fatal(err)
	}
	pending := hooklinev1.DeliveryStatus_DELIVERY_STATUS_PENDING
	ok := hooklinev1.DeliveryStatus_DELIVERY_STATUS_SUCCEEDED
	// The success arrives first, then (redelivered, late) the failed attempt
	// before it, twice in one batch.
	if n, err := store(ctx, pool, []*hooklinev1.AttemptOutcome{outcome(2, ok, 200, "")}); err != nil || n != 1 {
		t.Fatalf("store = %d resolved, %v; want 1 (the replay's success resolves dl_1)", n, err)
	}
	if n, err := store(ctx, pool, []*hooklinev1.AttemptOutcome{outcome(2, ok, 200, "")}); err != nil || n != 0 {
		t.Fatalf("the same success again resolved %d dead letters (%v); want 0", n, err)
	}
	if err := Store(ctx, pool, []*hooklinev1.AttemptOutcome{outcome(1, pending, 500, "status 500"), outcome(1, pending, 500, "status 500")}); err != nil {
		t.Fatal(err)
	}
	var (
		status    string
		attempts  int
		code      *int32
		lastErr   *string
		delivered *time.Time
	)
	if err := pool.QueryRow(ctx, `SELECT status, attempts, last_status_code, last_error, delivered_at FROM deliveries WHERE id = 'dlv_1'`).
		Scan(&status, &attempts, &code, &lastErr, &delivered); err != nil {
		t.Fatal(err)
	}
	if status != "succeeded" || attempts != 2 || code == nil || *code != 200 || lastErr != nil || delivered == nil {
		t.Errorf("delivery status %s attempts %d code %v err %v delivered %v", status, attempts, code, lastErr, delivered)
	}
	var n int
	var body string
	if err := pool.QueryRow(ctx, `SELECT count(*), max(response_body) FROM attempts WHERE delivery_id = 'dlv_1'`).Scan(&n, &body); err != nil {
		t.Fatal(err)
	}
	if n != 2 || body != "ok\uFFFD\uFFFD" {
		t.Errorf("%d attempt rows, body %q", n, body)
	}
	var resolved *time.Time
	if err := pool.QueryRow(ctx, `SELECT resolved_at FROM dead_letters WHERE id = 'dl_1'`).Scan(&resolved); err != nil {
		t.Fatal(err)
	}
	if resolved == nil {
		t.Error("dead letter not resolved by the replay's success")
	}
}
