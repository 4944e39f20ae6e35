package parkio

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/cohortsync/cohortsync-worker/internal/parking"
)

// MaxBatchBytes bounds one produce request's records (estimated
// uncompressed: keys, values and headers), below MaxMessageBytes. A single
// record larger than that is sent alone.
const MaxBatchBytes = 1 << 20

// ErrClosed is the error of a Write or MarkAndEnds after Close.
var ErrClosed = errors.New("parkio: writer closed")

// Writer appends parked records with acks=all, with kafka.Client.Produce (it
// returns offsets; kafka.Writer does not). Safe for concurrent use; writes
// to one parking partition are serialised (one produce in flight per
// partition), so records given in one call, and calls made one after
// another, land in order per partition. A failed produce is retried with
// backoff until ctx ends (a retried produce may duplicate a batch:
// duplicates follow their originals in order, which the protocol allows).
//
// An attempt in flight is not abandoned when ctx ends: it runs to its answer
// or its own timeout (10 s), so that Idle is not closed while this Writer
// still has a produce request outstanding. After a Write returned an error,
// any of its records may still have been appended (an unknown outcome).
//
// Sizes. A parked record is its source record's key and value, uncompressed,
// plus the headers (about 200 bytes, more with long names). A topic created
// by Ensure accepts MaxMessageBytes (1 MiB + 64 KiB): every record a broker
// with the default message.max.bytes accepts in the source topic fits. If
// the parking topic's max.message.bytes is smaller than a source record plus
// its headers (an existing topic with a smaller limit than the source
// topic's, or a source record that was larger than the limit before its
// batch's compression), the broker refuses it (kafka.MessageSizeTooLarge):
// Write returns that error without retrying, and the records of that
// partition from that batch on are not parked. The caller must not count
// them settled: they stay in their source partition, whose commit stops
// there, as when the commit metadata is full (parking.ErrFull).
type Writer struct {
	cfg    Config
	k      int
	client *kafka.Client
	own    *kafka.Transport // created here (cfg.Transport nil): closed by Close
	parts  []sync.Mutex     // parts[k] is held while a produce to k is in flight

	mu       sync.Mutex // guards the fields below
	inflight int
	idle     chan struct{} // closed while inflight == 0
	closed   bool
}

// NewWriter returns a Writer of the topic cfg.Topic with partitions
// partitions (Ensure's result). It connects nothing yet.
func NewWriter(cfg Config, partitions int) *Writer {
	cfg = cfg.withDefaults()
	w := &Writer{cfg: cfg, k: partitions, parts: make([]sync.Mutex, partitions), idle: make(chan struct{})}
	close(w.idle)
	if cfg.Transport == nil {
		w.own = &kafka.Transport{DialTimeout: 10 * time.Second}
		cfg.Transport = w.own
	}
	w.client = cfg.client()
	return w
}

// msg is one record to append: its key, value and headers.
type msg struct {
	key, value []byte
	headers    []kafka.Header
}

func (m msg) size() int {
	n := len(m.key) + len(m.value) + 32
	for _, h := range m.headers {
		n += len(h.Key) + len(h.Value) + 4
	}
	return n
}

// Write appends recs and returns, once all are acknowledged, each one's
// position (pos[i] for recs[i]).
func (w *Writer) Write(ctx context.Context, recs []Record) ([]Position, error) {
	if err := w.begin(); err != nil {
		return nil, err
	}
	defer w.end()
	byPart := map[int][]int{} // parking partition → indexes into recs, in order
	for i, r := range recs {
		k := parking.PartitionFor(r.Workspace, r.Cohort, w.k)
		byPart[k] = append(byPart[k], i)
	}
	pos := make([]Position, len(recs))
	g, gctx := errgroup.WithContext(ctx)
	for k, idx := range byPart {
		g.Go(func() error {
			msgs := make([]msg, len(idx))
			for j, i := range idx {
				msgs[j] = msg{key: recs[i].Key, value: recs[i].Value, headers: recs[i].headers()}
			}
			offs, err := w.append(gctx, k, msgs)
			if err != nil {
				return err
			}
			for j, i := range idx {
				pos[i] = Position{Partition: k, Offset: offs[j]}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return pos, nil
}

// append produces msgs to partition k in order, in batches of at most
// MaxBatchBytes, holding k's lock throughout, and returns their offsets.
func (w *Writer) append(ctx context.Context, k int, msgs []msg) ([]int64, error) {
	w.parts[k].Lock()
	defer w.parts[k].Unlock()
	offs := make([]int64, 0, len(msgs))
	for start := 0; start < len(msgs); {
		end, size := start+1, msgs[start].size()
		for end < len(msgs) && size+msgs[end].size() <= MaxBatchBytes {
			size += msgs[end].size()
			end++
		}
		base, err := w.produce(ctx, k, msgs[start:end])
		if err != nil {
			return nil, fmt.Errorf("parkio: write to %s/%d: %w", w.cfg.Topic, k, err)
		}
		for j := range end - start {
			offs = append(offs, base+int64(j))
		}
		start = end
	}
	return offs, nil
}

// produce sends one batch to partition k, acks=all, retrying until it is
// acknowledged, a permanent error, or ctx ends; it returns the batch's base
// offset (the first record's: the others follow it, one offset each).
func (w *Writer) produce(ctx context.Context, k int, batch []msg) (int64, error) {
	var base int64
	err := retry(ctx, w.cfg.Logger, "write", func(actx context.Context) error {
		// Not abandoned when ctx ends (Writer doc): its own timeout only.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(actx), attemptTimeout)
		defer cancel()
		now := time.Now()
		recs := make([]kafka.Record, len(batch)) // fresh per attempt: a record's Bytes are read once
		for i, m := range batch {
			recs[i] = kafka.Record{Time: now, Key: bytesOrNil(m.key), Value: bytesOrNil(m.value), Headers: m.headers}
		}
		res, err := w.client.Produce(pctx, &kafka.ProduceRequest{Topic: w.cfg.Topic, Partition: k,
			RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(recs...)})
		if err != nil {
			return err
		}
		if res.Error != nil {
			return res.Error
		}
		for i, rerr := range res.RecordErrors {
			err = errors.Join(err, fmt.Errorf("record %d: %w", i, rerr))
		}
		base = res.BaseOffset
		return err
	})
	return base, err
}

func bytesOrNil(b []byte) kafka.Bytes {
	if b == nil {
		return nil
	}
	return kafka.NewBytes(b)
}

// MarkAndEnds writes one marker (a record with no change, generation gen)
// to every parking partition, waits for the acknowledgements, then returns
// every partition's end offset (ends[k] = next offset of partition k), read
// after the markers (protocol 6 (b)). Each end is past its marker: an
// answer that is not (a replica behind the one that acknowledged) is read
// again.
func (w *Writer) MarkAndEnds(ctx context.Context, gen int64) ([]int64, error) {
	if err := w.begin(); err != nil {
		return nil, err
	}
	defer w.end()
	marks := make([]int64, w.k)
	g, gctx := errgroup.WithContext(ctx)
	for k := range w.k {
		g.Go(func() error {
			offs, err := w.append(gctx, k, []msg{{headers: markerHeaders(gen)}})
			if err == nil {
				marks[k] = offs[0]
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var ends []int64
	err := retry(ctx, w.cfg.Logger, "end offsets", func(actx context.Context) error {
		var err error
		if ends, err = w.ends(actx); err != nil {
			return err
		}
		for k, e := range ends {
			if e <= marks[k] {
				return fmt.Errorf("partition %d: end offset %d not past its marker at %d", k, e, marks[k])
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("parkio: end offsets of %s: %w", w.cfg.Topic, err)
	}
	return ends, nil
}

// ends reads every partition's end offset (ListOffsets, latest).
func (w *Writer) ends(ctx context.Context) ([]int64, error) {
	reqs := make([]kafka.OffsetRequest, w.k)
	for k := range reqs {
		reqs[k] = kafka.LastOffsetOf(k)
	}
	res, err := w.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{w.cfg.Topic: reqs}})
	if err != nil {
		return nil, err
	}
	ends := make([]int64, w.k)
	seen := make([]bool, w.k)
	for _, po := range res.Topics[w.cfg.Topic] {
		if po.Partition < 0 || po.Partition >= w.k {
			continue
		}
		if po.Error != nil {
			return nil, fmt.Errorf("partition %d: %w", po.Partition, po.Error)
		}
		// kafka-go files the answer by the timestamp the broker sends
		// back (internal/replay's Offsets): "latest" comes as LastOffset,
		// or keyed by a timestamp in Offsets.
		ends[po.Partition], seen[po.Partition] = po.LastOffset, true
		for off := range po.Offsets {
			ends[po.Partition] = off
		}
	}
	for k, ok := range seen {
		if !ok {
			return nil, fmt.Errorf("partition %d: no end offset in the broker's answer", k)
		}
	}
	return ends, nil
}

func (w *Writer) begin() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if w.inflight == 0 {
		w.idle = make(chan struct{})
	}
	w.inflight++
	return nil
}

func (w *Writer) end() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.inflight--
	if w.inflight == 0 {
		close(w.idle)
	}
}

// Idle returns a channel closed when no Write (or MarkAndEnds) is in flight
// (for the fence, protocol 6 (a)): taken while writes are in flight, it is
// closed when the last of them has returned, and a Write returns only once
// its produce requests have been answered or timed out (Writer doc).
func (w *Writer) Idle() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.idle
}

// Close makes later writes fail with ErrClosed and closes the idle
// connections of a transport the Writer made itself. It does not wait for
// writes in flight (wait for Idle first).
func (w *Writer) Close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	if w.own != nil {
		w.own.CloseIdleConnections()
	}
	return nil
}
