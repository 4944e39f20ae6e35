package consumer

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/lease"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Config configures a Consumer. Zero durations take the documented defaults.
type Config struct {
	Brokers        []string
	Topics         []string
	GroupID        string
	DefaultPartner string // partner of events that name none
	// Workspace is the default MoEngage workspace (MOENGAGE_WORKSPACE_ID):
	// events naming none in workspace_id go to it. An event naming a
	// workspace is handled only when it names Workspace or Serves accepts
	// it; otherwise it is never sent to another: without Parking it is
	// dead-lettered as unknown_workspace, for `dlq replay` once a worker
	// serves that workspace; with Parking it is parked like a workspace
	// without a key (the sink stops its line: no_key), and flows by itself
	// once the registry serves it (DESIGN.md invariant 8), unless its
	// source partition's detours are full (then dead-lettered). Empty
	// means no default, not "any". Events naming none are sent
	// when Serves is nil (one workspace, as before the registry) and are
	// dead-lettered as invalid_field when Serves is set (a registry with no
	// default: they have nowhere to go).
	Workspace string
	// Serves, when set, is the registry's accept rule
	// (MOENGAGE_WORKSPACES_DIR): it reports whether this worker sends to a
	// workspace other than Workspace. It is called for every event naming
	// such a workspace, from the consumer's fetch loops concurrently: it
	// must be cheap and safe for concurrent use. nil: only Workspace.
	Serves func(workspace string) bool
	// WorkspaceLabel maps a workspace to its metric label, bounded by the
	// registry (the parked gauges; nil: the workspace itself).
	WorkspaceLabel func(workspace string) string

	Dialer    *kafka.Dialer      // TLS/SASL for the group and readers; nil = plain TCP
	Transport kafka.RoundTripper // TLS/SASL for metadata requests; nil = kafka.DefaultTransport
	Batcher   Batcher            // required
	DLQ       *deadletter.DLQ    // required
	// Fits reports whether a request with header h and the single member
	// uid fits within the Batcher's request body cap. A member that does
	// not can never be sent: its record is dead-lettered as it is, with the
	// reason too_large, and the record's other members go on. nil = the
	// default cap, wire.Fits with wire.DefaultMaxBodyBytes: a Batcher with
	// another MaxBytes needs its own here (the app passes BATCH_MAX_BYTES).
	Fits func(h wire.Header, uid string) bool
	// Lease receives this replica's proofs of group membership (see
	// keepLease); the sink waits for it before every attempt. nil = a
	// Lease of the Consumer's own (see Consumer.Lease).
	Lease *lease.Lease
	// OnAssign is called at every generation, before fetching, with the
	// partitions assigned to this replica and the total partition count of
	// the topics (the rate-limit share is len(assigned)/total; 0 when the
	// counts could not be read: unknown).
	OnAssign func(assigned []TopicPartition, total int)

	// Parking, when set, isolates a workspace that cannot take changes by
	// parking its records (DESIGN.md invariant 8, parking.go). nil: no
	// parking, nothing is ever detoured (Blocked is not asked).
	Parking *Parking
	// Blocked reports whether a workspace cannot take changes now (its own
	// trouble: no key, 401/403, its stopped line, its own outage; never a
	// global outage). Called from the fetch loops concurrently: cheap and
	// safe for concurrent use. nil: nothing is ever blocked.
	Blocked func(workspace string) bool
	// BlockedChanged returns a channel closed at the next change of what
	// Blocked reports. nil: never.
	BlockedChanged func() <-chan struct{}

	CommitInterval    time.Duration // default 1s
	MaxWait           time.Duration // fetch long-poll: the broker answers a partition's fetch within it; default 500ms
	SessionTimeout    time.Duration // default 10s (brokers reject < 6s)
	RebalanceTimeout  time.Duration // default 30s: the longest a generation's fencing may take
	HeartbeatInterval time.Duration // default 3s; must be < SessionTimeout/3
	DrainTimeout      time.Duration // shutdown budget for flushing open batches; default 30s
	// PartitionWatchInterval is how often the partition counts of Topics
	// are read during a generation. When one changes (partitions were
	// added, or a topic that did not exist at the join was created), the
	// generation ends and the group rebalances onto the new partitions.
	// Default 5s; negative disables the watch (new partitions then wait
	// for the next rebalance).
	PartitionWatchInterval time.Duration
	// LagInterval is how often a generation reads its partitions' high
	// watermarks from the brokers to publish cohortsync_consumer_lag
	// (watchLag). Default 15s.
	LagInterval time.Duration
	// FetchBufferBytes bounds, per assigned partition, the bytes (keys,
	// values and headers) of records fetched but not yet decoded and
	// handed to the Batcher. At the bound the partition's fetch loop
	// waits; a record larger than the bound is still taken when nothing
	// else is buffered. Default 4 MiB. The partition's reader holds at most
	// one more fetch response (readerMaxBytes, or one larger batch).
	FetchBufferBytes int
	// MaxProcessingTime is how long after a request was sent the API may
	// still process it (MOENGAGE_MAX_PROCESSING_TIME). A partition whose
	// previous owner did not prove a clean hand-over is read only this long
	// after this replica received the generation's assignment (handoff.go).
	// 0: no wait and no proof written (tests of other things). The proof
	// the fence writes is only as true as Batcher.Revoke: it must return
	// only once nothing this replica sent can still be processed (the
	// app's settlingBatcher waits for sink.Client.Settle).
	MaxProcessingTime time.Duration

	Logger  *slog.Logger
	Metrics *metrics.Metrics
}

func (c *Config) setDefaults() error {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.CommitInterval, time.Second)
	def(&c.MaxWait, 500*time.Millisecond)
	def(&c.SessionTimeout, 10*time.Second)
	def(&c.RebalanceTimeout, 30*time.Second)
	def(&c.HeartbeatInterval, 3*time.Second)
	def(&c.DrainTimeout, 30*time.Second)
	def(&c.PartitionWatchInterval, 5*time.Second)
	def(&c.LagInterval, 15*time.Second)
	if c.FetchBufferBytes == 0 {
		c.FetchBufferBytes = 4 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.New(nil)
	}
	if c.Transport == nil {
		c.Transport = kafka.DefaultTransport
	}
	if c.Fits == nil {
		c.Fits = defaultFits
	}
	if c.Lease == nil {
		c.Lease = lease.New()
	}
	switch {
	case len(c.Brokers) == 0:
		return errors.New("consumer: no brokers")
	case len(c.Topics) == 0:
		return errors.New("consumer: no topics")
	case c.GroupID == "":
		return errors.New("consumer: no group id")
	case c.Batcher == nil || c.DLQ == nil:
		return errors.New("consumer: Batcher and DLQ are required")
	case c.RebalanceTimeout < c.SessionTimeout:
		// The fence of a generation may take RebalanceTimeout; a member
		// that takes longer than the session to rejoin is expelled anyway.
		return fmt.Errorf("consumer: RebalanceTimeout %s is less than SessionTimeout %s", c.RebalanceTimeout, c.SessionTimeout)
	case 3*c.HeartbeatInterval >= c.SessionTimeout:
		// Kafka's rule of thumb, and the membership lease's budget: a
		// member must get three heartbeats into a session, so that one
		// lost heartbeat neither expels it nor lets its lease run out.
		return fmt.Errorf("consumer: HeartbeatInterval %s is not less than a third of SessionTimeout %s", c.HeartbeatInterval, c.SessionTimeout)
	case c.LagInterval < 0:
		return fmt.Errorf("consumer: LagInterval %s is negative", c.LagInterval)
	case c.FetchBufferBytes < 0:
		return fmt.Errorf("consumer: FetchBufferBytes %d is negative", c.FetchBufferBytes)
	}
	return c.Parking.setDefaults(c.Topics)
}

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int
}
