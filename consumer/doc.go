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
package consumer
