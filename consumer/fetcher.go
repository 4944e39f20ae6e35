package consumer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/fetch"
)

// committedReader reads one partition read_committed, through kafka-go's
// protocol-level Fetch, and hides what a transactional producer did not
// commit (txn.go). It replaces kafka-go's Reader, which fetches
// read_committed but delivers control records as ordinary messages and
// never drops aborted records (segmentio/kafka-go#1332); its Batch exposes
// neither the producer id of a batch nor the aborted transactions.
//
// It keeps the Reader's behaviour where the worker relied on it:
//   - one connection of its own per partition (a Transport of its own):
//     a long-poll must not queue behind another partition's, nor delay
//     the lease's heartbeats, which share the Consumer's Transport;
//   - a start at kafka.FirstOffset (no commit yet) reads the log start;
//     an offset below the log start (retention) moves up to it; one past
//     the end waits for records;
//   - any other error is returned to the fetch loop, which logs it and
//     retries after a second, here on a fresh connection and fresh
//     metadata (as the Reader reconnects after an error);
//   - requests ask for at most readerMaxBytes, and a larger first batch
//     still comes whole (the broker's rule), as before.
//
// A goroutine of its own (run) fetches and decodes the next response while
// the records of the last one are handed out: the broker's and the
// decoding's time overlap with the records' processing, as in the Reader,
// which streamed records as they arrived. So at most two responses
// (readerMaxBytes each, or one larger batch), decoded and copied, wait
// beyond FetchBufferBytes, where the Reader held readerQueue records.
type committedReader struct {
	topic     string
	partition int
	maxWait   time.Duration
	addr      net.Addr
	// newTransport returns the transport of the next requests (a fresh
	// one after an error); shared reports that it is the Consumer's own,
	// which Close must leave open.
	newTransport func() kafka.RoundTripper
	shared       bool
	rt           kafka.RoundTripper

	offset int64 // the next offset to fetch; < 0 until resolved (run's)

	start sync.Once
	ready chan fetched // run → FetchMessage, unbuffered
	stop  context.CancelFunc
	done  chan struct{} // closed when run returned

	buf []kafka.Message // FetchMessage's
	i   int
}

// fetched is one response's records, or why there are none.
type fetched struct {
	msgs []kafka.Message
	err  error
}

// newCommittedReader returns the reader of topic/partition from offset (a
// committed offset, or kafka.FirstOffset / kafka.LastOffset).
func (c *Config) newCommittedReader(topic string, partition int, offset int64) *committedReader {
	r := &committedReader{topic: topic, partition: partition, maxWait: c.MaxWait,
		addr: kafka.TCP(c.Brokers...), offset: offset, ready: make(chan fetched), done: make(chan struct{})}
	if t, ok := c.Transport.(*kafka.Transport); ok {
		r.newTransport = func() kafka.RoundTripper { return partitionTransport(t, topic) }
	} else {
		r.newTransport = func() kafka.RoundTripper { return c.Transport }
		r.shared = true
	}
	r.rt = r.newTransport()
	return r
}

// partitionTransport is a Transport like t whose metadata covers topic
// only, with connections of its own.
func partitionTransport(t *kafka.Transport, topic string) *kafka.Transport {
	return &kafka.Transport{Dial: t.Dial, DialTimeout: t.DialTimeout, IdleTimeout: t.IdleTimeout,
		MetadataTTL: t.MetadataTTL, MetadataTopics: []string{topic}, ClientID: t.ClientID,
		TLS: t.TLS, SASL: t.SASL, Resolver: t.Resolver, Context: t.Context}
}

// FetchMessage returns the next record, or a hiddenRecords message for
// records that are not delivered. It blocks until there is one or ctx ends.
func (r *committedReader) FetchMessage(ctx context.Context) (kafka.Message, error) {
	r.start.Do(func() {
		rctx, cancel := context.WithCancel(context.Background())
		r.stop = cancel
		go r.run(rctx)
	})
	for r.i >= len(r.buf) {
		select {
		case f := <-r.ready:
			if f.err != nil {
				return kafka.Message{}, f.err
			}
			r.buf, r.i = f.msgs, 0
		case <-ctx.Done():
			return kafka.Message{}, ctx.Err()
		}
	}
	m := r.buf[r.i]
	r.buf[r.i] = kafka.Message{} // the fetch loop owns it now
	r.i++
	return m, nil
}

// run fetches responses and hands their records to FetchMessage until ctx
// (Close) ends. After an error it hands the error on (the fetch loop logs
// it and waits a second before it asks again) and goes on on a fresh
// connection.
func (r *committedReader) run(ctx context.Context) {
	defer close(r.done)
	out := &chunks{emit: func(msgs []kafka.Message) bool {
		select {
		case r.ready <- fetched{msgs: msgs}:
			return true
		case <-ctx.Done():
			return false
		}
	}}
	for {
		msgs, err := r.fill(ctx, out)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.reconnect()
		} else if len(msgs) == 0 {
			continue // the long-poll ended empty
		}
		select {
		case r.ready <- fetched{msgs, err}:
		case <-ctx.Done():
			return
		}
	}
}

// Close stops the reader and closes its connections.
func (r *committedReader) Close() error {
	r.start.Do(func() {}) // no run from now on
	if r.stop != nil {
		r.stop()
		<-r.done
	}
	r.closeTransport()
	return nil
}

func (r *committedReader) reconnect() {
	r.closeTransport()
	r.rt = r.newTransport()
}

func (r *committedReader) closeTransport() {
	if t, ok := r.rt.(*kafka.Transport); ok && !r.shared {
		t.CloseIdleConnections()
	}
}

// fill fetches and decodes the next records (possibly none: the
// long-poll ended empty). It hands them to out's emit as they are decoded, so
// that the first are processed while the rest are decoded, and returns
// those left. (After an error, records emitted already come again: process
// skips offsets it tracked.)
func (r *committedReader) fill(ctx context.Context, out *chunks) ([]kafka.Message, error) {
	if r.offset < 0 {
		if err := r.resolve(ctx, r.offset); err != nil {
			return nil, err
		}
	}
	p, err := r.fetch(ctx)
	if errors.Is(err, kafka.OffsetOutOfRange) {
		return nil, r.outOfRange(ctx)
	}
	if err != nil {
		return nil, err
	}
	d, err := decodePartition(r.topic, r.partition, r.offset, p, out)
	if err != nil {
		return nil, fmt.Errorf("decoding the records at offset %d: %w", r.offset, err)
	}
	r.offset = d.next
	return d.msgs, nil
}

// fetch sends one read_committed Fetch for the partition at r.offset.
func (r *committedReader) fetch(ctx context.Context) (*fetch.ResponsePartition, error) {
	// The broker answers within MaxWait; a reply that does not come is a
	// connection to replace.
	ctx, cancel := context.WithTimeout(ctx, r.maxWait+fetchTimeout)
	defer cancel()
	res, err := r.rt.RoundTrip(ctx, r.addr, &fetch.Request{
		ReplicaID:      -1,
		MaxWaitTime:    int32(r.maxWait / time.Millisecond),
		MinBytes:       1,
		MaxBytes:       readerMaxBytes,
		IsolationLevel: isolationReadCommitted,
		SessionEpoch:   -1, // no fetch session: every request is a full one
		Topics: []fetch.RequestTopic{{Topic: r.topic, Partitions: []fetch.RequestPartition{{
			Partition: int32(r.partition), CurrentLeaderEpoch: -1, FetchOffset: r.offset,
			LogStartOffset: -1, PartitionMaxBytes: readerMaxBytes,
		}}}},
	})
	if err != nil {
		return nil, err
	}
	resp := res.(*fetch.Response)
	if resp.ErrorCode != 0 {
		return nil, kafka.Error(resp.ErrorCode)
	}
	for i := range resp.Topics {
		t := &resp.Topics[i]
		for j := range t.Partitions {
			if p := &t.Partitions[j]; t.Topic == r.topic && int(p.Partition) == r.partition {
				if p.ErrorCode != 0 {
					return nil, kafka.Error(p.ErrorCode)
				}
				return p, nil
			}
		}
	}
	return nil, fmt.Errorf("the fetch response has no partition %s/%d", r.topic, r.partition)
}

const (
	// isolationReadCommitted is Fetch's isolation_level for read_committed.
	isolationReadCommitted = 1
	// fetchTimeout is how much longer than MaxWait a Fetch may take.
	fetchTimeout = 10 * time.Second
)

// resolve sets r.offset from the partition's log start (kafka.FirstOffset)
// or end (kafka.LastOffset).
func (r *committedReader) resolve(ctx context.Context, which int64) error {
	req := kafka.FirstOffsetOf(r.partition)
	if which == kafka.LastOffset {
		req = kafka.LastOffsetOf(r.partition)
	}
	off, err := r.listOffset(ctx, req)
	if err != nil {
		return fmt.Errorf("reading the offsets of %s/%d: %w", r.topic, r.partition, err)
	}
	r.offset = off
	return nil
}

// outOfRange handles a fetch at an offset the log does not have, as
// kafka-go's Reader does: below the log start (records deleted by
// retention) it moves up to the start; otherwise it waits for records.
func (r *committedReader) outOfRange(ctx context.Context) error {
	first, err := r.listOffset(ctx, kafka.FirstOffsetOf(r.partition))
	if err != nil {
		return fmt.Errorf("offset %d out of range, and reading the log start of %s/%d: %w", r.offset, r.topic, r.partition, err)
	}
	if r.offset < first {
		r.offset = first
		return nil
	}
	select { // past the end: records are yet to come
	case <-time.After(r.maxWait):
	case <-ctx.Done():
	}
	return nil
}

// listOffset reads one offset of the partition (its log start or end).
func (r *committedReader) listOffset(ctx context.Context, req kafka.OffsetRequest) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	client := &kafka.Client{Addr: r.addr, Transport: r.rt}
	got, err := listOffsets(ctx, client, map[string][]kafka.OffsetRequest{r.topic: {req}})
	if err != nil {
		return 0, err
	}
	off, ok := got[tp{r.topic, r.partition}]
	if !ok {
		return 0, fmt.Errorf("no offset for %s/%d in the answer", r.topic, r.partition)
	}
	return off, nil
}
