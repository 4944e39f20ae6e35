// Package replay is `cohortsync-worker dlq replay`: it re-publishes
// dead-lettered records to the topic they were read from, once the cause
// (a producer bug, a worker bug, a cohort that the API rejected) has been
// fixed.
//
// A run reads the dead-letter topic from where its own consumer group
// stopped last time (the beginning when the group has no offset, or a later
// position given by --from-offset or --since) up to the end offsets taken
// when the run starts, so it always terminates. Each selected record is
// written back with its key and value, without the cohortsync-* headers the
// worker added, plus a cohortsync-replayed-from header naming the
// dead-letter record. The group's offsets are committed after every write,
// so a second run with the same group replays nothing twice; a record that
// is still invalid is simply dead-lettered again by the worker, as a new
// record.
//
// The package owns the replay logic (Replayer, with small interfaces for
// the cluster so that tests use fakes), its kafka-go adapter (Kafka) and the
// subcommand's flags (Main). It does not own the dead-letter record format
// (package consumer) or the Kafka settings (package config).
package replay
