package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
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
	DLQ       *DLQ               // required
	// OnAssign is called at every generation, before fetching, with the
	// partitions assigned to this replica and the total partition count of
	// the topics (the rate-limit share is len(assigned)/total).
	OnAssign func(assigned []TopicPartition, total int)

	CommitInterval    time.Duration // default 1s
	MaxWait           time.Duration // fetch long-poll; default 500ms (it also bounds Reader.Close)
	SessionTimeout    time.Duration // default 10s (brokers reject < 6s)
	RebalanceTimeout  time.Duration // default 30s: the longest a generation's fencing may take
	HeartbeatInterval time.Duration // default 3s
	DrainTimeout      time.Duration // shutdown budget for flushing open batches; default 30s

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
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewMetrics(nil)
	}
	if c.Transport == nil {
		c.Transport = kafka.DefaultTransport
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
	// commitMu serialises commits: the cadence loop and the final commit
	// of a drain may overlap. It guards partitionState.committed.
	commitMu sync.Mutex
}

// New validates cfg and returns a Consumer.
func New(cfg Config) (*Consumer, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Consumer{cfg: cfg, log: cfg.Logger.With("component", "consumer"), m: cfg.Metrics}, nil
}

// Joined reports whether the consumer is a member of a live generation.
func (c *Consumer) Joined() bool { return c.inGen.Load() }

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
		if stop := c.runGeneration(ctx, group, gen); stop {
			return nil
		}
	}
}

// partitionState is one assigned partition in one generation.
type partitionState struct {
	topic     string
	partition int
	start     int64
	tr        atomic.Pointer[tracker] // nil until the first record is read
	committed int64
}

// runGeneration runs one generation. It returns true when ctx ended and the
// drain finished (the group has been closed), false when the generation
// ended (a rebalance) and the caller should join the next one.
func (c *Consumer) runGeneration(ctx context.Context, group *kafka.ConsumerGroup, gen *kafka.Generation) bool {
	c.m.Rebalances.Inc()
	var parts []*partitionState
	for topic, as := range gen.Assignments {
		for _, a := range as {
			parts = append(parts, &partitionState{topic: topic, partition: a.ID, start: a.Offset, committed: -1})
		}
	}
	c.m.AssignedPartitions.Set(float64(len(parts)))
	log := c.log.With("generation", gen.ID)
	names := make([]string, len(parts))
	for i, p := range parts {
		names[i] = p.topic + "/" + strconv.Itoa(p.partition)
	}
	log.Info("joined generation", "member", gen.MemberID, "partitions", len(parts), "assigned", strings.Join(names, ","))
	if c.cfg.OnAssign != nil {
		total, err := c.totalPartitions(ctx)
		if err != nil {
			log.Warn("reading the partition count failed; assuming this replica owns them all", "err", err)
			total = len(parts)
		}
		assigned := make([]TopicPartition, len(parts))
		for i, p := range parts {
			assigned[i] = TopicPartition{p.topic, p.partition}
		}
		c.cfg.OnAssign(assigned, total)
	}

	stopFetch := make(chan struct{})
	var fetchers sync.WaitGroup // fetch loops that may still call Add
	fenced := make(chan struct{})
	for _, p := range parts {
		fetchers.Add(1)
		gen.Start(func(gctx context.Context) {
			c.fetch(gctx, stopFetch, p, &fetchers, log)
			<-gctx.Done() // returning earlier would end the generation
		})
	}
	// The fence: when the generation ends, nothing of it may be sent once
	// the group moves on. kafka-go rejoins only after this returns.
	gen.Start(func(gctx context.Context) {
		defer close(fenced)
		<-gctx.Done()
		c.inGen.Store(false)
		fetchers.Wait()
		rctx, cancel := context.WithTimeout(context.Background(), c.cfg.RebalanceTimeout)
		defer cancel()
		if err := c.cfg.Batcher.Revoke(rctx); err != nil {
			log.Error("in-flight requests outlived the rebalance timeout", "err", err)
		}
		log.Info("fenced generation: nothing of it is pending or in flight", "assigned", strings.Join(names, ","))
	})
	gen.Start(func(gctx context.Context) {
		t := time.NewTicker(c.cfg.CommitInterval)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return
			case <-t.C:
				c.commit(gen, parts, log)
			}
		}
	})
	c.inGen.Store(true)

	select {
	case <-fenced:
		log.Info("generation ended; rejoining")
		return false
	case <-ctx.Done():
	}

	// Soft stop: stop fetching, flush, commit, leave.
	log.Info("draining", "timeout", c.cfg.DrainTimeout)
	close(stopFetch)
	fetchers.Wait()
	dctx, cancel := context.WithTimeout(context.Background(), c.cfg.DrainTimeout)
	defer cancel()
	if err := c.cfg.Batcher.Flush(dctx); err != nil {
		log.Warn("drain timed out; unsent changes will be read again by the next owner", "err", err)
	}
	if err := c.cfg.DLQ.Wait(dctx); err != nil {
		log.Warn("dead-letter writes did not finish; their records will be read again", "err", err)
	}
	c.commit(gen, parts, log)
	_ = group.Close() // ends the generation (the fence runs) and leaves the group
	<-fenced
	log.Info("left the consumer group")
	return true
}

// commit commits every partition whose watermark moved.
func (c *Consumer) commit(gen *kafka.Generation, parts []*partitionState, log *slog.Logger) {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	offsets := map[string]map[int]int64{}
	var moved []*partitionState
	for _, p := range parts {
		tr := p.tr.Load()
		if tr == nil {
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
	if err := gen.CommitOffsets(offsets); err != nil {
		c.m.Commits.WithLabelValues("error").Inc()
		log.Warn("offset commit failed", "err", err)
		return
	}
	c.m.Commits.WithLabelValues("ok").Inc()
	for _, p := range moved {
		p.committed = offsets[p.topic][p.partition]
		pl := strconv.Itoa(p.partition)
		c.m.CommittedOffset.WithLabelValues(p.topic, pl).Set(float64(p.committed))
		if hwm := p.tr.Load().hwm.Load(); hwm > 0 {
			c.m.Lag.WithLabelValues(p.topic, pl).Set(float64(max(hwm-p.committed, 0)))
		}
	}
}

func (c *Consumer) totalPartitions(ctx context.Context) (int, error) {
	client := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Transport: c.cfg.Transport, Timeout: 10 * time.Second}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: c.cfg.Topics})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range md.Topics {
		if t.Error != nil {
			return 0, t.Error
		}
		n += len(t.Partitions)
	}
	return n, nil
}

// fetch reads one partition from its assigned offset and hands its records
// on, until the generation ends or stop is closed.
func (c *Consumer) fetch(gctx context.Context, stop <-chan struct{}, p *partitionState, fetchers *sync.WaitGroup, log *slog.Logger) {
	defer fetchers.Done()
	ctx, cancel := context.WithCancel(gctx)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	log = log.With("topic", p.topic, "partition", p.partition)
	rcfg := kafka.ReaderConfig{
		Brokers:     c.cfg.Brokers,
		Topic:       p.topic,
		Partition:   p.partition,
		Dialer:      c.cfg.Dialer,
		MinBytes:    1,
		MaxBytes:    10 << 20,
		MaxWait:     c.cfg.MaxWait,
		Logger:      kafkaLogger(c.cfg.Logger, slog.LevelDebug),
		ErrorLogger: kafkaLogger(c.cfg.Logger, slog.LevelWarn),
	}
	if err := rcfg.Validate(); err != nil { // NewReader panics on an invalid config
		log.Error("invalid reader configuration", "err", err)
		return
	}
	r := kafka.NewReader(rcfg)
	defer r.Close()
	if err := r.SetOffset(p.start); err != nil {
		log.Error("setting the start offset failed", "err", err, "offset", p.start)
		return
	}
	// This goroutine only fetches; a second one per partition decodes and
	// tracks the records and hands their changes to the batcher, as many
	// as are waiting per call, so that partitions do not queue on the
	// batcher's lock and no record needs an allocation of its own.
	msgs := make(chan kafka.Message, fetchQueue)
	processed := make(chan struct{})
	go func() {
		defer close(processed)
		c.process(ctx, p, msgs)
	}()
	defer func() {
		close(msgs)
		<-processed // no Add after fetchers.Done
	}()
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("fetch failed; retrying", "err", err)
			select { // kafka-go retries inside FetchMessage: an error here is not transient enough to spin on
			case <-time.After(time.Second):
			case <-ctx.Done():
				return
			}
			continue
		}
		msgs <- m // process drains msgs until it is closed: this cannot block for good
	}
}

const (
	// fetchQueue is how many fetched records may wait for decoding.
	fetchQueue = 1024
	// maxAdd bounds the changes handed to the batcher in one call.
	maxAdd = 2048
)

// process decodes and tracks the records of one partition in read order
// and adds their changes to the batcher, joining the records already
// waiting into one call. It returns when msgs is closed, or when an Add
// fails because the generation is over (what is left is read again later).
func (c *Consumer) process(ctx context.Context, p *partitionState, msgs <-chan kafka.Message) {
	dec := event.NewDecoder(c.cfg.DefaultPartner)
	buf := make([]batcher.Change, 0, maxAdd)
	var tr *tracker
	var err error
	for m := range msgs {
		buf = buf[:0]
		for {
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
			tr.hwm.Store(m.HighWaterMark)
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
// its changes to buf otherwise. It fails only when ctx ended while a
// dead-letter write was being queued.
func (c *Consumer) handle(ctx context.Context, tr *tracker, dec *event.Decoder, m kafka.Message, buf []batcher.Change) ([]batcher.Change, error) {
	seq, ok := tr.track(m.Offset)
	if !ok {
		return buf, nil // delivered twice after a reader restart: already tracked
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
		return buf, c.cfg.DLQ.invalid(ctx, m, inv, newRecordAck(tr, seq, m.Key, nil, 1))
	}
	ack := newRecordAck(tr, seq, m.Key, &ev, len(ev.UIDs))
	h := wire.Header{Action: ev.Action, Partner: ev.Partner, CohortID: ev.CohortID,
		CohortName: ev.CohortName, CohortDescription: ev.CohortDescription}
	for _, u := range ev.UIDs {
		buf = append(buf, batcher.Change{Header: h, UID: u, Ack: ack})
	}
	return buf, nil
}
