package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

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

// partitionReader is what fetch uses of a partition's reader (a
// *committedReader; tests wrap it: WrapReaders).
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
	// as are waiting per call, so that partitions do not queue one record
	// at a time for the batcher's Run goroutine (Add asks it over a
	// channel) and no record needs an allocation of its own. Between the
	// two wait at most fetchQueue records and FetchBufferBytes bytes (the
	// fetchBudget).
	msgs := make(chan kafka.Message, fetchQueue)
	budget := &fetchBudget{limit: int64(c.cfg.FetchBufferBytes), freed: make(chan struct{}, 1)}
	processed := make(chan struct{})
	go func() {
		defer close(processed)
		c.process(ctx, p, msgs, budget)
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
		if !budget.acquire(ctx, recordBytes(m)) {
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

// fetchBudget is the byte budget between one partition's fetch loop and its
// process loop: the bytes of the records fetched and not yet decoded,
// bounded by FetchBufferBytes. The fetch loop is the only caller of
// acquire, the process loop the only caller of release. Both are lock-free
// on the way through; acquire waits only at the bound, for a release.
type fetchBudget struct {
	limit int64
	n     atomic.Int64  // bytes taken and not given back
	freed chan struct{} // capacity 1: a release's wake-up for a waiting acquire
}

// acquire takes n bytes of the budget, waiting while that would pass the
// limit and some bytes are taken (a record larger than the limit passes
// alone). It returns false when ctx ended first.
func (b *fetchBudget) acquire(ctx context.Context, n int64) bool {
	for {
		// Only release runs concurrently, and it only lowers b.n: a
		// check that passes stays true until the Add.
		if cur := b.n.Load(); cur == 0 || cur+n <= b.limit {
			b.n.Add(n)
			return true
		}
		select {
		case <-b.freed:
		case <-ctx.Done():
			return false
		}
	}
}

// release gives n bytes back to the budget and wakes a waiting acquire.
func (b *fetchBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.n.Add(-n)
	select {
	case b.freed <- struct{}{}:
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
)
