// Package events is the ingest service's event intake: the HTTP routes under
// /v1/tenants/{tenant}/events, the NATS intake consumer of
// HOOKLINE_INTAKE, and the outbox relay.
//
// Every accepted event follows one path ([Service.Accept]): it is validated,
// inserted into the events table with ON CONFLICT DO NOTHING (the primary key
// (tenant_id, id) and the unique (tenant_id, idempotency_key) index make a
// repeated id or Idempotency-Key a duplicate, however many requests race),
// together with a row in event_outbox, in the same statement; then it is
// published as a hooklinev1.Event on HOOKLINE_EVENTS with a Nats-Msg-Id
// derived from the event. Once JetStream acknowledged it, it is answered 202,
// and its outbox row is deleted in the background, batched with other
// requests' deletions (the answer does not wait for it: a row left behind
// only causes a redundant publish). A duplicate answers the first event's
// id, type and accepted_at, and publishes the stored event again if its
// outbox row is still there (JetStream drops the copy when it was
// acknowledged).
//
// When the publish fails the outbox row stays and the caller gets a 503
// (HTTP) or a delayed NAK (NATS). The relay ([Service.RunRelay]) republishes
// the events of outbox rows older than a few seconds, which covers a crash
// between the INSERT and the publish. The outbox is a table of its own so
// that marking an event published deletes a small row instead of updating
// the event's (which rewrote the whole event and its index entries).
//
// The NATS intake ([Service.RunIntake]) runs on one replica of the cluster
// at a time, the holder of a lease in the KV bucket hookline_leases (see
// docs/design/ordering.md, "Intake"); a new holder recreates the consumer so
// delivery restarts at the oldest unacknowledged message. It handles
// messages concurrently in lanes: messages sharing a tenant and ordering key
// are hashed to the same lane and accepted in stream order. A message that
// fails validation is recorded in rejected_events with a reason and
// acknowledged; a message that meets a transient failure is retried in
// place, holding back its lane, and never acknowledged before it succeeds.
package events
