package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/lease"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Batcher is what the consumer needs of the batcher.
type Batcher interface {
	Add(ctx context.Context, changes []batcher.Change) error
	Revoke(ctx context.Context) error
	Flush(ctx context.Context) error
}

var _ Batcher = (*batcher.Batcher)(nil)

// Config configures a Consumer. Zero durations take the documented defaults.
type Config struct {
	Brokers        []string
	Topics         []string
	GroupID        string
	DefaultPartner string // partner of events that name none

	Dialer    *kafka.Dialer      // TLS/SASL for the group and readers; nil = plain TCP
	Transport kafka.RoundTripper // TLS/SASL for metadata requests; nil = kafka.DefaultTransport
	Batcher   Batcher            // required
	DLQ       *deadletter.DLQ    // required
	// Fits reports whether a request with header h and the single member
	// uid fits within the request body cap. A member that does not can
	// never be sent: its record is dead-lettered as it is, with the reason
	// too_large, and the record's other members go on. nil = the Batcher's
	// own Fits method when it has one (*batcher.Batcher does, with its
	// MaxBytes), else a 128000-byte cap.
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

	CommitInterval    time.Duration // default 1s
	MaxWait           time.Duration // fetch long-poll; default 500ms (it also bounds Reader.Close)
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
		c.Fits = defaultFits(c.Batcher)
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
	case c.FetchBufferBytes < 0:
		return fmt.Errorf("consumer: FetchBufferBytes %d is negative", c.FetchBufferBytes)
	}
	return nil
}

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int
}

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
	gcfg := kafka.ConsumerGroupConfig{
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
	for _, p := range parts {
		fetchers.Add(1)
		gen.Start(func(gctx context.Context) {
			if !awaitHandOff(gctx, stopFetch, p) { // handoff.go
				fetchers.Done()
				<-gctx.Done()
				return
			}
			if !c.fetch(gctx, stopFetch, p, &fetchers, log) {
				return // the reader could not start: end the generation (Run)
			}
			<-gctx.Done() // returning earlier would end the generation
		})
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
	log.Info("fenced generation: nothing of it is pending or in flight", "assigned", names)
	return true
}

// commitEvery commits parts every CommitInterval until gctx ends.
func (c *Consumer) commitEvery(gctx context.Context, gen *kafka.Generation, parts []*partitionState, log *slog.Logger) {
	t := time.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	hb := c.m.Loops.Start("commit") // /healthz: busy from a tick to the next wait
	defer hb.Stop()
	for {
		hb.Idle()
		select {
		case <-gctx.Done():
			return
		case <-t.C:
			hb.Busy()
			c.commit(gen, parts, log, hb)
		}
	}
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

// commit commits every partition whose watermark moved.
func (c *Consumer) commit(gen *kafka.Generation, parts []*partitionState, log *slog.Logger, hb *metrics.Loop) {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	offsets := map[string]map[int]int64{}
	var moved []*partitionState
	for _, p := range parts {
		tr := p.tr.Load()
		if tr == nil || p.sealed {
			continue
		}
		w := tr.watermark()
		if w <= p.committed {
			continue
		}
		if offsets[p.topic] == nil {
			offsets[p.topic] = map[int]int64{}
		}
		offsets[p.topic][p.partition] = w
		moved = append(moved, p)
	}
	if len(moved) == 0 {
		return
	}
	hb.Idle() // a network call: a broker outage is not a wedge
	err := gen.CommitOffsets(offsets)
	hb.Busy()
	if err != nil {
		c.m.Commits.WithLabelValues("error").Inc()
		log.Warn("offset commit failed", "err", err)
		return
	}
	c.m.Commits.WithLabelValues("ok").Inc()
	for _, p := range moved {
		p.committed = offsets[p.topic][p.partition]
		pl := strconv.Itoa(p.partition)
		c.m.CommittedOffset.WithLabelValues(p.topic, pl).Set(float64(p.committed))
	}
}

// metadata reads the metadata of topics from the brokers, through a
// transport of its own, fresh each time: kafka-go's Transport answers
// metadata requests from a cache that may be seconds old, and a stale
// partition count is what the callers must not get. It never asks the
// brokers to create a topic.
func (c *Consumer) metadata(ctx context.Context, topics []string) (*kafka.MetadataResponse, error) {
	tr := c.cfg.Transport
	if t, ok := tr.(*kafka.Transport); ok {
		fresh := &kafka.Transport{Dial: t.Dial, DialTimeout: t.DialTimeout, IdleTimeout: t.IdleTimeout,
			MetadataTTL: t.MetadataTTL, MetadataTopics: topics, ClientID: t.ClientID,
			TLS: t.TLS, SASL: t.SASL, Resolver: t.Resolver, Context: t.Context}
		defer fresh.CloseIdleConnections()
		tr = fresh
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Transport: tr}
	return client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
}

// partitionCounts reads the partition count of every topic of Topics; a
// topic that does not exist counts 0.
func (c *Consumer) partitionCounts(ctx context.Context) (map[string]int, error) {
	md, err := c.metadata(ctx, c.cfg.Topics)
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int, len(c.cfg.Topics))
	for _, t := range c.cfg.Topics {
		counts[t] = 0
	}
	for _, t := range md.Topics {
		if _, ok := counts[t.Name]; !ok {
			continue
		}
		if t.Error != nil && !errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
			return nil, fmt.Errorf("metadata of topic %s: %w", t.Name, t.Error)
		}
		counts[t.Name] = len(t.Partitions)
	}
	return counts, nil
}

// generationCounts returns the partition counts of the topics at the start
// of a generation (nil when they could not be read) and the baseline its
// partition watch compares against: the counts this member assigned from
// when it led the join, else the counts just read. The leader's counts are
// what the whole group's assignment was made from, so a partition added
// between that assignment and this read still ends the generation. (A
// member that led a join whose sync then failed keeps that join's counts:
// if they differ from the next generation's, the watch ends that one
// generation early, which costs a rebalance and loses nothing.)
func (c *Consumer) generationCounts(ctx context.Context, log *slog.Logger) (counts, baseline map[string]int) {
	counts, err := c.partitionCounts(ctx)
	if err != nil {
		log.Warn("reading the partition counts failed; the partition total is unknown this generation", "err", err)
	}
	baseline = counts
	if lc := c.leaderCounts.Swap(nil); lc != nil {
		baseline = *lc
		if counts == nil {
			counts = baseline
		}
	}
	return counts, baseline
}

// sawPartitions records the partitions a join led by this member assigned.
func (c *Consumer) sawPartitions(parts []kafka.Partition) {
	counts := make(map[string]int, len(c.cfg.Topics))
	for _, t := range c.cfg.Topics {
		counts[t] = 0
	}
	for _, p := range parts {
		if _, ok := counts[p.Topic]; ok {
			counts[p.Topic]++
		}
	}
	c.leaderCounts.Store(&counts)
}

// completePartitions returns parts plus the partitions of the members'
// topics that parts lacks. kafka-go's leader reads the partitions of all
// the group's topics in one request and, when one of them does not exist,
// gets an error and no partition at all: it then assigns nothing, not even
// the topics that exist, and a watch that ends the generation when they
// appear would end every generation. Reading the missing topics again, one
// by one, fills in those that exist.
func (c *Consumer) completePartitions(members []kafka.GroupMember, parts []kafka.Partition) []kafka.Partition {
	have := map[string]bool{}
	for _, p := range parts {
		have[p.Topic] = true
	}
	var missing []string
	for _, m := range members {
		for _, t := range m.Topics {
			if !have[t] {
				have[t] = true
				missing = append(missing, t)
			}
		}
	}
	if len(missing) == 0 {
		return parts
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	md, err := c.metadata(ctx, missing)
	if err != nil {
		c.log.Warn("reading the partitions of the group's topics failed; assigning those kafka-go found", "err", err, "topics", strings.Join(missing, ","))
		return parts
	}
	for _, t := range md.Topics {
		if t.Error == nil && slices.Contains(missing, t.Name) {
			parts = append(parts, t.Partitions...)
		}
	}
	return parts
}

// countingBalancer is a GroupBalancer that completes the partitions it is
// asked to assign (completePartitions) and records them (sawPartitions)
// before it assigns them. kafka-go calls AssignGroups on the leader only, in
// its join, before Next returns the generation.
type countingBalancer struct {
	kafka.GroupBalancer
	c *Consumer
}

func (b countingBalancer) AssignGroups(members []kafka.GroupMember, parts []kafka.Partition) kafka.GroupMemberAssignments {
	parts = b.c.completePartitions(members, parts)
	b.c.sawPartitions(parts)
	return b.GroupBalancer.AssignGroups(members, parts)
}

// watchPartitions reads the partition counts of the topics every
// PartitionWatchInterval and returns, ending the generation, when one
// differs from baseline: partitions were added, or a topic that did not
// exist at the join was created (or one was deleted). The group then
// rebalances, and the next generation assigns every partition that exists.
// A nil baseline (unknown) ends the generation at the first successful
// read. Read errors are logged and the watch goes on. It returns when gctx
// ends; with a negative interval it only waits for that.
func (c *Consumer) watchPartitions(gctx context.Context, baseline map[string]int, log *slog.Logger) {
	if c.cfg.PartitionWatchInterval < 0 {
		<-gctx.Done()
		return
	}
	t := time.NewTicker(c.cfg.PartitionWatchInterval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-gctx.Done():
			return
		case <-t.C:
		}
		counts, err := c.partitionCounts(gctx)
		if err != nil {
			if gctx.Err() == nil && err.Error() != lastErr {
				log.Warn("reading the partition counts failed; retrying", "err", err)
				lastErr = err.Error()
			}
			continue
		}
		lastErr = ""
		if !maps.Equal(counts, baseline) {
			log.Info("the topics' partitions changed; ending the generation so that the group assigns them",
				"partitions", fmtCounts(counts), "assigned_from", fmtCounts(baseline))
			return
		}
	}
}

func fmtCounts(m map[string]int) string {
	if m == nil {
		return "unknown"
	}
	parts := make([]string, 0, len(m))
	for t, n := range m {
		parts = append(parts, t+":"+strconv.Itoa(n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// readerConfig is the configuration of the reader of one partition.
func (c *Config) readerConfig(topic string, partition int) kafka.ReaderConfig {
	return kafka.ReaderConfig{
		Brokers:       c.Brokers,
		Topic:         topic,
		Partition:     partition,
		Dialer:        c.Dialer,
		MinBytes:      1,
		MaxBytes:      readerMaxBytes,
		MaxWait:       c.MaxWait,
		QueueCapacity: readerQueue,
		Logger:        kafkaLogger(c.Logger, slog.LevelDebug),
		ErrorLogger:   kafkaLogger(c.Logger, slog.LevelWarn),
	}
}

// partitionReader is what fetch uses of a *kafka.Reader.
type partitionReader interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	Close() error
}

// openCommittedReader starts the read_committed reader of rcfg's
// partition at offset (fetcher.go). rcfg is what a kafka-go Reader of the
// partition would be configured with; its topic and partition are used.
func (c *Consumer) openCommittedReader(rcfg kafka.ReaderConfig, offset int64) (partitionReader, error) {
	if err := rcfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid reader configuration: %w", err)
	}
	return c.cfg.newCommittedReader(rcfg.Topic, rcfg.Partition, offset), nil
}

// fetch reads one partition from its assigned offset and hands its records
// on, until the generation ends or stop is closed; then it returns true.
// When the partition's reader cannot start it sets p.startErr and returns
// false at once: the caller ends the generation, so that the group
// rebalances and the partition gets a new reader, rather than leaving it
// unread for the whole generation (Run gives up after maxStartFailures).
func (c *Consumer) fetch(gctx context.Context, stop <-chan struct{}, p *partitionState, fetchers *sync.WaitGroup, log *slog.Logger) bool {
	defer fetchers.Done()
	log = log.With("topic", p.topic, "partition", p.partition)
	r, err := c.openReader(c.cfg.readerConfig(p.topic, p.partition), p.start)
	if err != nil {
		p.startErr = fmt.Errorf("the reader of partition %s/%d could not start: %w", p.topic, p.partition, err)
		log.Error("the partition's reader could not start; ending the generation so that the group rebalances and the partition is read again",
			"err", err, "offset", p.start)
		return false
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(gctx)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	// This goroutine only fetches; a second one per partition decodes and
	// tracks the records and hands their changes to the batcher, as many
	// as are waiting per call, so that partitions do not queue on the
	// batcher's lock and no record needs an allocation of its own. Between
	// the two wait at most fetchQueue records and FetchBufferBytes bytes.
	msgs := make(chan kafka.Message, fetchQueue)
	q := &byteQueue{limit: int64(c.cfg.FetchBufferBytes), freed: make(chan struct{}, 1)}
	processed := make(chan struct{})
	go func() {
		defer close(processed)
		c.process(ctx, p, msgs, q)
	}()
	defer func() {
		close(msgs)
		<-processed // no Add after fetchers.Done
	}()
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return true
			}
			log.Warn("fetch failed; retrying", "err", err)
			select { // kafka-go retries inside FetchMessage: an error here is not transient enough to spin on
			case <-time.After(time.Second):
			case <-ctx.Done():
				return true
			}
			continue
		}
		if !q.acquire(ctx, recordBytes(m)) {
			return true
		}
		msgs <- m // process drains msgs until it is closed: this cannot block for good
	}
}

// recordBytes is what a fetched record holds in memory, near enough.
func recordBytes(m kafka.Message) int64 {
	n := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

// byteQueue counts the bytes of the records between one partition's fetch
// loop, the only caller of acquire, and its process loop, the only caller
// of release. Both are lock-free on the way through; acquire waits only at
// the bound, for a release.
type byteQueue struct {
	limit int64
	n     atomic.Int64
	freed chan struct{} // capacity 1: a release's wake-up for a waiting acquire
}

// acquire takes n bytes, waiting while that would pass the limit and some
// bytes are taken (a record larger than the limit passes alone). It
// returns false when ctx ended first.
func (q *byteQueue) acquire(ctx context.Context, n int64) bool {
	for {
		// Only release runs concurrently, and it only lowers q.n: a
		// check that passes stays true until the Add.
		if cur := q.n.Load(); cur == 0 || cur+n <= q.limit {
			q.n.Add(n)
			return true
		}
		select {
		case <-q.freed:
		case <-ctx.Done():
			return false
		}
	}
}

// release gives back n bytes and wakes a waiting acquire.
func (q *byteQueue) release(n int64) {
	if n == 0 {
		return
	}
	q.n.Add(-n)
	select {
	case q.freed <- struct{}{}:
	default: // a wake-up is pending already
	}
}

const (
	// readerQueue is the QueueCapacity of readerConfig, which is validated
	// as a kafka-go Reader's would be; the partition's reader
	// (committedReader) reads ahead one fetch response instead.
	readerQueue = 16
	// readerMaxBytes is the most one fetch of a partition asks for (the
	// Java consumer's max.partition.fetch.bytes default); a larger record
	// batch still comes whole. The partition's reader decodes a whole
	// response at a time, so this bounds what it holds beyond
	// FetchBufferBytes, and the time a response takes to arrive.
	readerMaxBytes = 1 << 20
	// fetchQueue is how many fetched records may wait for decoding (and
	// FetchBufferBytes bounds their bytes).
	fetchQueue = 1024
	// maxAdd bounds the changes handed to the batcher in one call.
	maxAdd = 2048
)

// process decodes and tracks the records of one partition in read order
// and adds their changes to the batcher, joining the records already
// waiting into one call. It returns when msgs is closed, or when an Add
// fails because the generation is over (what is left is read again later).
func (c *Consumer) process(ctx context.Context, p *partitionState, msgs <-chan kafka.Message, q *byteQueue) {
	dec := event.NewDecoder(c.cfg.DefaultPartner)
	buf := make([]batcher.Change, 0, maxAdd)
	var tr *tracker
	var err error
	// /healthz: busy while decoding; waiting for records, for room in the
	// batcher and for the dead-letter queue is not a wedge.
	hb := c.m.Loops.Start(fmt.Sprintf("decode %s/%d", p.topic, p.partition))
	defer hb.Stop()
	ctx = metrics.WithLoop(ctx, hb)
	for m := range msgs {
		hb.Busy()
		buf = buf[:0]
		var taken int64 // bytes of the records handled in this round
		for {
			taken += recordBytes(m)
			if tr == nil {
				// The tracker starts at the first offset actually read: with
				// no commit yet, the assignment says "first offset", not a
				// number.
				start := p.start
				if start < 0 {
					start = m.Offset
				}
				tr = newTracker(p.topic, p.partition, start)
				p.tr.Store(tr)
			}
			if buf, err = c.handle(ctx, tr, dec, m, buf); err != nil {
				break
			}
			if len(buf) >= maxAdd {
				break
			}
			var ok bool
			select {
			case m, ok = <-msgs:
			default:
			}
			if !ok {
				break
			}
		}
		// The records are decoded: their bytes are garbage now (the
		// changes hold copies), whether or not Add has to wait.
		q.release(taken)
		hb.Idle()
		if err == nil && len(buf) > 0 {
			err = c.cfg.Batcher.Add(ctx, buf)
		}
		if err != nil {
			for range msgs {
			}
			return
		}
	}
}

// handle tracks one record, dead-letters it if it is invalid, and appends
// its changes to buf otherwise. A record with members too large for any
// request is dead-lettered as too_large, and its other members appended
// (deadLetterTooLarge). It fails only when ctx ended while a dead-letter
// write was being queued.
func (c *Consumer) handle(ctx context.Context, tr *tracker, dec *event.Decoder, m kafka.Message, buf []batcher.Change) ([]batcher.Change, error) {
	seq, ok := tr.track(m.Offset)
	if !ok {
		return buf, nil // delivered twice after a reader restart: already tracked
	}
	if isHidden(&m) { // control or aborted records (txn.go): settled, never delivered
		tr.release(seq)
		return buf, nil
	}
	c.m.EventsConsumed.Inc()
	ev, err := dec.Decode(m.Value)
	if errors.Is(err, event.ErrTombstone) {
		c.m.EventsSkipped.Inc()
		tr.release(seq)
		return buf, nil
	}
	var inv *event.InvalidError
	if errors.As(err, &inv) {
		c.m.EventsInvalid.WithLabelValues(string(inv.Reason)).Inc()
		c.log.Debug("invalid event; dead-lettering", "reason", inv.Reason, "err", inv.Detail,
			"topic", m.Topic, "partition", m.Partition, "offset", m.Offset)
		return buf, c.cfg.DLQ.Invalid(ctx, m, inv, newRecordAck(tr, seq, m.Key, nil, 1))
	}
	h := wire.Header{Action: ev.Action, Partner: ev.Partner, CohortID: ev.CohortID,
		CohortName: ev.CohortName, CohortDescription: ev.CohortDescription}
	if fit, big := splitFit(c.cfg.Fits, h, ev.UIDs); big != nil {
		return c.deadLetterTooLarge(ctx, tr, seq, m, &ev, h, fit, big, buf)
	}
	ack := newRecordAck(tr, seq, m.Key, &ev, len(ev.UIDs))
	for _, u := range ev.UIDs {
		buf = append(buf, batcher.Change{Header: h, UID: u, Ack: ack})
	}
	return buf, nil
}
