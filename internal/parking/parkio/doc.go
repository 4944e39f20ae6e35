// Package parkio is the Kafka I/O of the parking topic (issue 21, invariant
// 8; DESIGN.md "Workspaces and parking (invariant 8): the protocol"): it
// creates the topic (Ensure), appends parked records and generation markers
// with acks=all and returns their positions (Writer), reads the group's
// commits of the parking partitions (Committed) and decodes what a reader
// reads back (Decode). The protocol's state machines are in the parent
// package parking (pure); this package holds no protocol state of its own.
package parkio
