package parking

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/pgtest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

func dlv(i int) *hooklinev1.Delivery {
	return &hooklinev1.Delivery{Id: fmt.Sprint("dlv_", i), TenantId: "acme", EndpointId: "ep_1", OrderingKey: "k"}
}

func TestBlockDrainUnblock(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	s := New(pool)
	ctx := t.Context()
	k := Key{EndpointID: "ep_1", KeyToken: "tok", TenantID: "acme"}

	if parked, err := s.AppendIfBlocked(ctx, dlv(1), "tok", 1); err != nil || parked {
		t.Fatalf("unblocked key: parked %v, %v", parked, err)
	}
	head := dlv(1)
	head.Attempts = 1
	if err := s.Block(ctx, head, "tok", 1, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 3; i++ {
		if parked, err := s.AppendIfBlocked(ctx, dlv(i), "tok", uint64(i)); err != nil || !parked {
			t.Fatalf("blocked key: parked %v, %v", parked, err)
		}
	}
	if keys, err := s.Claim(ctx, "a", time.Minute, 10); err != nil || len(keys) != 0 {
		t.Fatalf("claimed a key not yet due: %v %v", keys, err)
	}
	if _, err := pool.Exec(ctx, `UPDATE blocked_keys SET due_at = now()`); err != nil {
		t.Fatal(err)
	}
	keys, err := s.Claim(ctx, "a", time.Minute, 10)
	if err != nil || len(keys) != 1 || keys[0] != k {
		t.Fatalf("claim: %v %v", keys, err)
	}
	if keys, _ := s.Claim(ctx, "b", time.Minute, 10); len(keys) != 0 {
		t.Fatalf("a leased key claimed twice: %v", keys)
	}
	// Another owner's writes are fenced.
	if _, err := s.Next(ctx, k, "b", time.Minute); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Next by a non-owner: %v", err)
	}
	if err := s.Done(ctx, k, 1, "b"); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Done by a non-owner: %v", err)
	}
	for want := 1; want <= 3; want++ {
		it, err := s.Next(ctx, k, "a", time.Minute)
		if err != nil || it == nil || it.Seq != uint64(want) || it.Delivery.GetId() != fmt.Sprint("dlv_", want) {
			t.Fatalf("Next = %+v, %v; want seq %d", it, err, want)
		}
		if want == 1 && it.Delivery.GetAttempts() != 1 {
			t.Errorf("head lost its attempts: %v", it.Delivery)
		}
		if want == 2 {
			// An append while the drain is under way lands behind.
			if parked, err := s.AppendIfBlocked(ctx, dlv(4), "tok", 4); err != nil || !parked {
				t.Fatalf("append during drain: %v %v", parked, err)
			}
		}
		if err := s.Done(ctx, k, it.Seq, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := s.Unblock(ctx, k, "a"); err != nil || ok {
		t.Fatalf("unblocked with an item left: %v %v", ok, err)
	}
	it, err := s.Next(ctx, k, "a", time.Minute)
	if err != nil || it == nil || it.Seq != 4 {
		t.Fatalf("Next = %+v, %v", it, err)
	}
	// Retry: repark with a new due time releases the lease.
	it.Delivery.Attempts = 2
	if err := s.Repark(ctx, k, 4, it.Delivery, time.Now().Add(-time.Second), "a"); err != nil {
		t.Fatal(err)
	}
	if keys, _ := s.Claim(ctx, "b", time.Minute, 10); len(keys) != 1 {
		t.Fatal("reparked key not claimable")
	}
	it, err = s.Next(ctx, k, "b", time.Minute)
	if err != nil || it.Delivery.GetAttempts() != 2 {
		t.Fatalf("reparked item %+v %v", it, err)
	}
	if err := s.Done(ctx, k, 4, "b"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Unblock(ctx, k, "b"); err != nil || !ok {
		t.Fatalf("unblock: %v %v", ok, err)
	}
	if parked, err := s.AppendIfBlocked(ctx, dlv(5), "tok", 5); err != nil || parked {
		t.Fatalf("unblocked key still parks: %v %v", parked, err)
	}
}

// BenchmarkBlockedCheck is what an unblocked ordered delivery pays in
// PostgreSQL: one primary-key read.
func BenchmarkBlockedCheck(b *testing.B) {
	pool, _ := pgtest.NewPool(b)
	s := New(pool)
	d := dlv(1)
	for b.Loop() {
		if _, err := s.AppendIfBlocked(context.Background(), d, "tok", 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDesignB is what RESEARCH.md's design B would cost every delivery:
// insert into a per-key head table, claim it with FOR UPDATE SKIP LOCKED,
// delete it when done.
func BenchmarkDesignB(b *testing.B) {
	pool, _ := pgtest.NewPool(b)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE key_heads (endpoint_id text, key_token text, seq bigint, payload bytea, lease_until timestamptz, PRIMARY KEY (endpoint_id, key_token, seq))`); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		i++
		if _, err := pool.Exec(ctx, `INSERT INTO key_heads VALUES ('ep_1', $1, $2, '\x00')`, fmt.Sprint(i%1000), i); err != nil {
			b.Fatal(err)
		}
		tx, err := pool.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `UPDATE key_heads SET lease_until = now() + interval '1 minute' WHERE (endpoint_id, key_token, seq) IN (
SELECT endpoint_id, key_token, seq FROM key_heads WHERE key_token = $1 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)`, fmt.Sprint(i%1000)); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `DELETE FROM key_heads WHERE endpoint_id = 'ep_1' AND key_token = $1 AND seq = $2`, fmt.Sprint(i%1000), i); err != nil {
			b.Fatal(err)
		}
	}
}
