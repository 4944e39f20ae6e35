// Package batcher merges membership changes into per-cohort batches and
// schedules them for sending.
//
// It owns the open batches, net-effect compaction per (partner, cohort, uid),
// the size and time windows, the flush order, the per-cohort one-in-flight
// rule and backpressure. It does no I/O of its own: batches leave through the
// Sink interface, rejected members through the DeadLetter function, and
// acceptance is reported through each change's Ack. It knows nothing of Kafka
// or HTTP.
//
// Concurrency: a Batcher is safe for concurrent use. One goroutine runs Run,
// which dispatches due batches; Add may be called from any number of
// goroutines (one per partition, typically). The state is guarded by one
// mutex; the lock order is Batcher.mu, then whatever an Ack's Done takes.
package batcher
