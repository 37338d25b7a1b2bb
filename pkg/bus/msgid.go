package bus

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// Nats-Msg-Id values. Each is derived from what is published, so a repeated
// publish of the same thing (after a crash, a redelivery or a relay) falls in
// the stream's duplicate window and is dropped.

// EventMsgID identifies an accepted event.
func EventMsgID(tenant, eventID string) string { return "evt:" + tenant + ":" + eventID }

// EventsMsgID identifies a message carrying several events of tenant by
// their ids, in order, as [AttemptBatchMsgID] does for attempts.
func EventsMsgID(tenant string, eventIDs []string) string {
	h := sha256.New()
	_, _ = h.Write([]byte(tenant))
	for _, id := range eventIDs {
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(id))
	}
	return "evg:" + hex.EncodeToString(h.Sum(nil)[:16])
}

// DeliveryMsgID identifies a delivery about to make attempt attempts+1.
func DeliveryMsgID(deliveryID string, attempts uint32) string {
	return "dlv:" + deliveryID + ":" + strconv.FormatUint(uint64(attempts), 10)
}

// DeliveriesMsgID identifies a message carrying several first deliveries
// (see [HeaderDeliveries]) by their ids, in order: fan-out publishing the
// same events again builds the same messages, which are dropped.
func DeliveriesMsgID(deliveryIDs []string) string {
	h := sha256.New()
	for _, id := range deliveryIDs {
		_, _ = h.Write([]byte(id))
		_, _ = h.Write([]byte{0})
	}
	return "dlg:" + hex.EncodeToString(h.Sum(nil)[:16])
}

// HandedBackMsgID identifies a delivery of a Deliveries message (stream
// sequence groupSeq) that the dispatcher publishes again on its own, to be
// attempted later, before it acknowledges the message. Handing back the same
// delivery of the same message twice (the message was redelivered) is
// dropped; the same delivery from another message is not.
func HandedBackMsgID(deliveryID string, attempts uint32, groupSeq uint64) string {
	return DeliveryMsgID(deliveryID, attempts) + ":g" + strconv.FormatUint(groupSeq, 10)
}

// AttemptMsgID identifies an attempt's outcome.
func AttemptMsgID(deliveryID string, attempt uint32) string {
	return "att:" + deliveryID + ":" + strconv.FormatUint(uint64(attempt), 10)
}

// AttemptBatchMsgID identifies a batch of attempt outcomes by the
// (delivery id, attempt) pairs it holds, in order: the same batch published
// again is dropped, and two different batches never share an id.
func AttemptBatchMsgID(deliveryIDs []string, attempts []uint32) string {
	h := sha256.New()
	var num [10]byte
	for i, id := range deliveryIDs {
		_, _ = h.Write([]byte(id))
		_, _ = h.Write(strconv.AppendUint(append(num[:0], ':'), uint64(attempts[i]), 10))
		_, _ = h.Write([]byte{0})
	}
	return "atb:" + hex.EncodeToString(h.Sum(nil)[:16])
}

// DeadMsgID identifies a dead letter of a delivery after attempts attempts.
func DeadMsgID(deliveryID string, attempts uint32) string {
	return "dead:" + deliveryID + ":" + strconv.FormatUint(uint64(attempts), 10)
}
