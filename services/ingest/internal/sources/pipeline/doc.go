// Package pipeline holds an end-to-end test of inbound webhooks: a
// GitHub-signed request to a source's ingest URL travels through ingest,
// fan-out and a dispatcher, all in-process, and reaches an endpoint as a
// signed Hookline delivery. It has no non-test code; it lives apart so that
// a compile error in another service cannot break the sources tests.
package pipeline
