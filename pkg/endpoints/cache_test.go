package endpoints_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/hookline/hookline/pkg/endpoints"
	"github.com/hookline/hookline/pkg/secretbox"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

func TestCacheFollowsBucket(t *testing.T) {
	t.Parallel()
	kv := endpoints.NewTestKV(t)
	ctx := t.Context()
	// One endpoint exists before the cache starts, one is added after.
	if err := endpoints.Put(ctx, kv, &hooklinev1.Endpoint{Id: "ep_a", TenantId: "acme", Url: "http://a", Version: 1}); err != nil {
		t.Fatal(err)
	}
	cache := endpoints.NewCache(kv, slog.New(slog.DiscardHandler))
	go func() { _ = cache.Run(ctx) }()
	waitFor(t, "synced", func() error {
		if !cache.Synced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	if got := cache.ForTenant("acme"); len(got) != 1 || got[0].GetId() != "ep_a" {
		t.Fatalf("ForTenant = %v", got)
	}
	if err := endpoints.Put(ctx, kv, &hooklinev1.Endpoint{Id: "ep_b", TenantId: "acme", Url: "http://b", Version: 1}); err != nil {
		t.Fatal(err)
	}
	if err := endpoints.Put(ctx, kv, &hooklinev1.Endpoint{Id: "ep_a", TenantId: "acme", Url: "http://a2", Version: 2}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "update", func() error {
		got := cache.ForTenant("acme")
		if len(got) != 2 {
			return fmt.Errorf("ForTenant = %v", got)
		}
		ep, _ := cache.Get(ctx, "ep_a")
		if ep.GetUrl() != "http://a2" {
			return fmt.Errorf("ep_a url %q", ep.GetUrl())
		}
		return nil
	})
	// A tombstone removes the endpoint from the tenant's list but Get says deleted.
	if err := endpoints.Put(ctx, kv, &hooklinev1.Endpoint{Id: "ep_b", TenantId: "acme", Version: 2, Deleted: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "tombstone", func() error {
		if got := cache.ForTenant("acme"); len(got) != 1 {
			return fmt.Errorf("ForTenant = %v", got)
		}
		return nil
	})
	ep, err := cache.Get(ctx, "ep_b")
	if err != nil || ep == nil || !ep.GetDeleted() {
		t.Fatalf("Get(ep_b) = %v, %v; want a tombstone", ep, err)
	}
	if ep, err := cache.Get(ctx, "ep_never"); err != nil || ep != nil {
		t.Fatalf("Get(ep_never) = %v, %v; want nil, nil", ep, err)
	}
}

func waitFor(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCacheOpensSealedSecrets(t *testing.T) {
	t.Parallel()
	kv := endpoints.NewTestKV(t)
	ctx := t.Context()
	oldKey, newKey := secretbox.NewKey("old"), secretbox.NewKey("new")
	writer, _ := secretbox.Parse(oldKey)
	const cur, prev = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	sealed, err := writer.Seal(cur, "ep_a")
	if err != nil {
		t.Fatal(err)
	}
	if err := endpoints.Put(ctx, kv, &hooklinev1.Endpoint{Id: "ep_a", TenantId: "acme", Url: "http://a", Version: 1,
		Secrets: []*hooklinev1.Secret{{Value: sealed}, {Value: prev}}}); err != nil {
		t.Fatal(err)
	}
	rotated, _ := secretbox.Parse(newKey + "," + oldKey)
	onlyNew, _ := secretbox.Parse(newKey)
	cases := []struct {
		name string
		opts []endpoints.Option
		want []string
	}{
		{"keyring with the old key opens", []endpoints.Option{endpoints.WithSecrets(rotated)}, []string{cur, prev}},
		{"without the key the sealed secret is dropped", []endpoints.Option{endpoints.WithSecrets(onlyNew)}, []string{prev}},
		{"nil keyring drops sealed, keeps plain", []endpoints.Option{endpoints.WithSecrets((*secretbox.Keyring)(nil))}, []string{prev}},
		{"no option keeps values as stored", nil, []string{sealed, prev}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cache := endpoints.NewCache(kv, slog.New(slog.DiscardHandler), tc.opts...)
			ep, err := cache.Get(ctx, "ep_a")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range ep.GetSecrets() {
				got = append(got, s.GetValue())
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("secrets %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCacheRefresh: Refresh applies the bucket's version of one endpoint at
// once, without a watch running, and never goes back to an older one.
func TestCacheRefresh(t *testing.T) {
	t.Parallel()
	kv := endpoints.NewTestKV(t)
	ctx := t.Context()
	cache := endpoints.NewCache(kv, slog.New(slog.DiscardHandler)) // no Run: only Get and Refresh fill it
	if err := endpoints.Put(ctx, kv, &hooklinev1.Endpoint{Id: "ep_a", TenantId: "acme", Url: "http://a", Version: 1}); err != nil {
		t.Fatal(err)
	}
	if ep, err := cache.Get(ctx, "ep_a"); err != nil || ep.GetDisabled() {
		t.Fatalf("Get = %v, %v", ep, err)
	}
	if err := endpoints.Put(ctx, kv, &hooklinev1.Endpoint{Id: "ep_a", TenantId: "acme", Url: "http://a", Version: 2, Disabled: true}); err != nil {
		t.Fatal(err)
	}
	if ep, _ := cache.Get(ctx, "ep_a"); ep.GetDisabled() {
		t.Fatal("the cache saw version 2 before Refresh: the test proves nothing")
	}
	if err := cache.Refresh(ctx, "ep_a"); err != nil {
		t.Fatal(err)
	}
	if ep, _ := cache.Get(ctx, "ep_a"); !ep.GetDisabled() || ep.GetVersion() != 2 {
		t.Fatalf("after Refresh: %v, want version 2, disabled", ep)
	}
	// An older version in the bucket (a late writer) does not win.
	if err := endpoints.Put(ctx, kv, &hooklinev1.Endpoint{Id: "ep_a", TenantId: "acme", Url: "http://a", Version: 1}); err != nil {
		t.Fatal(err)
	}
	if err := cache.Refresh(ctx, "ep_a"); err != nil {
		t.Fatal(err)
	}
	if ep, _ := cache.Get(ctx, "ep_a"); ep.GetVersion() != 2 {
		t.Fatalf("after refreshing an older version: %v, want version 2", ep)
	}
	// A deleted key, and one that never existed.
	if err := kv.Delete(ctx, "ep_a"); err != nil {
		t.Fatal(err)
	}
	if err := cache.Refresh(ctx, "ep_a"); err != nil {
		t.Fatal(err)
	}
	if ep, _ := cache.Get(ctx, "ep_a"); !ep.GetDeleted() {
		t.Fatalf("after refreshing a deleted key: %v, want deleted", ep)
	}
	if err := cache.Refresh(ctx, "ep_none"); err != nil {
		t.Fatalf("refresh of an unknown id: %v", err)
	}
	if ep, err := cache.Get(ctx, "ep_none"); err != nil || ep != nil {
		t.Fatalf("unknown id after Refresh: %v, %v", ep, err)
	}
}
