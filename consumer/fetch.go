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
)
