package consumer

import (
	"cmp"
	"errors"
	"io"
	"slices"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/fetch"
)

// Reading transactional input as Kafka means it to be read (read_committed).
//
// A transactional producer writes its records in batches marked
// transactional, and ends each transaction with a control batch: a marker
// record saying COMMIT or ABORT. A read_committed fetch ends at the last
// stable offset (no undecided transaction is returned) and lists, for the
// range it returns, the aborted transactions: producer id and first offset.
// The consumer's side of the protocol is to drop the batches of those
// transactions and every control batch; kafka-go v0.4.51 does neither
// (segmentio/kafka-go#1332). This file does it the way Kafka's Java
// consumer does (CompletedFetch): going through the batches in offset
// order, a producer becomes aborted at the first offset of one of its
// aborted transactions and stops being so at its ABORT marker, and a
// transactional batch of an aborted producer is dropped.

// controlAbort is the type of an ABORT marker's control record (COMMIT is 1).
const controlAbort = 0

// abortFilter decides, batch by batch in offset order, which batches of one
// fetch response are delivered. It holds that response's aborted
// transactions: they cover the response's range only.
type abortFilter struct {
	aborted []fetch.ResponseTransaction // by first offset; consumed from the front
	open    map[int64]bool              // producers inside an aborted transaction
}

func newAbortFilter(aborted []fetch.ResponseTransaction) *abortFilter {
	f := &abortFilter{}
	if len(aborted) > 0 {
		f.aborted = slices.Clone(aborted)
		slices.SortStableFunc(f.aborted, func(a, b fetch.ResponseTransaction) int { return cmp.Compare(a.FirstOffset, b.FirstOffset) })
		f.open = map[int64]bool{}
	}
	return f
}

// upTo opens the aborted transactions that start at or before offset.
func (f *abortFilter) upTo(offset int64) {
	for len(f.aborted) > 0 && f.aborted[0].FirstOffset <= offset {
		f.open[f.aborted[0].ProducerID] = true
		f.aborted = f.aborted[1:]
	}
}

// data reports whether a data batch starting at base, written by
// producer, is delivered: it is not when it is transactional and its
// producer is inside an aborted transaction. (A transaction's first offset
// is at or before the base of each of its batches, and no other producer's
// transaction starts inside a batch: base is as good as the batch's last
// offset here.)
func (f *abortFilter) data(base, producer int64, transactional bool) bool {
	f.upTo(base)
	return !transactional || !f.open[producer]
}

// marker takes a control batch at base, of producer; abort says whether its
// marker is an ABORT. Control batches are never delivered.
func (f *abortFilter) marker(base, producer int64, abort bool) {
	f.upTo(base)
	if abort {
		delete(f.open, producer)
	}
}

// hiddenRecords marks, in kafka.Message.WriterData (unused on reads), a
// message that stands for records not delivered: control records and
// records of aborted transactions. Its Offset is the last of them; process
// tracks and settles it at once, so the commit moves past them.
type hiddenRecords struct{}

// isHidden reports whether m stands for hidden records (hiddenRecords).
func isHidden(m *kafka.Message) bool {
	_, ok := m.WriterData.(hiddenRecords)
	return ok
}

// decoded is what one fetch response holds for its partition.
type decoded struct {
	msgs []kafka.Message // records delivered, then possibly one hiddenRecords
	next int64           // the offset to fetch next
}

// decodePartition turns the records of a fetch response's partition at or
// above from into messages, read_committed: control records and aborted
// transactions' records are dropped. When the last record at or above from
// is dropped, a hiddenRecords message with its offset ends msgs, so the
// commit can pass it. A response whose batches hold no record at or above
// from (a batch emptied by compaction, whose last offset the protocol
// package does not expose) moves next one past from, with a hiddenRecords
// for from: no record exists there.
//
// With out (its emit), the messages go to emit as they are decoded,
// decodeChunk at a time, and those left at the end are in msgs; when emit
// reports false, decoding stops with errStopped. Without, they are all in
// msgs.
func decodePartition(topic string, partition int, from int64, p *fetch.ResponsePartition, out *chunks) (decoded, error) {
	d := decoded{next: from}
	if out == nil {
		out = &chunks{}
	}
	out.begin()
	batches := recordBatches(p.RecordSet.Records)
	f := newAbortFilter(p.AbortedTransactions)
	lastSeen, lastShown := int64(-1), int64(-1)
	for _, b := range batches {
		var err error
		show := true
		switch b := b.(type) {
		case *protocol.ControlBatch:
			var abort bool
			abort, lastSeen, err = readMarker(b, from, lastSeen)
			f.marker(b.BaseOffset, b.ProducerID, abort)
			if err != nil {
				return d, err
			}
			continue
		case *protocol.RecordBatch:
			show = f.data(b.BaseOffset, b.ProducerID, b.Attributes.Transactional())
		}
		if lastSeen, lastShown, err = readBatch(out, b, show, topic, partition, p.HighWatermark, from, lastSeen, lastShown); err != nil {
			return d, err
		}
	}
	d.msgs = out.end()
	switch {
	case lastSeen >= from:
		d.next = lastSeen + 1
		if lastSeen > lastShown {
			d.msgs = append(d.msgs, hiddenAt(topic, partition, lastSeen))
		}
	case len(batches) > 0:
		d.msgs = append(d.msgs, hiddenAt(topic, partition, from))
		d.next = from + 1
	}
	return d, nil
}

// decodeChunk is how many messages decodePartition hands to emit at once.
const decodeChunk = 256

// chunks collects decoded messages and, with emit, hands them on
// decodeChunk at a time. A chunk is allocated at the size it will have: a
// kafka.Message is about 150 bytes, and a slice grown by append to a
// batch's thousands of records allocated four to five times its final
// size on the way. That garbage, per record read, is what the worker's
// heap grew by between collections while members piled up: it raised the
// live heap a collection saw, and so the next collection's goal (the
// peak RSS of cohortsync-bench (d) went from 207 to about 400 MiB when
// this reader replaced kafka-go's). The size a chunk will have is
// decodeChunk within a response past its first chunk, and for the first,
// what the partition's last response held (a long-poll answered with a
// record or two at a time allocates for that, not for decodeChunk); a
// chunk that outgrows its guess doubles, up to decodeChunk.
type chunks struct {
	emit func([]kafka.Message) bool // nil: everything goes to end's caller
	msgs []kafka.Message
	n    int // messages of the current response so far
	last int // messages of the last response
}

// add appends m, and hands a full chunk to emit; errStopped when emit
// refuses it.
func (c *chunks) add(m kafka.Message) error {
	c.n++
	if c.emit == nil {
		c.msgs = append(c.msgs, m)
		return nil
	}
	if len(c.msgs) == cap(c.msgs) {
		size := decodeChunk
		switch {
		case len(c.msgs) > 0:
			size = min(2*len(c.msgs), decodeChunk)
		case c.n == 1:
			size = min(max(c.last, minChunk), decodeChunk)
		}
		c.msgs = append(make([]kafka.Message, 0, size), c.msgs...)
	}
	c.msgs = append(c.msgs, m)
	if len(c.msgs) < decodeChunk {
		return nil
	}
	if !c.emit(c.msgs) {
		return errStopped
	}
	c.msgs = nil
	return nil
}

// begin starts a response (dropping what an earlier one that failed left).
func (c *chunks) begin() { c.msgs, c.n = nil, 0 }

// end returns the messages of the response not handed to emit.
func (c *chunks) end() []kafka.Message {
	msgs := c.msgs
	c.msgs, c.last, c.n = nil, c.n, 0
	return msgs
}

// minChunk is the smallest chunk allocated.
const minChunk = 8

// errStopped is decodePartition's error when emit stopped it.
var errStopped = errors.New("consumer: decoding stopped")

func hiddenAt(topic string, partition int, offset int64) kafka.Message {
	return kafka.Message{Topic: topic, Partition: partition, Offset: offset, WriterData: hiddenRecords{}}
}

// recordBatches returns the batches of a response's record set.
func recordBatches(r protocol.RecordReader) []protocol.RecordReader {
	switch s := r.(type) {
	case nil:
		return nil
	case *protocol.RecordStream:
		return s.Records
	default:
		return []protocol.RecordReader{r}
	}
}

// readMarker reads a control batch: whether it holds an ABORT marker, and
// the highest offset seen at or above from.
func readMarker(b *protocol.ControlBatch, from, lastSeen int64) (abort bool, _ int64, _ error) {
	for {
		r, err := b.Records.ReadRecord()
		if errors.Is(err, io.EOF) {
			return abort, lastSeen, nil
		}
		if err != nil {
			return abort, lastSeen, err
		}
		off := r.Offset
		cr, err := protocol.ReadControlRecord(r) // closes r's key and value
		if err != nil {
			return abort, lastSeen, err
		}
		if cr.Type == controlAbort {
			abort = true
		}
		if off >= from {
			lastSeen = max(lastSeen, off)
		}
	}
}

// readBatch adds the records of b at or above from to out when show is
// set, and returns the highest offsets seen and shown.
func readBatch(out *chunks, b protocol.RecordReader, show bool, topic string, partition int, hw, from, lastSeen, lastShown int64) (int64, int64, error) {
	for {
		r, err := b.ReadRecord()
		if errors.Is(err, io.EOF) {
			return lastSeen, lastShown, nil
		}
		if err != nil {
			return lastSeen, lastShown, err
		}
		if r.Offset < from || !show {
			closeRecord(r)
			if r.Offset >= from {
				lastSeen = max(lastSeen, r.Offset)
			}
			continue
		}
		m, err := message(r, topic, partition, hw)
		if err != nil {
			return lastSeen, lastShown, err
		}
		lastSeen, lastShown = max(lastSeen, r.Offset), r.Offset
		if err := out.add(m); err != nil {
			return lastSeen, lastShown, err
		}
	}
}

// message copies a record out of the response's buffers.
func message(r *protocol.Record, topic string, partition int, hw int64) (kafka.Message, error) {
	defer closeRecord(r)
	key, err := protocol.ReadAll(r.Key)
	if err != nil {
		return kafka.Message{}, err
	}
	value, err := protocol.ReadAll(r.Value)
	if err != nil {
		return kafka.Message{}, err
	}
	m := kafka.Message{Topic: topic, Partition: partition, Offset: r.Offset, HighWaterMark: hw,
		Key: key, Value: value, Time: r.Time}
	if len(r.Headers) > 0 {
		m.Headers = make([]kafka.Header, len(r.Headers))
		for i, h := range r.Headers {
			m.Headers[i] = kafka.Header{Key: h.Key, Value: h.Value}
		}
	}
	return m, nil
}

// closeRecord gives a record's key and value buffers back.
func closeRecord(r *protocol.Record) {
	if r.Key != nil {
		r.Key.Close()
	}
	if r.Value != nil {
		r.Value.Close()
	}
}
