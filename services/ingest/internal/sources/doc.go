// Package sources receives third-party webhooks ("inbound webhooks") and
// turns them into Hookline events (docs/sources.md).
//
// A source belongs to a tenant and has:
//
//   - an ingest URL, POST /v1/in/{source_token}, whose token carries 256
//     random bits and is stored only as its SHA-256, like an API key: the
//     full URL is shown when the source is created and when its token is
//     rotated, never again;
//   - a verifier (package verify): Standard Webhooks, GitHub, Stripe, a
//     generic HMAC, basic auth, a bearer token or, explicitly, none. Its
//     secrets are sealed with pkg/secretbox and rotate with a grace period
//     during which both are accepted;
//   - mapping rules that compute the event's type, ordering key and id from
//     a header, a constant, or a CEL expression (package expr), and an
//     optional CEL filter.
//
// The receiving path does one indexed read (the source by token hash); the
// compiled expressions are cached per source version. A request is
// answered 202 only once the event is durable, through the same
// [events.Service.Accept] as POST /events, never after its delivery. The
// event id is the provider's delivery id when there is one (X-GitHub-Delivery,
// the Stripe event id, webhook-id), so a redelivery is a duplicate that
// creates nothing. Every refused request (bad signature, stale timestamp,
// body that is not JSON, failed mapping, too large) and every filtered or
// duplicate one is recorded in rejected_events with subject
// "source:<id>" and a reason, listed by GET .../sources/{id}/rejects.
package sources
