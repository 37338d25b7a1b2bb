// Package endpoints carries endpoint configuration from the control plane to
// the hot path. Ingest writes every change to the JetStream KV bucket
// [bus.EndpointsBucket]; fan-out and dispatchers keep a [Cache] that watches
// the bucket, so a change reaches every replica within about a second and no
// message needs a database read.
package endpoints

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/hookline/hookline/pkg/bus"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// Put stores ep in the bucket. A deleted endpoint is stored as a tombstone
// (Deleted set) so that caches can tell "deleted" from "not yet seen".
func Put(ctx context.Context, kv jetstream.KeyValue, ep *hooklinev1.Endpoint) error {
	b, err := proto.Marshal(ep)
	if err != nil {
		return fmt.Errorf("encode endpoint %s: %w", ep.GetId(), err)
	}
	if _, err := kv.Put(ctx, ep.GetId(), b); err != nil {
		return fmt.Errorf("put endpoint %s in KV: %w", ep.GetId(), err)
	}
	return nil
}

// Opener opens a signing secret sealed at rest for the endpoint named by
// aad, and returns a value that is not sealed as it is.
// *secretbox.Keyring (nil included) satisfies it.
type Opener interface {
	Open(v, aad string) (string, error)
}

// Option configures a [Cache].
type Option func(*Cache)

// WithSecrets makes the cache open sealed signing secrets with o, so that
// callers see plaintext secrets. Without it, secrets are kept as the bucket
// holds them. A secret that cannot be opened (its key is not configured) is
// dropped from the endpoint and logged without its value, so a delivery
// fails as unsigned rather than being signed with ciphertext.
func WithSecrets(o Opener) Option {
	return func(c *Cache) { c.opener = o }
}

// Cache is an in-memory, always-current copy of the bucket.
type Cache struct {
	kv     jetstream.KeyValue
	log    *slog.Logger
	opener Opener
	synced atomic.Bool

	mu       sync.RWMutex
	byID     map[string]*hooklinev1.Endpoint
	byTenant map[string][]*hooklinev1.Endpoint // live endpoints only
}

// NewCache returns an empty cache over kv; call [Cache.Run] to fill it.
func NewCache(kv jetstream.KeyValue, log *slog.Logger, opts ...Option) *Cache {
	c := &Cache{kv: kv, log: log, byID: map[string]*hooklinev1.Endpoint{}, byTenant: map[string][]*hooklinev1.Endpoint{}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Run watches the bucket until ctx ends. [Cache.Synced] turns true once the
// initial values are loaded.
func (c *Cache) Run(ctx context.Context) error {
	w, err := c.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", bus.EndpointsBucket, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("endpoint watch closed")
			}
			if e == nil {
				c.synced.Store(true)
				continue
			}
			c.apply(e)
		}
	}
}

func (c *Cache) apply(e jetstream.KeyValueEntry) {
	id := e.Key()
	if e.Operation() != jetstream.KeyValuePut {
		c.set(id, &hooklinev1.Endpoint{Id: id, Deleted: true})
		return
	}
	ep := &hooklinev1.Endpoint{}
	if err := proto.Unmarshal(e.Value(), ep); err != nil {
		c.log.Error("undecodable endpoint in KV, ignored", "endpoint_id", id, "err", err)
		return
	}
	c.openSecrets(ep)
	c.set(id, ep)
}

// openSecrets replaces sealed secrets by their plaintext.
func (c *Cache) openSecrets(ep *hooklinev1.Endpoint) {
	if c.opener == nil || len(ep.GetSecrets()) == 0 {
		return
	}
	kept := ep.Secrets[:0]
	for i, s := range ep.GetSecrets() {
		v, err := c.opener.Open(s.GetValue(), ep.GetId())
		if err != nil {
			// err names the key id, never key material or the secret.
			c.log.Error("endpoint signing secret cannot be decrypted; check HOOKLINE_ENCRYPTION_KEYS",
				"endpoint_id", ep.GetId(), "tenant_id", ep.GetTenantId(), "secret_index", i, "err", err)
			continue
		}
		s.Value = v
		kept = append(kept, s)
	}
	ep.Secrets = kept
}

func (c *Cache) set(id string, ep *hooklinev1.Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.byID[id]; ok && old.GetVersion() > ep.GetVersion() && !ep.GetDeleted() {
		return // an older write arriving late
	}
	old := c.byID[id]
	c.byID[id] = ep
	tenant := ep.GetTenantId()
	if tenant == "" && old != nil {
		tenant = old.GetTenantId()
	}
	list := c.byTenant[tenant]
	out := make([]*hooklinev1.Endpoint, 0, len(list)+1)
	for _, x := range list {
		if x.GetId() != id {
			out = append(out, x)
		}
	}
	if !ep.GetDeleted() {
		out = append(out, ep)
	}
	c.byTenant[tenant] = out
}

// Synced reports whether the initial load finished.
func (c *Cache) Synced() bool { return c.synced.Load() }

// ForTenant returns the tenant's live endpoints (disabled ones included).
// The slice must not be modified.
func (c *Cache) ForTenant(tenant string) []*hooklinev1.Endpoint {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byTenant[tenant]
}

// Get returns the endpoint with id from memory, or, when the cache has not
// seen it yet, from the bucket. It returns (nil, nil) when the endpoint does
// not exist at all. A deleted endpoint is returned with Deleted set.
func (c *Cache) Get(ctx context.Context, id string) (*hooklinev1.Endpoint, error) {
	c.mu.RLock()
	ep, ok := c.byID[id]
	c.mu.RUnlock()
	if ok {
		return ep, nil
	}
	e, err := c.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get endpoint %s from KV: %w", id, err)
	}
	c.apply(e)
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byID[id], nil
}

// Refresh reads endpoint id from the bucket now and applies it, for a
// writer that must not act on the version it replaced while its own watch
// catches up (an older version arriving later changes nothing).
func (c *Cache) Refresh(ctx context.Context, id string) error {
	e, err := c.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		// A key deleted from the bucket reads as not found; the watch
		// applies a deletion as a deleted endpoint, and so does this.
		c.mu.RLock()
		_, known := c.byID[id]
		c.mu.RUnlock()
		if known {
			c.set(id, &hooklinev1.Endpoint{Id: id, Deleted: true})
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("refresh endpoint %s from KV: %w", id, err)
	}
	c.apply(e)
	return nil
}

// Keep runs [Cache.Run] until ctx ends, restarting the watch (after a
// second, logged) whenever it stops on its own.
func (c *Cache) Keep(ctx context.Context) {
	for {
		err := c.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		c.log.Error("endpoint cache stopped, restarting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// WaitSynced waits until the initial load finished or ctx ends.
func (c *Cache) WaitSynced(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !c.Synced() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for endpoint cache: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
