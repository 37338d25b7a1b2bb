// Package ids makes Hookline's opaque, prefixed identifiers ("evt_…", "ep_…").
// Generated ids sort by creation time: 48 bits of Unix milliseconds followed by
// 80 random bits, in Crockford base32 (the ULID layout), so they are also valid
// NATS subject tokens.
package ids

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"regexp"
	"time"
)

// Prefixes of the id types.
const (
	Event      = "evt_"
	Endpoint   = "ep_"
	DeadLetter = "dl_"
	Replay     = "rpl_"
	APIKey     = "key_"
	Delivery   = "dlv_"
	Reject     = "rej_"
)

const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// New returns prefix followed by a new time-sortable id.
func New(prefix string) string {
	return NewAt(prefix, time.Now())
}

// NewAt returns a new id for time t.
func NewAt(prefix string, t time.Time) string {
	var b [16]byte
	ms := uint64(t.UnixMilli()) //nolint:gosec // times before 1970 do not occur
	binary.BigEndian.PutUint16(b[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(b[2:6], uint32(ms))
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails on supported platforms
	return prefix + encode(b)
}

// encode writes 128 bits as 26 base32 characters (the first carries 3 bits).
func encode(b [16]byte) string {
	hi := binary.BigEndian.Uint64(b[0:8])
	lo := binary.BigEndian.Uint64(b[8:16])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

var producerID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidEventID reports whether a producer-chosen event id is acceptable
// (CONTRACT 2: [A-Za-z0-9_-]{1,64}).
func ValidEventID(id string) bool { return producerID.MatchString(id) }

// DeliveryFor is the id of the first delivery of an event to an endpoint. It
// is derived, not random, so a fan-out repeated after a crash produces the
// same id (and the same Nats-Msg-Id) and is deduplicated.
func DeliveryFor(tenant, eventID, endpointID string) string {
	h := sha256.Sum256([]byte(tenant + "\x00" + eventID + "\x00" + endpointID))
	var b [16]byte
	copy(b[:], h[:16])
	return Delivery + encode(b)
}

// DeliveryForAt is DeliveryFor with the time the event was accepted in
// front: the event's acceptance (Unix milliseconds) followed by 80 bits of
// the same hash, in the layout of [NewAt]. It is as stable as DeliveryFor
// (an event keeps its acceptance time, so a repeated fan-out derives the
// same id), and ids of deliveries fanned out together sort together: an
// index on them grows at its right end instead of touching a random page
// per row, which after every checkpoint costs a full-page image.
func DeliveryForAt(tenant, eventID, endpointID string, acceptedAt time.Time) string {
	h := sha256.Sum256([]byte(tenant + "\x00" + eventID + "\x00" + endpointID))
	var b [16]byte
	ms := uint64(acceptedAt.UnixMilli()) //nolint:gosec // times before 1970 do not occur
	binary.BigEndian.PutUint16(b[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(b[2:6], uint32(ms))
	copy(b[6:], h[:10])
	return Delivery + encode(b)
}
