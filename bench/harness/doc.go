// Package harness is Hookline's end-to-end benchmark (CONTRACT 1, `make
// bench`).
//
// It treats Hookline as a black box. It runs an embedded NATS JetStream
// server (file store in a temporary directory, default sync interval) and
// creates a fresh database on a real PostgreSQL, migrated by
// `hookline-ingest migrate` and dropped afterwards. It starts the four
// services as separate processes from the built binaries with production
// settings (log level warn; private destinations allowed, because the
// receiver listens on loopback) and waits for each one's /readyz.
//
// The load generator and the webhook receiver live in this process. Every
// event carries 1 KiB of data holding its run, its sequence number and the
// time it was sent: for a fixed-rate scenario that is the time it was
// scheduled, so time spent queueing in the load generator counts as latency.
// The receiver is a keep-alive net/http server that parses those three fields
// out of each delivery, counts unique arrivals per endpoint and records the
// latency from send to arrival.
//
// Max-rate scenarios keep a bounded number of events outstanding (sent but
// not yet delivered everywhere), so a pipeline slower than the load
// generator is measured at its own pace instead of draining an ever longer
// backlog. Throughput is measured from the first send to the last arrival.
// CPU time per service is read from /proc/<pid>/stat before a scenario and
// after the pipeline is quiet again (every Hookline stream empty), so work
// done after the last delivery, such as writing the attempt log, is charged
// to the scenario. Peak RSS is VmHWM from /proc/<pid>/status, reset through
// /proc/<pid>/clear_refs at the start of each scenario.
//
// In the same run it measures the machine's ceilings: the load generator
// posting straight to the receiver, and JetStream publishing and
// consuming-and-acking 1 KiB messages, and reports Hookline's figures as a
// fraction of them.
package harness
