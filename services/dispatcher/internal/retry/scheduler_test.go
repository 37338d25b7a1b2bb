package retry

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// TestTickHoldsInPlace: a due row that Hold holds moves to its new due time
// and is not republished; the others are republished and deleted.
func TestTickHoldsInPlace(t *testing.T) {
	t.Parallel()
	pool, js := setup(t)
	ctx := t.Context()
	past := time.Now().Add(-time.Second)
	held := &hooklinev1.Delivery{Id: "dlv_held", TenantId: "acme", EndpointId: "ep_open", EventId: "evt_1", Attempts: 1}
	free := &hooklinev1.Delivery{Id: "dlv_free", TenantId: "acme", EndpointId: "ep_ok", EventId: "evt_1", Attempts: 1}
	for _, d := range []*hooklinev1.Delivery{held, free} {
		if err := Park(ctx, pool, d, past); err != nil {
			t.Fatal(err)
		}
	}
	until := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	s := NewScheduler(pool, js, slog.New(slog.DiscardHandler))
	s.Hold = func(d *hooklinev1.Delivery, _ time.Time) (time.Time, bool) {
		return until, d.GetEndpointId() == "ep_open"
	}
	n, err := s.Tick(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Tick = %d, %v; want 2 rows handled", n, err)
	}
	var id string
	var due time.Time
	var circuitHold bool
	if err := pool.QueryRow(ctx, `SELECT delivery_id, due_at, circuit_hold FROM delivery_retries`).Scan(&id, &due, &circuitHold); err != nil {
		t.Fatal(err)
	}
	if id != "dlv_held" || !due.Equal(until) || !circuitHold {
		t.Errorf("row left: %s due %s held for its circuit %v, want dlv_held due %s held", id, due, circuitHold, until)
	}
	stream, err := js.Stream(ctx, bus.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages republished, want 1", info.State.Msgs)
	}
	for subj := range info.State.Subjects {
		if want := bus.DeliverySubject("acme", "ep_ok", ""); subj != want {
			t.Errorf("republished on %s, want %s", subj, want)
		}
	}
	// Nothing is due now: the held row is not taken again.
	if n, err := s.Tick(context.WithoutCancel(ctx)); err != nil || n != 0 {
		t.Errorf("second Tick = %d, %v", n, err)
	}
}

// TestSweepReleasesByGate: rows held for a circuit stay while their gate
// says Keep, one (the oldest) is released when a probe is due and no other
// before ProbeGap, all are released when the circuit closed; Tick then
// publishes what was released, and nothing else.
func TestSweepReleasesByGate(t *testing.T) {
	t.Parallel()
	pool, js := setup(t)
	ctx := t.Context()
	parker := NewParker(pool)
	latest := time.Now().Add(24 * time.Hour)
	for _, ep := range []string{"ep_held", "ep_probe", "ep_closed"} {
		for i := range 3 {
			d := &hooklinev1.Delivery{Id: fmt.Sprintf("dlv_%s_%d", ep, i), TenantId: "acme", EndpointId: ep, EventId: fmt.Sprintf("evt_%d", i)}
			if err := parker.Hold(ctx, d, latest.Add(time.Duration(i)*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
	wantHeld(t, pool, 9)
	s := NewScheduler(pool, js, slog.New(slog.DiscardHandler))
	gates := map[string]Gate{"ep_held": Keep, "ep_probe": ReleaseProbe, "ep_closed": ReleaseAll}
	asked := map[string]int{}
	s.Gate = func(_ context.Context, ep string, _ time.Time) (Gate, time.Time) {
		asked[ep]++
		return gates[ep], time.Time{}
	}
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	wantHeld(t, pool, 5)
	for ep := range gates {
		if asked[ep] != 1 {
			t.Errorf("gate asked %d times about %s, want 1", asked[ep], ep)
		}
	}
	// A second sweep within ProbeGap releases no second probe; the closed
	// circuit has nothing left to release.
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if asked["ep_closed"] != 1 {
		t.Errorf("closed endpoint asked about again with nothing held: %d", asked["ep_closed"])
	}
	n, err := s.Tick(ctx)
	if err != nil || n != 4 {
		t.Fatalf("Tick = %d, %v; want 4 released rows published", n, err)
	}
	left := queryIDs(t, pool, `SELECT delivery_id FROM delivery_retries WHERE circuit_hold ORDER BY delivery_id`)
	want := []string{"dlv_ep_held_0", "dlv_ep_held_1", "dlv_ep_held_2", "dlv_ep_probe_1", "dlv_ep_probe_2"}
	if !slices.Equal(left, want) {
		t.Errorf("held rows left %v, want %v (the oldest of ep_probe released as its probe)", left, want)
	}
	if c := countRows(t, pool, `SELECT count(*) FROM delivery_retries`); c != len(want) {
		t.Errorf("%d rows left, want %d", c, len(want))
	}
	// Past ProbeGap, a probe still due releases the next one.
	s.ProbeGap = 0
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if c := countRows(t, pool, `SELECT count(*) FROM delivery_retries WHERE NOT circuit_hold`); c != 1 {
		t.Errorf("%d rows released after ProbeGap, want 1", c)
	}
}

// TestSweepReleasesHeldDeliveries: deliveries rows fan-out held for a
// circuit are published, rebuilt from the row and its event, when their
// gate releases them (the probe: the oldest one; all; or, while kept, those
// past their horizon), and their hold is cleared; a held delivery whose
// event is gone is dropped.
func TestSweepReleasesHeldDeliveries(t *testing.T) {
	t.Parallel()
	pool, js := setup(t)
	ctx := t.Context()
	accepted := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	if _, err := pool.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ('acme', 'Acme')`); err != nil {
		t.Fatal(err)
	}
	// Three events; every endpoint holds a delivery of each, created a
	// minute apart (evt_0 oldest).
	for i := range 3 {
		if _, err := pool.Exec(ctx, `INSERT INTO events (tenant_id, id, type, data, ordering_key, accepted_at, published)
VALUES ('acme', $1, 'order.created', $2, NULLIF($3, ''), $4, true)`,
			fmt.Sprintf("evt_%d", i), fmt.Sprintf(`{"n": %d,  "spaced":true}`, i), map[bool]string{true: "k1"}[i == 1], accepted); err != nil {
			t.Fatal(err)
		}
		for _, ep := range []string{"ep_held", "ep_probe", "ep_closed", "ep_expiring"} {
			if _, err := pool.Exec(ctx, `INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, circuit_hold, traceparent, created_at)
VALUES ($1, 'acme', $2, $3, true, $4, $5)`, fmt.Sprintf("dlv_%s_%d", ep, i), fmt.Sprintf("evt_%d", i), ep,
				"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", accepted.Add(time.Duration(i)*time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// ep_closed's last delivery lost its event.
	if _, err := pool.Exec(ctx, `UPDATE deliveries SET event_id = 'evt_gone' WHERE id = 'dlv_ep_closed_2'`); err != nil {
		t.Fatal(err)
	}
	wantHeld(t, pool, 12)
	s := NewScheduler(pool, js, slog.New(slog.DiscardHandler))
	gates := map[string]Gate{"ep_held": Keep, "ep_probe": ReleaseProbe, "ep_closed": ReleaseAll, "ep_expiring": Keep}
	s.Gate = func(_ context.Context, ep string, _ time.Time) (Gate, time.Time) {
		if ep == "ep_expiring" {
			// Created before the second delivery: past the horizon.
			return Keep, accepted.Add(30 * time.Second)
		}
		return gates[ep], time.Time{}
	}
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	wantHeld(t, pool, 7)
	released := queryIDs(t, pool, `SELECT id FROM deliveries WHERE NOT circuit_hold ORDER BY id`)
	want := []string{"dlv_ep_closed_0", "dlv_ep_closed_1", "dlv_ep_closed_2", "dlv_ep_expiring_0", "dlv_ep_probe_0"}
	if !slices.Equal(released, want) {
		t.Errorf("released %v, want %v", released, want)
	}
	stream, err := js.Stream(ctx, bus.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 4 {
		t.Fatalf("%d deliveries published, want 4 (the one without its event is dropped)", info.State.Msgs)
	}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		raw, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		d := &hooklinev1.Delivery{}
		if err := proto.Unmarshal(raw.Data, d); err != nil {
			t.Fatal(err)
		}
		n := d.GetId()[len(d.GetId())-1:]
		if d.GetEventId() != "evt_"+n || d.GetTenantId() != "acme" || d.GetEventType() != "order.created" ||
			string(d.GetData()) != fmt.Sprintf(`{"n": %s,  "spaced":true}`, n) || d.GetAttempts() != 0 ||
			!d.GetAcceptedAt().AsTime().Equal(accepted) || d.GetCreatedAt() == nil {
			t.Errorf("released delivery %v", d)
		}
		if wantKey := map[bool]string{true: "k1"}[n == "1"]; d.GetOrderingKey() != wantKey {
			t.Errorf("%s: ordering key %q, want %q", d.GetId(), d.GetOrderingKey(), wantKey)
		}
		if want := bus.DeliverySubject("acme", d.GetEndpointId(), d.GetOrderingKey()); raw.Subject != want {
			t.Errorf("%s published on %s, want %s", d.GetId(), raw.Subject, want)
		}
		if raw.Header.Get(bus.HeaderMsgID) != bus.DeliveryMsgID(d.GetId(), 0) {
			t.Errorf("%s: Nats-Msg-Id %q", d.GetId(), raw.Header.Get(bus.HeaderMsgID))
		}
	}
}

// setup returns a fresh database and an embedded JetStream with Hookline's
// streams.
func setup(t *testing.T) (*pgxpool.Pool, jetstream.JetStream) {
	t.Helper()
	pool, _ := pgtest.NewPool(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	if err := bus.EnsureStreams(t.Context(), js, bus.Options{}); err != nil {
		t.Fatal(err)
	}
	return pool, js
}

// wantHeld checks what the held-deliveries gauge would report.
func wantHeld(t *testing.T, pool *pgxpool.Pool, want int64) {
	t.Helper()
	n, err := CountHeld(t.Context(), pool)
	if err != nil || n != want {
		t.Errorf("CountHeld = %d, %v; want %d", n, err, want)
	}
}

// queryIDs returns the single text column of q's rows.
func queryIDs(t *testing.T, pool *pgxpool.Pool, q string) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func countRows(t *testing.T, pool *pgxpool.Pool, q string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(t.Context(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHeldDeliveriesReadIsBounded: reading an endpoint's held deliveries
// reads only the rows it returns, under a generic plan too. Every sweep
// looks for the held rows past their horizon (none, while the endpoint has
// been down less than its horizon); with the time bound written as a
// filter, the generic plan a prepared statement gets after its fifth
// execution read every held row of the endpoint twice a second on every
// replica (64,200 rows, 47 ms, in the bench's failing-1).
func TestHeldDeliveriesReadIsBounded(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	ctx := t.Context()
	// Deliveries of a healthy endpoint around the held ones, as in a real
	// table, so that a scan of the whole table is not the cheaper plan.
	if _, err := pool.Exec(ctx, `
INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, circuit_hold)
SELECT 'dlv_ok_' || i, 'acme', 'evt_' || i, 'ep_ok', 'succeeded', false FROM generate_series(1, 20000) i;
INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, circuit_hold, created_at)
SELECT 'dlv_down_' || i, 'acme', 'evt_' || i, 'ep_down', 'pending', true, now() - i * interval '1 ms' FROM generate_series(1, 3000) i;
ANALYZE deliveries`); err != nil {
		t.Fatal(err)
	}
	horizon := time.Now().Add(-24 * time.Hour)
	if n := pgtest.GenericPlanRowsRead(t, pool, "deliveries", heldDeliveriesSQL, "ep_down", 5000, horizon); n > 10 {
		t.Errorf("looking for held rows past their horizon (there are none) read %d rows of deliveries, want about 0", n)
	}
	if n := pgtest.GenericPlanRowsRead(t, pool, "deliveries", heldDeliveriesSQL, "ep_down", 1, nil); n > 10 {
		t.Errorf("reading the oldest held row (the probe) read %d rows of deliveries, want about 1", n)
	}
	// Still correct: every held row is older than now, the oldest first.
	got := pgtest.FirstColumn(t, pool, heldDeliveriesSQL, "ep_down", 2, time.Now().Add(time.Minute))
	if want := []string{"dlv_down_3000", "dlv_down_2999"}; !slices.Equal(got, want) {
		t.Errorf("held rows before a minute from now, oldest 2: %v, want %v", got, want)
	}
}

// TestHeldLookupsKeepToTheirIndexes: the sweep's list of endpoints with held
// deliveries and the held-deliveries gauge have no parameters, so a
// connection plans each once and keeps the plan. Planned while deliveries
// was empty, they went on reading the whole table at every sweep (two a
// second) as it grew, until something analyzed it; they must read only
// what their partial indexes hold.
func TestHeldLookupsKeepToTheirIndexes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1 // one connection, so the plans made first are the ones used later
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, `ALTER TABLE deliveries SET (autovacuum_enabled = false)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE deliveries, delivery_retries`); err != nil {
		t.Fatal(err)
	}
	if eps, err := heldEndpoints(ctx, pool); err != nil || len(eps) != 0 {
		t.Fatalf("endpoints with held deliveries, none stored: %v, %v", eps, err)
	}
	wantHeld(t, pool, 0)

	if _, err := pool.Exec(ctx, `
INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, circuit_hold)
SELECT 'dlv_ok_' || i, 'acme', 'evt_' || i, 'ep_ok', 'succeeded', false FROM generate_series(1, 20000) i;
INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, circuit_hold)
SELECT 'dlv_down_' || i, 'acme', 'evt_' || i, 'ep_down', 'pending', true FROM generate_series(1, 3) i`); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	before := pgtest.RowsRead(t, tx, "deliveries")
	eps, err := heldEndpoints(ctx, tx)
	if err != nil || !slices.Equal(eps, []string{"ep_down"}) {
		t.Fatalf("endpoints with held deliveries: %v, %v; want [ep_down]", eps, err)
	}
	n, err := CountHeld(ctx, tx)
	if err != nil || n != 3 {
		t.Fatalf("CountHeld = %d, %v; want 3", n, err)
	}
	if read := pgtest.RowsRead(t, tx, "deliveries") - before; read > 10 {
		t.Errorf("listing the endpoints with held deliveries and counting them read %d rows of deliveries (20,003), want the 3 held at most", read)
	}
}
