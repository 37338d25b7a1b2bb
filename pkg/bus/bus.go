package bus

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	StreamIntake     = "HOOKLINE_INTAKE"
	StreamEvents     = "HOOKLINE_EVENTS"
	StreamDeliveries = "HOOKLINE_DELIVERIES"
	StreamAttempts   = "HOOKLINE_ATTEMPTS"
	StreamDead       = "HOOKLINE_DEAD"
)

// Durable consumer names.
const (
	ConsumerIngest     = "ingest"
	ConsumerFanout     = "fanout"
	ConsumerDispatcher = "dispatcher"
	ConsumerAttemptLog = "attempt-log"
	ConsumerDeadletter = "deadletter"
)

// EndpointsBucket is the KV bucket holding every endpoint's configuration
// (a hooklinev1.Endpoint under its id).
const EndpointsBucket = "hookline_endpoints"

// Subject prefixes.
const (
	PublishPrefix  = "hookline.publish."
	eventsPrefix   = "hookline.events."
	deliveryPrefix = "hookline.delivery."
	attemptPrefix  = "hookline.attempt."
	deadPrefix     = "hookline.dead."
)

// Header names Hookline sets or reads on NATS messages besides trace context.
const (
	HeaderMsgID       = "Nats-Msg-Id"
	HeaderOrderingKey = "Hookline-Ordering-Key"
	// HeaderEvents marks a message on an event subject that carries
	// several events (hooklinev1.Events) of that subject, in the order they
	// were accepted; its value is how many.
	HeaderEvents = "Hookline-Events"
	// HeaderDeliveries marks a message on a keyless delivery subject that
	// carries several deliveries to its endpoint (hooklinev1.Deliveries);
	// its value is how many.
	HeaderDeliveries = "Hookline-Deliveries"
)

// NoKey is the key token of events without an ordering key.
const NoKey = "_"

// KeyToken maps an ordering key to a subject token: "_" for none, otherwise
// 16 hex digits of its FNV-1a 64-bit hash. Distinct keys that collide share a
// lane, which costs them parallelism, never order.
func KeyToken(orderingKey string) string {
	if orderingKey == "" {
		return NoKey
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(orderingKey))
	s := strconv.FormatUint(h.Sum64(), 16)
	return strings.Repeat("0", 16-len(s)) + s
}

// KeyPartitions is how many event subjects a tenant's keyed events are
// spread over. Every event of one key travels on the same one, so fan-out
// keeps the key's order by handling that subject in order, and ingest can
// group a request's keyed events into one message per partition (as it does
// a tenant's keyless events) instead of one message per event. More
// partitions let more of a tenant's keyed events be fanned out at once;
// fewer make larger groups.
const KeyPartitions = 16

// EventSubject is where ingest publishes an accepted event: the tenant's
// keyless subject ("_"), or for an event with an ordering key the subject of
// the key's partition: "k" and the first hex digit of its [KeyToken] (never
// a key token, which has 16 digits, nor "_").
func EventSubject(tenant, orderingKey string) string {
	if orderingKey == "" {
		return eventsPrefix + tenant + "." + NoKey
	}
	return eventsPrefix + tenant + ".k" + KeyToken(orderingKey)[:1]
}

// DeliverySubject is where a delivery of an event to an endpoint waits.
func DeliverySubject(tenant, endpoint, orderingKey string) string {
	return deliveryPrefix + tenant + "." + endpoint + "." + KeyToken(orderingKey)
}

// AttemptSubject is where the dispatcher reports an attempt's outcome.
func AttemptSubject(tenant, endpoint string) string {
	return attemptPrefix + tenant + "." + endpoint
}

// AttemptBatchSubject is where the dispatcher reports the outcomes of
// several attempts in one message (hooklinev1.AttemptOutcomes). "_batch"
// cannot be a tenant id, which starts with a letter or digit.
const AttemptBatchSubject = attemptPrefix + "_batch"

// DeadSubject is where a delivery that will not be attempted again goes.
func DeadSubject(tenant, endpoint string) string {
	return deadPrefix + tenant + "." + endpoint
}

// PublishSubject is where producers publish events of type eventType.
func PublishSubject(tenant, eventType string) string {
	return PublishPrefix + tenant + "." + eventType
}

// ParsePublishSubject splits hookline.publish.<tenant>.<type…> into tenant and
// event type; ok is false when the subject has no type.
func ParsePublishSubject(subject string) (tenant, eventType string, ok bool) {
	rest, found := strings.CutPrefix(subject, PublishPrefix)
	if !found {
		return "", "", false
	}
	tenant, eventType, found = strings.Cut(rest, ".")
	if !found || tenant == "" || eventType == "" {
		return "", "", false
	}
	return tenant, eventType, true
}

// Options tune the topology.
type Options struct {
	// DedupeWindow is the Nats-Msg-Id duplicate window of every stream.
	DedupeWindow time.Duration
	// Replicas of each stream (1 for a single server, 3 in a cluster).
	Replicas int
}

func (o *Options) setDefaults() {
	if o.DedupeWindow <= 0 {
		o.DedupeWindow = 2 * time.Minute
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
}

// Streams returns the configuration of every stream.
func Streams(o Options) []jetstream.StreamConfig {
	o.setDefaults()
	stream := func(name, subject, desc string, maxAge time.Duration) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subject},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
			// Direct gets (the per-key head lookups) skip the JetStream API's
			// JSON and worker queue. Only on a single replica: with several,
			// any replica answers a direct get, a lagging one too.
			AllowDirect: o.Replicas == 1,
			Duplicates:  o.DedupeWindow,
			MaxAge:      maxAge,
			Discard:     jetstream.DiscardOld,
		}
	}
	// MaxAge bounds what a stopped consumer lets pile up; it is far longer
	// than any outage Hookline is meant to ride out without intervention.
	const week = 7 * 24 * time.Hour
	return []jetstream.StreamConfig{
		stream(StreamIntake, PublishPrefix+">", "events published by producers over NATS", week),
		stream(StreamEvents, eventsPrefix+">", "accepted events, waiting for fan-out", week),
		stream(StreamDeliveries, deliveryPrefix+">", "deliveries waiting for the dispatcher", week),
		stream(StreamAttempts, attemptPrefix+">", "attempt outcomes, waiting for the attempt log", week),
		stream(StreamDead, deadPrefix+">", "dead letters, waiting for the dead-letter service", week),
	}
}

// Consumer returns the durable pull consumer of a stream. ackWait must exceed
// the longest time a message may be held unacknowledged while being worked on.
func Consumer(name string, ackWait time.Duration, maxAckPending int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// EnsureStreams creates or updates every stream.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o Options) error {
	for _, cfg := range Streams(o) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("create or update stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// EnsureConsumer creates or updates a durable consumer on stream and checks
// that the server kept the settings Hookline relies on.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("create or update consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	got := c.CachedInfo().Config
	if got.AckWait != cfg.AckWait || got.AckPolicy != cfg.AckPolicy {
		return nil, fmt.Errorf("consumer %s on %s: server changed ack settings (ack wait %s, want %s)", cfg.Durable, stream, got.AckWait, cfg.AckWait)
	}
	return c, nil
}

// EnsureEndpointsBucket creates or opens the endpoint configuration bucket.
func EnsureEndpointsBucket(ctx context.Context, js jetstream.JetStream, o Options) (jetstream.KeyValue, error) {
	o.setDefaults()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      EndpointsBucket,
		Description: "endpoint configuration for fan-out and dispatchers",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create or update KV bucket %s: %w", EndpointsBucket, err)
	}
	return kv, nil
}

// ErrServerTooOld is returned by [CheckServer] for a server that lacks what
// Hookline relies on.
var ErrServerTooOld = errors.New("NATS server too old")

// MinServerVersion is the oldest nats-server Hookline runs against.
const MinServerVersion = "2.11.0"

// CheckServer refuses a server older than [MinServerVersion] or without
// JetStream.
func CheckServer(ctx context.Context, version string, js jetstream.JetStream) error {
	if !versionAtLeast(version, MinServerVersion) {
		return fmt.Errorf("%w: server %s, need %s or newer (JetStream features used by Hookline are missing or ignored)", ErrServerTooOld, version, MinServerVersion)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("JetStream not available on server %s: %w", version, err)
	}
	return nil
}

func versionAtLeast(have, want string) bool {
	parse := func(v string) [3]int {
		var out [3]int
		v, _, _ = strings.Cut(strings.TrimPrefix(v, "v"), "-")
		for i, p := range strings.SplitN(v, ".", 3) {
			out[i], _ = strconv.Atoi(p)
		}
		return out
	}
	h, w := parse(have), parse(want)
	for i := range h {
		if h[i] != w[i] {
			return h[i] > w[i]
		}
	}
	return true
}

// LeasesBucket is the KV bucket of cluster-wide leases: a key is held by
// the replica whose owner id it stores, and is forgotten [LeaseTTL] after
// its last put unless its holder renews it.
const LeasesBucket = "hookline_leases"

// LeaseTTL is the TTL of every key in [LeasesBucket]: how long a lease
// outlives a holder that stopped renewing it (killed, paused, cut off).
const LeaseTTL = 10 * time.Second

// LeaseIntake is the lease key of the one ingest replica that consumes
// HOOKLINE_INTAKE.
const LeaseIntake = "intake"

// EnsureLeasesBucket creates or opens the leases bucket and checks that the
// server kept its TTL (a server that ignores it would let a dead holder keep
// a lease forever).
func EnsureLeasesBucket(ctx context.Context, js jetstream.JetStream, o Options) (jetstream.KeyValue, error) {
	o.setDefaults()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      LeasesBucket,
		Description: "cluster-wide leases (the ingest intake leader)",
		History:     1,
		TTL:         LeaseTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create or update KV bucket %s: %w", LeasesBucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("read KV bucket %s: %w", LeasesBucket, err)
	}
	if st.TTL() != LeaseTTL {
		return nil, fmt.Errorf("KV bucket %s: server kept TTL %s, want %s", LeasesBucket, st.TTL(), LeaseTTL)
	}
	return kv, nil
}
