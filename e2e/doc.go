// Package e2e tests Hookline from the outside: it builds the real binaries,
// runs the four services as separate processes against an embedded JetStream
// server and a real PostgreSQL, and talks to them only over HTTP and NATS.
package e2e
