package parkio

import (
	"context"
	"errors"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/parking"
)

// Header names of a parked record. HeaderNotBefore and HeaderGeneration are
// the parking package's (one name per header in the code base).
const (
	HeaderWorkspace       = "cohortsync-workspace"
	HeaderCohort          = "cohortsync-cohort"
	HeaderSourceTopic     = "cohortsync-source-topic"
	HeaderSourcePartition = "cohortsync-source-partition"
	HeaderSourceOffset    = "cohortsync-source-offset"
	HeaderNotBefore       = parking.HeaderNotBefore  // "cohortsync-not-before-ms"
	HeaderGeneration      = parking.HeaderGeneration // the writer's group generation
	HeaderMarker          = "cohortsync-marker"      // value MarkerValue on a generation marker
	MarkerValue           = "1"
)

// Defaults of Config.
const (
	DefaultPartitions  = 12
	DefaultReplication = 3
	DefaultRetention   = 7 * 24 * time.Hour
)

// TopicName is the parking topic of a consumer group: "<group>.parked".
func TopicName(group string) string { return group + ".parked" }

// Config is what every function needs. Transport/Dialer as the rest of the
// worker builds them (internal/kafkaconn); nil means plaintext defaults.
type Config struct {
	Brokers     []string
	Transport   kafka.RoundTripper
	Dialer      *kafka.Dialer
	Topic       string
	Partitions  int           // K for a topic created here (default 12)
	Replication int           // replication factor for a topic created here (default 3, capped at the broker count)
	Retention   time.Duration // retention.ms of a topic created here (default 7 days)
}

// Record is one parked record: the source record's key and value unchanged,
// plus headers.
type Record struct {
	Workspace, Cohort string // routing: partition parking.PartitionFor(Workspace, Cohort, K)
	Key, Value        []byte // the source record's, unchanged
	SourceTopic       string
	SourcePartition   int
	SourceOffset      int64
	NotBefore         time.Duration // DESIGN.md parking protocol 2 (header cohortsync-not-before-ms)
	Generation        int64         // the writer's group generation (protocol 6)
}

// Position is where a record was appended.
type Position struct {
	Partition int
	Offset    int64
}

// Parked is a decoded parking record.
type Parked struct {
	Record
	Marker    bool // a generation marker: no change; only Generation is set
	Partition int
	Offset    int64
}

// ErrNotParked: a record of the parking topic without the parking headers
// (not written by a worker); the consumer dead-letters it.
var ErrNotParked = errors.New("parkio: not a parked record")

var errTODO = errors.New("parkio: not implemented yet")

// Ensure creates the topic (delete cleanup, cfg.Partitions,
// cfg.Replication, cfg.Retention, min.insync.replicas min(2, replication))
// unless it exists, and returns its partition count (an existing topic's
// count wins). Never via auto-creation.
func Ensure(ctx context.Context, cfg Config) (partitions int, err error) {
	return 0, errTODO
}

// Committed reads the group's committed offsets and metadata of the parking
// partitions (OffsetFetch) and parses each with parking.ParseCommit. A
// partition with no commit yields parking.Commit{Offset: -1} (nothing
// settled).
func Committed(ctx context.Context, cfg Config, group string, partitions int) ([]parking.Commit, error) {
	return nil, errTODO
}

// Decode decodes a message read from the parking topic. A record without
// the headers is an error (ErrNotParked): it was not written by a worker;
// the consumer dead-letters it.
func Decode(m kafka.Message) (Parked, error) {
	return Parked{}, errTODO
}
