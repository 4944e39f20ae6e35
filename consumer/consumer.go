package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/lease"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// Batcher is what the consumer needs of the batcher.
type Batcher interface {
	Add(ctx context.Context, changes []batcher.Change) error
	Revoke(ctx context.Context) error
	Flush(ctx context.Context) error
}

var _ Batcher = (*batcher.Batcher)(nil)

// Consumer runs the consumer group. See the package doc.
type Consumer struct {
	cfg Config
	log *slog.Logger
	m   *metrics.Metrics

	inGen atomic.Bool
	// genID is the ID of the latest generation joined (0: none yet).
	genID atomic.Int64
	lease *lease.Lease
	// commitMu serialises commits: the cadence loop and the final commit
	// of a drain may overlap. It guards partitionState.committed.
	commitMu sync.Mutex

	// openReader starts the reader of one partition at an offset (a test
	// seam: tests make it fail).
	openReader func(rcfg kafka.ReaderConfig, offset int64) (partitionReader, error)
	// leaderCounts holds the partition count per topic that this member
	// assigned from the last time it led a join (see countingBalancer); a
	// generation takes it (nil when this member did not lead).
	leaderCounts atomic.Pointer[map[string]int]
	// park is the parking topic's I/O once opened (parking.go; nil before,
	// and without Config.Parking).
	park atomic.Pointer[parkIO]
}

// New validates cfg and returns a Consumer.
func New(cfg Config) (*Consumer, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	// Every reader's configuration differs from this one only in topic and
	// partition: an invalid one fails here, not in a generation.
	if rc := cfg.readerConfig(cfg.Topics[0], 0); rc.Validate() != nil {
		return nil, fmt.Errorf("consumer: invalid reader configuration: %w", rc.Validate())
	}
	if cfg.Parking != nil { // the group reads the parking topic too
		cfg.Topics = append(slices.Clone(cfg.Topics), cfg.Parking.Topic)
	}
	c := &Consumer{cfg: cfg, log: cfg.Logger.With("component", "consumer"), m: cfg.Metrics, lease: cfg.Lease}
	c.openReader = c.openCommittedReader
	return c, nil
}

// Lease returns the lease the consumer proves its membership to: a sender
// must hold it (Lease.Wait) before every attempt.
func (c *Consumer) Lease() *lease.Lease { return c.lease }

// Joined reports whether the consumer is a member of a live generation.
func (c *Consumer) Joined() bool { return c.inGen.Load() }

// Generation returns the ID of the consumer-group generation this replica
// joined last (0: none yet). OnAssign may call it: it is set before.
func (c *Consumer) Generation() int64 { return c.genID.Load() }

// Run consumes until ctx ends, then drains: it stops fetching, flushes the
// open batches within DrainTimeout, commits what was accepted and leaves the
// group. It returns nil after a clean drain, or an error that stopped it.
func (c *Consumer) Run(ctx context.Context) error {
	gcfg := c.groupConfig()
	if err := gcfg.Validate(); err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	group, err := kafka.NewConsumerGroup(gcfg)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	defer group.Close()
	var lastErr string
	startFailures := 0 // consecutive generations in which a reader could not start
	for {
		gen, err := group.Next(ctx)
		if ctx.Err() != nil {
			c.log.Info("stopping before joining a generation")
			return group.Close()
		}
		if err != nil {
			if err.Error() != lastErr {
				c.log.Warn("joining the consumer group failed; retrying", "err", err, "group", c.cfg.GroupID)
				lastErr = err.Error()
			}
			continue
		}
		lastErr = ""
		stop, err := c.runGeneration(ctx, group, gen)
		if stop {
			return nil
		}
		// A partition whose reader could not start ended its generation,
		// so that the group rebalances and the partition gets a fresh
		// reader (here or on another member) instead of staying unread.
		// A failure that survives maxStartFailures generations in a row is
		// not transient: stop, loudly, rather than rebalance the group for
		// ever.
		if err == nil {
			startFailures = 0
			continue
		}
		if startFailures++; startFailures >= maxStartFailures {
			_ = group.Close()
			return fmt.Errorf("consumer: %w (%d generations in a row)", err, startFailures)
		}
	}
}

// groupConfig is the configuration of the kafka-go consumer group.
func (c *Consumer) groupConfig() kafka.ConsumerGroupConfig {
	return kafka.ConsumerGroupConfig{
		ID:                c.cfg.GroupID,
		Brokers:           c.cfg.Brokers,
		Dialer:            c.cfg.Dialer,
		Topics:            c.cfg.Topics,
		HeartbeatInterval: c.cfg.HeartbeatInterval,
		SessionTimeout:    c.cfg.SessionTimeout,
		RebalanceTimeout:  c.cfg.RebalanceTimeout,
		JoinGroupBackoff:  time.Second,
		StartOffset:       kafka.FirstOffset,
		Logger:            kafkaLogger(c.cfg.Logger, slog.LevelDebug),
		ErrorLogger:       kafkaLogger(c.cfg.Logger, slog.LevelWarn),
		Timeout:           10 * time.Second,
		// kafka-go's defaults, wrapped to assign the partitions of topics
		// kafka-go missed and to remember the partitions a join led by
		// this member assigned (the partition watch's baseline).
		// Their protocol names are kafka-go's: members of older versions
		// still agree on a protocol.
		GroupBalancers: []kafka.GroupBalancer{
			countingBalancer{kafka.RangeGroupBalancer{}, c},
			countingBalancer{kafka.RoundRobinGroupBalancer{}, c},
		},
		// kafka-go's own partition watcher (WatchPartitionChanges) is not
		// used: it ends every generation at once while a topic does not
		// exist (a rejoin loop), and it asks for metadata with automatic
		// topic creation on. watchPartitions does the job.
	}
}

// maxStartFailures is how many generations in a row may end because a
// partition's reader could not start before Run gives up.
const maxStartFailures = 3

// partitionState is one assigned partition in one generation.
type partitionState struct {
	topic     string
	partition int
	start     int64
	tr        atomic.Pointer[tracker] // nil until the first record is read
	committed int64
	// startErr is why the partition's reader could not start (nil: it
	// started). fetch sets it before it returns.
	startErr error
	// holdUntil: the partition is not read before (handoff.go; set before
	// the fetch starts). sealed: the fence has written the proof of a clean
	// hand-over, nothing more is committed (under commitMu).
	holdUntil time.Time
	sealed    bool
	// With Config.Parking (parking.go): the source partition's parking
	// state (src) or the parking partition's (pk), set before the loops
	// start; committedMeta is the parking metadata last committed (under
	// commitMu).
	src           *sourcePark
	pk            *parkedPart
	committedMeta string
	// carried: the offsets past start of the records settled in an earlier
	// epoch (a replan, replan.go); the next tracker does not handle them
	// again (tracker.done).
	carried []int64
}

// runGeneration runs one generation. It returns true when ctx ended and the
// drain finished (the group has been closed), false when the generation
// ended (a rebalance) and the caller should join the next one; then err
// says why if the generation ended because a partition's reader could not
// start.
func (c *Consumer) runGeneration(ctx context.Context, group *kafka.ConsumerGroup, gen *kafka.Generation) (stop bool, err error) {
	c.m.Rebalances.Inc()
	parts := assignedPartitions(gen)
	c.m.AssignedPartitions.Set(float64(len(parts)))
	log := c.log.With("generation", gen.ID)
	names := partitionNames(parts)
	log.Info("joined generation", "member", gen.MemberID, "partitions", len(parts), "assigned", names)
	c.genID.Store(int64(gen.ID))
	joined := time.Now() // after the assignment was received, so after the generation started
	baseline := c.assign(ctx, parts, log)
	c.proveHandOff(ctx, gen, parts, joined, log) // handoff.go

	// Nothing of this generation is sent before its membership is proven,
	// and nothing after the proof runs out (DESIGN.md invariant 4).
	term := c.lease.Begin()
	h := newHandover() // handover.go: a drain caught by a rebalance finishes first
	gen.Start(func(gctx context.Context) { c.keepLease(gctx, gen, term, h, log) })

	stopFetch := make(chan struct{})
	var fetchers sync.WaitGroup // fetch loops that may still call Add
	fenced := make(chan struct{})
	if c.cfg.Parking != nil {
		c.startParked(gen, parts, stopFetch, &fetchers, log) // replan.go
	} else {
		c.startFetches(gen, parts, stopFetch, &fetchers, log)
	}
	// New partitions or a new topic end the generation (watchPartitions).
	gen.Start(func(gctx context.Context) { c.watchPartitions(gctx, baseline, log) })
	gen.Start(func(gctx context.Context) { c.watchLag(gctx, parts, log) }) // lag.go
	gen.Start(func(gctx context.Context) {
		defer close(fenced)
		if c.fence(gctx, term, &fetchers, h, names, log) && c.cfg.MaxProcessingTime > 0 {
			c.commitClean(gen, parts, log) // handoff.go
		}
	})
	gen.Start(func(gctx context.Context) { c.commitEvery(gctx, gen, parts, log) })
	c.inGen.Store(true)

	select {
	case <-fenced:
		log.Info("generation ended; rejoining")
		return false, startError(parts)
	case <-ctx.Done():
	}

	// Soft stop: stop fetching, flush, commit, leave. A rebalance that
	// begins meanwhile waits for it (handover.go).
	close(h.stopping)
	log.Info("draining", "timeout", c.cfg.DrainTimeout)
	close(stopFetch)
	fetchers.Wait()
	c.drain(gen, parts, log)
	if isClosed(h.ended) {
		c.leave(gen, log) // before kafka-go can rejoin
	}
	close(h.drained)
	_ = group.Close() // ends the generation (the fence runs) and leaves the group
	<-fenced
	log.Info("left the consumer group")
	return true, nil
}

// startFetches starts, in gen, the fetch loop of every partition of parts,
// each once its hand-off allows (awaitHandOff). fetchers counts the loops
// that may still call Add; closing stop ends them.
func (c *Consumer) startFetches(gen *kafka.Generation, parts []*partitionState, stop <-chan struct{}, fetchers *sync.WaitGroup, log *slog.Logger) {
	for _, p := range parts {
		fetchers.Add(1)
		gen.Start(func(gctx context.Context) {
			if !awaitHandOff(gctx, stop, p) { // handoff.go
				fetchers.Done()
				<-gctx.Done()
				return
			}
			if !c.fetch(gctx, stop, p, fetchers, log) {
				return // the reader could not start: end the generation (Run)
			}
			<-gctx.Done() // returning earlier would end the generation
		})
	}
}

// assignedPartitions returns the partitions gen assigns to this member.
func assignedPartitions(gen *kafka.Generation) []*partitionState {
	var parts []*partitionState
	for topic, as := range gen.Assignments {
		for _, a := range as {
			parts = append(parts, &partitionState{topic: topic, partition: a.ID, start: a.Offset, committed: -1})
		}
	}
	return parts
}

// partitionNames lists parts as topic/partition, comma-separated, for the
// log.
func partitionNames(parts []*partitionState) string {
	names := make([]string, len(parts))
	for i, p := range parts {
		names[i] = p.topic + "/" + strconv.Itoa(p.partition)
	}
	return strings.Join(names, ",")
}

// assign reads the partition counts at the start of a generation, calls
// OnAssign with parts and the total count, and returns the baseline of the
// partition watch (generationCounts).
func (c *Consumer) assign(ctx context.Context, parts []*partitionState, log *slog.Logger) (baseline map[string]int) {
	counts, baseline := c.generationCounts(ctx, log)
	if c.cfg.OnAssign == nil {
		return baseline
	}
	total := 0 // unknown (counts nil): the Fleet takes the smallest share
	for _, n := range counts {
		total += n
	}
	assigned := make([]TopicPartition, len(parts))
	for i, p := range parts {
		assigned[i] = TopicPartition{p.topic, p.partition}
	}
	c.cfg.OnAssign(assigned, total)
	return baseline
}

// fence waits for the generation to end (gctx), then makes sure nothing of
// it is sent once the group moves on: it ends the lease term, waits for
// the fetch loops (no more Add) and revokes what the batcher holds, within
// RebalanceTimeout. kafka-go rejoins only after it returns. When the
// generation ends under a drain, it lets the drain finish first
// (awaitDrain). It reports whether Revoke returned in time: then nothing
// this replica sent can still be processed (handoff.go).
func (c *Consumer) fence(gctx context.Context, term lease.Term, fetchers *sync.WaitGroup, h *handover, names string, log *slog.Logger) (clean bool) {
	<-gctx.Done()
	close(h.ended)
	if h.handingOver() {
		c.awaitDrain(h, log)
	}
	c.lease.End(term)
	c.inGen.Store(false)
	fetchers.Wait()
	rctx, cancel := context.WithTimeout(context.Background(), c.cfg.RebalanceTimeout)
	defer cancel()
	if err := c.cfg.Batcher.Revoke(rctx); err != nil {
		log.Error("in-flight requests outlived the rebalance timeout", "err", err)
		return false
	}
	if c.cfg.Parking != nil { // protocol 6 (a): nothing of this generation is parked after it
		select {
		case <-c.parkIdle():
		case <-rctx.Done():
			log.Error("parking writes outlived the rebalance timeout")
			return false
		}
	}
	log.Info("fenced generation: nothing of it is pending or in flight", "assigned", names)
	return true
}

// startError returns why a partition's reader could not start, or nil.
// Call it after the fence: fetch writes startErr before fetchers.Done, and
// the fence waits for the fetchers.
func startError(parts []*partitionState) error {
	for _, p := range parts {
		if p.startErr != nil {
			return p.startErr
		}
	}
	return nil
}

// drain, once fetching has stopped, flushes the open batches and waits for
// the dead-letter writes within DrainTimeout, then commits what was
// accepted. What did not make it is read again by the next owner. After a
// complete drain it proves the clean hand-over (handoff.go) before anyone
// leaves the group.
func (c *Consumer) drain(gen *kafka.Generation, parts []*partitionState, log *slog.Logger) {
	dctx, cancel := context.WithTimeout(context.Background(), c.cfg.DrainTimeout)
	defer cancel()
	complete := true
	if err := c.cfg.Batcher.Flush(dctx); err != nil {
		complete = false
		log.Warn("drain timed out; unsent changes will be read again by the next owner", "err", err)
	}
	if err := c.cfg.DLQ.Wait(dctx); err != nil {
		complete = false
		log.Warn("dead-letter writes did not finish; their records will be read again", "err", err)
	}
	c.commit(gen, parts, log, nil)
	if complete {
		c.proveDrain(dctx, gen, parts, log)
	}
}
