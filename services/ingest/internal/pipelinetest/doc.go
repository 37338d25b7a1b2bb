// Package pipelinetest holds in-process tests of ingest together with the
// fan-out and dispatcher services (configuration propagation to several
// replicas). It has no non-test code; it lives apart so that a compile error
// in another service cannot break ingest's own tests.
package pipelinetest
