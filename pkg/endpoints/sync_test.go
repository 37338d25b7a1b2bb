package endpoints

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/bus"
	"github.com/hookline/hookline/pkg/natstest"
	"github.com/hookline/hookline/pkg/pgtest"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

func newSyncKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	ns := natstest.Start(t)
	_, js := ns.Connect(t)
	kv, err := bus.EnsureEndpointsBucket(t.Context(), js, bus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func syncedEndpoint(t *testing.T, kv jetstream.KeyValue, id string) *hooklinev1.Endpoint {
	t.Helper()
	e, err := kv.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	var ep hooklinev1.Endpoint
	if err := proto.Unmarshal(e.Value(), &ep); err != nil {
		t.Fatal(err)
	}
	return &ep
}

func TestLoadAndSync(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, _ := pgtest.NewPool(t)
	kv := newSyncKV(t)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO tenants (id, name) VALUES ('acme', 'Acme')`)
	exec(`INSERT INTO endpoints (id, tenant_id, url, secret, previous_secret, previous_secret_expires_at, retry_schedule, filter, headers)
		VALUES ('ep_a', 'acme', 'http://x/', 'whsec_new', 'whsec_old', $1, '{5s,1m}', 'true', '{"X-A":"1"}')`, time.Now().Add(time.Hour))

	ep, err := Load(ctx, pool, "ep_a")
	if err != nil {
		t.Fatal(err)
	}
	if len(ep.GetSecrets()) != 2 || ep.GetSecrets()[0].GetValue() != "whsec_new" || ep.GetSecrets()[1].GetExpiresAt() == nil ||
		ep.GetRetryScheduleMs()[1] != 60000 || ep.GetFilter() != "true" || ep.GetHeaders()["X-A"] != "1" || ep.GetVersion() != 1 || ep.GetDeleted() {
		t.Fatalf("loaded %v", ep)
	}
	exec(`UPDATE endpoints SET previous_secret_expires_at = now() - interval '1 second' WHERE id = 'ep_a'`)
	if ep, _ = Load(ctx, pool, "ep_a"); len(ep.GetSecrets()) != 1 {
		t.Fatalf("expired previous secret still active: %v", ep.GetSecrets())
	}
	if _, err := Load(ctx, pool, "ep_none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing row: %v", err)
	}

	if err := Sync(ctx, pool, kv, "ep_a"); err != nil {
		t.Fatal(err)
	}
	if got := syncedEndpoint(t, kv, "ep_a"); got.GetVersion() != 1 || got.GetUrl() != "http://x/" {
		t.Fatalf("KV %v", got)
	}

	// A newer version in KV (written by a faster replica) is not overwritten.
	newer := proto.Clone(ep).(*hooklinev1.Endpoint)
	newer.Version, newer.Url = 5, "http://newer/"
	if err := Put(ctx, kv, newer); err != nil {
		t.Fatal(err)
	}
	if err := Sync(ctx, pool, kv, "ep_a"); err != nil {
		t.Fatal(err)
	}
	if got := syncedEndpoint(t, kv, "ep_a"); got.GetUrl() != "http://newer/" {
		t.Fatalf("older row overwrote newer KV value: %v", got)
	}

	exec(`UPDATE endpoints SET deleted_at = now(), version = 6 WHERE id = 'ep_a'`)
	if err := Sync(ctx, pool, kv, "ep_a"); err != nil {
		t.Fatal(err)
	}
	if got := syncedEndpoint(t, kv, "ep_a"); !got.GetDeleted() || got.GetVersion() != 6 {
		t.Fatalf("not a tombstone: %v", got)
	}

	// A key with no row at all becomes a tombstone on SyncAll.
	if err := Put(ctx, kv, &hooklinev1.Endpoint{Id: "ep_orphan", TenantId: "acme", Version: 3}); err != nil {
		t.Fatal(err)
	}
	if err := SyncAll(context.WithoutCancel(ctx), pool, kv); err != nil {
		t.Fatal(err)
	}
	if got := syncedEndpoint(t, kv, "ep_orphan"); !got.GetDeleted() {
		t.Fatalf("orphan not tombstoned: %v", got)
	}
}
