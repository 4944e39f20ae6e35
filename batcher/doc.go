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
// mutex, Batcher.mu, held only while the batcher reads or changes that
// state (and sets the metrics that mirror it). No callback runs under it:
// the Sink, the Limiter, the DeadLetter function and every Ack's Done are
// called without it (a batch's acks by the goroutine that sent it, which
// alone owns the batch once it is in flight), so they may take locks of
// their own.
package batcher
