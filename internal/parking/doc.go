// Package parking holds the state machines of the parking protocol (issue 21,
// invariant 8; the protocol and its argument are in PARKING.md): how a source
// partition's owner detours a blocked workspace's records into the parking
// topic and when it may send them directly again (Source), how a parking
// partition's owner passes over a blocked workspace's records with one cursor
// per workspace and resumes them in log order (Partition), the encoding of
// both in the commit metadata, the writer generation that makes a late
// write of an expelled owner stale, and the not-before header
// (notbefore.go).
//
// Like batcher.Core it is pure: no Kafka, no goroutines, no clock of its
// own. Offsets and times are explicit arguments; the caller reads and writes
// the logs, calls the API and commits. Nothing here is safe for concurrent
// use: one owner goroutine per partition drives one value.
//
// Memory: a Source holds, per detoured workspace, one offset per parking
// partition; a Partition holds one offset per blocked (or resuming)
// workspace. Neither holds anything per record.
package parking
