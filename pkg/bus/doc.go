// Package bus is Hookline's JetStream topology: every stream, subject, consumer
// and KV bucket that the services share is declared here and nowhere else.
//
// The flow, one stream per hop, each a work queue (a message is removed once
// its consumer acknowledges it):
//
//	producer ──NATS──▶ HOOKLINE_INTAKE   hookline.publish.<tenant>.<type…>      consumer "ingest"
//	ingest ─────────▶ HOOKLINE_EVENTS   hookline.events.<tenant>.<key>          consumer "fanout"
//	fanout ─────────▶ HOOKLINE_DELIVERIES hookline.delivery.<tenant>.<endpoint>.<key>  consumer "dispatcher"
//	dispatcher ─────▶ HOOKLINE_ATTEMPTS hookline.attempt.<tenant>.<endpoint>    consumer "attempt-log"
//	dispatcher ─────▶ HOOKLINE_DEAD     hookline.dead.<tenant>.<endpoint>       consumer "deadletter"
//
// <key> is the ordering key's token ([KeyToken]): a hash of the ordering key,
// or "_" for events without one. Because the endpoint and the key are in the
// delivery subject, a subject is a per-(endpoint, key) FIFO: its oldest
// pending message is that key's head, and consumers can be partitioned by
// subject (for example with a subject transform's partition()) without a
// change of subjects.
//
// Endpoint configuration reaches fan-out and the dispatcher through the KV
// bucket [EndpointsBucket], keyed by endpoint id.
//
// Every publish carries a Nats-Msg-Id derived from what it publishes, so a
// publish repeated after a crash or a redelivery is dropped by the stream's
// duplicate window.
package bus
