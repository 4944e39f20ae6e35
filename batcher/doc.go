// Package batcher merges membership changes into per-cohort batches and
// schedules them for sending.
//
// It owns the open batches, net-effect compaction per (workspace, partner,
// cohort, uid), the size and time windows, the flush order, the per-cohort
// one-in-flight rule (a cohort is a (workspace, partner, cohort_id): two
// workspaces' cohorts of the same id are unrelated) and backpressure. It does no I/O of its own: batches leave through the
// Sink interface (which takes the rate-limit permits), rejected members
// through the DeadLetter function, and acceptance is reported through each
// change's Ack; what it measures goes out through the Metrics interface
// (trigger.go). It knows nothing of Kafka, HTTP or Prometheus.
//
// Structure: the state and every decision about it are in Core (core.go), a
// plain data structure with no goroutines, locks, clock or I/O, driven with
// an explicit time. A Batcher runs one Core in one goroutine, Run's, which
// alone touches it: Add, Revoke and Flush send their requests to it over
// channels, and it answers each at once (Add's answer says how many changes
// it took and what to wait on for room; Revoke's and Flush's what to wait on
// for the end). Each batch in flight is sent by a goroutine of its own,
// which alone owns the batch until it hands the result back to Run over a
// channel: that goroutine calls the Sink, the DeadLetter function and the
// acks' Done, so none of them can block Run, and all may take locks of
// their own. There are no locks in the package; Pending and InFlight read
// atomic copies that Run stores.
package batcher
