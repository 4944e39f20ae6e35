// Package consumer owns everything Kafka: the consumer group and its
// generations, one fetch loop per assigned partition, decoding and
// validation of records, the per-partition offsets tracker and commits, and
// the dead-letter producer.
//
// It hands valid member changes to a Batcher with an Ack per record, and
// commits a partition's offset only up to the highest offset below which
// every record is settled (DESIGN.md invariant 1). When a generation ends it
// fences: it stops fetching, has the batcher drop what is pending and wait
// for in-flight attempts, and only then lets the group rejoin (invariant 4);
// then it proves the clean hand-over in the offsets' metadata, and a
// partition taken over without that proof is read only MaxProcessingTime
// after the assignment (handoff.go).
// It does not batch, and it knows nothing of HTTP.
//
// The files, by concern:
//   - config.go: Config, its defaults and checks.
//   - consumer.go: the group loop: New, Run, runGeneration, fence, drain.
//   - commit.go: the commit cadence (commitEvery) and commit.
//   - partitions.go: partition discovery and the kafka-go workarounds:
//     metadata, partitionCounts, completePartitions, countingBalancer,
//     watchPartitions.
//   - fetch.go: a partition's fetch loop and its byte budget (fetchBudget);
//     fetcher.go: its read_committed reader (committedReader); txn.go: what
//     that reader hides of transactions.
//   - process.go: decoding and handing records to the Batcher (process,
//     handle); toolarge.go: members too large for any request.
//   - tracker.go: per-partition offsets and the commit watermark.
//   - lease.go, heartbeat.go: the membership lease's proofs.
//   - handoff.go, handover.go: the proof of a clean hand-over, and a drain
//     caught by a rebalance.
//   - lag.go: cohortsync_consumer_lag.
//   - dlq.go: Locate, where a rejected member's record was read, for the
//     dead-letter writer (internal/deadletter).
//   - parking.go, parked.go, replan.go, undetour.go, parkcommit.go: with
//     Config.Parking, isolation by parking (DESIGN.md invariant 8, "The
//     plumbing"): the detour of a blocked workspace's records to the
//     parking topic, the parking partitions' reader, the replan within a
//     generation, the end of a detour, commits with metadata.
package consumer
