package consumer

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/fetch"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// A batch of a synthetic fetch response: data records at offsets, or (with
// marker >= 0) a control batch of one marker record (0 ABORT, 1 COMMIT).
type tBatch struct {
	producer int64
	txn      bool
	offsets  []int64
	marker   int16
}

func data(producer int64, txn bool, offsets ...int64) tBatch {
	return tBatch{producer: producer, txn: txn, offsets: offsets, marker: -1}
}
func plain(offsets ...int64) tBatch { return data(-1, false, offsets...) }
func abortAt(producer, offset int64) tBatch {
	return tBatch{producer: producer, txn: true, offsets: []int64{offset}, marker: controlAbort}
}
func commitAt(producer, offset int64) tBatch {
	return tBatch{producer: producer, txn: true, offsets: []int64{offset}, marker: 1}
}

func response(aborted []fetch.ResponseTransaction, batches ...tBatch) *fetch.ResponsePartition {
	var rs []protocol.RecordReader
	for _, b := range batches {
		attrs := protocol.Attributes(0)
		if b.txn {
			attrs |= protocol.Transactional
		}
		if b.marker >= 0 {
			cr := protocol.ControlRecord{Offset: b.offsets[0], Version: 0, Type: b.marker}
			rs = append(rs, &protocol.ControlBatch{Attributes: attrs | protocol.Control, BaseOffset: b.offsets[0],
				ProducerID: b.producer, Records: protocol.NewRecordReader(cr.Record())})
			continue
		}
		recs := make([]protocol.Record, len(b.offsets))
		for i, o := range b.offsets {
			recs[i] = protocol.Record{Offset: o, Key: protocol.NewBytes([]byte(fmt.Sprint("k", o))),
				Value: protocol.NewBytes([]byte(fmt.Sprint("v", o)))}
		}
		rs = append(rs, &protocol.RecordBatch{Attributes: attrs, BaseOffset: b.offsets[0], ProducerID: b.producer,
			Records: protocol.NewRecordReader(recs...)})
	}
	p := &fetch.ResponsePartition{HighWatermark: 100, AbortedTransactions: aborted}
	if len(rs) > 0 {
		p.RecordSet.Records = &protocol.RecordStream{Records: rs}
	}
	return p
}

func abortedTxns(pairs ...int64) []fetch.ResponseTransaction {
	var out []fetch.ResponseTransaction
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, fetch.ResponseTransaction{ProducerID: pairs[i], FirstOffset: pairs[i+1]})
	}
	return out
}

// TestDecodeReadCommitted checks which records of a fetch response are
// delivered, which offset comes next, and where a hiddenRecords message
// lets the commit pass records that are not delivered.
func TestDecodeReadCommitted(t *testing.T) {
	const p1, p2 = 7, 9
	cases := []struct {
		name    string
		from    int64
		resp    *fetch.ResponsePartition
		shown   []int64
		hidden  int64 // offset of the trailing hiddenRecords; -1: none
		next    int64
		checkKV bool
	}{
		{name: "plain records", resp: response(nil, plain(0, 1, 2), plain(3)),
			shown: []int64{0, 1, 2, 3}, hidden: -1, next: 4, checkKV: true},
		{name: "empty response", from: 5, resp: response(nil), hidden: -1, next: 5},
		{name: "committed transaction: only its marker is hidden", resp: response(nil,
			data(p1, true, 0, 1), commitAt(p1, 2)),
			shown: []int64{0, 1}, hidden: 2, next: 3},
		{name: "aborted single-record transactions interleaved with plain records", resp: response(abortedTxns(p1, 1, p1, 4),
			plain(0), data(p1, true, 1), abortAt(p1, 2), plain(3), data(p1, true, 4), abortAt(p1, 5), plain(6)),
			shown: []int64{0, 3, 6}, hidden: -1, next: 7},
		{name: "two producers, one aborts, one commits, interleaved", resp: response(abortedTxns(p1, 0),
			data(p1, true, 0), data(p2, true, 1), data(p1, true, 2), commitAt(p2, 3), abortAt(p1, 4), plain(5)),
			shown: []int64{1, 5}, hidden: -1, next: 6},
		{name: "overlapping aborted transactions of two producers", resp: response(abortedTxns(p2, 1, p1, 0),
			data(p1, true, 0), data(p2, true, 1), abortAt(p1, 2), data(p1, true, 3), data(p2, true, 4),
			abortAt(p2, 5), commitAt(p1, 6)),
			shown: []int64{3}, hidden: 6, next: 7},
		{name: "one producer aborts twice, then commits", resp: response(abortedTxns(p1, 0, p1, 2),
			data(p1, true, 0), abortAt(p1, 1), data(p1, true, 2), abortAt(p1, 3), data(p1, true, 4), commitAt(p1, 5)),
			shown: []int64{4}, hidden: 5, next: 6},
		{name: "a committed transaction before the producer's aborted one", resp: response(abortedTxns(p1, 2),
			data(p1, true, 0), commitAt(p1, 1), data(p1, true, 2, 3), abortAt(p1, 4)),
			shown: []int64{0}, hidden: 4, next: 5},
		{name: "fetch from inside an aborted batch", from: 2, resp: response(abortedTxns(p1, 0),
			data(p1, true, 0, 1, 2), abortAt(p1, 3), data(p1, true, 4), commitAt(p1, 5)),
			shown: []int64{4}, hidden: 5, next: 6},
		{name: "fetch from the abort marker of a transaction that began earlier", from: 4, resp: response(abortedTxns(p1, 0),
			abortAt(p1, 4), data(p1, true, 5), commitAt(p1, 6)),
			shown: []int64{5}, hidden: 6, next: 7},
		{name: "a non-transactional batch of an aborting producer is delivered", resp: response(abortedTxns(p1, 0),
			data(p1, true, 0), data(p1, false, 1), abortAt(p1, 2)),
			shown: []int64{1}, hidden: 2, next: 3},
		{name: "a transaction's marker alone", from: 8, resp: response(nil, commitAt(p1, 8)),
			hidden: 8, next: 9},
		{name: "compacted gaps between records", resp: response(nil, plain(0, 3, 7), plain(12)),
			shown: []int64{0, 3, 7, 12}, hidden: -1, next: 13},
		{name: "compacted gaps in an aborted transaction", resp: response(abortedTxns(p1, 10),
			plain(2, 5), data(p1, true, 10, 14), abortAt(p1, 20)),
			shown: []int64{2, 5}, hidden: 20, next: 21},
		{name: "a batch with nothing left at the fetch offset", from: 6, resp: response(nil, plain(3, 4)),
			hidden: 6, next: 7},
		{name: "records before the fetch offset are not delivered again", from: 2, resp: response(nil, plain(0, 1, 2, 3)),
			shown: []int64{2, 3}, hidden: -1, next: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := decodePartition("t", 3, tc.from, tc.resp, nil)
			if err != nil {
				t.Fatal(err)
			}
			var shown []int64
			hidden := int64(-1)
			for i, m := range d.msgs {
				if m.Topic != "t" || m.Partition != 3 {
					t.Fatalf("message %d is of %s/%d", i, m.Topic, m.Partition)
				}
				if isHidden(&m) {
					if i != len(d.msgs)-1 {
						t.Fatalf("hiddenRecords at %d is not the last message", m.Offset)
					}
					hidden = m.Offset
					continue
				}
				shown = append(shown, m.Offset)
				if tc.checkKV && (string(m.Key) != fmt.Sprint("k", m.Offset) || string(m.Value) != fmt.Sprint("v", m.Offset) || m.HighWaterMark != 100) {
					t.Fatalf("message at %d: key %q value %q hw %d", m.Offset, m.Key, m.Value, m.HighWaterMark)
				}
			}
			if !slices.Equal(shown, tc.shown) || hidden != tc.hidden || d.next != tc.next {
				t.Fatalf("delivered %v, hidden up to %d, next %d; want %v, %d, %d", shown, hidden, d.next, tc.shown, tc.hidden, tc.next)
			}
		})
	}
}

// TestHiddenRecordsSettle: a hiddenRecords message is tracked and settled at
// once, so the watermark passes the records it stands for, also when it
// follows a record that is still pending.
func TestHiddenRecordsSettle(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	c := &Consumer{cfg: Config{}, m: m, log: slog.New(slog.DiscardHandler)}
	tr := newTracker("t", 0, 0)
	dec := event.NewDecoder("")
	buf, err := c.handle(t.Context(), tr, dec, hiddenAt("t", 0, 4), nil)
	if err != nil || len(buf) != 0 {
		t.Fatalf("handle: %v, %d changes", err, len(buf))
	}
	if w := tr.watermark(); w != 5 {
		t.Fatalf("watermark %d after hidden records up to 4, want 5", w)
	}
	seq, _ := tr.track(6) // a record, pending
	if _, err := c.handle(t.Context(), tr, dec, hiddenAt("t", 0, 9), nil); err != nil {
		t.Fatal(err)
	}
	if w := tr.watermark(); w != 5 {
		t.Fatalf("watermark %d passed a pending record", w)
	}
	tr.release(seq)
	if w := tr.watermark(); w != 10 {
		t.Fatalf("watermark %d, want 10 once the record before the hidden ones settled", w)
	}
	// Hidden records are not events: neither consumed nor skipped.
	if n := testutil.ToFloat64(m.EventsConsumed) + testutil.ToFloat64(m.EventsSkipped); n != 0 {
		t.Fatalf("hidden records counted as %v events", n)
	}
}

// TestDecodeEmitsInChunks: with emit, decodePartition hands the messages on
// decodeChunk at a time, in chunks allocated at that size (not grown by
// append: chunks), across batches' bounds, and what it emitted followed by
// what it returns is what it returns without emit; an emit that reports
// false stops it.
func TestDecodeEmitsInChunks(t *testing.T) {
	var batches []tBatch
	off := int64(0)
	for range 5 {
		var offs []int64
		for range 200 {
			offs = append(offs, off)
			off++
		}
		batches = append(batches, plain(offs...))
	}
	batches = append(batches, data(7, true, off), abortAt(7, off+1))
	aborted := abortedTxns(7, off)
	whole, err := decodePartition("t", 0, 0, response(aborted, batches...), nil)
	if err != nil {
		t.Fatal(err)
	}
	var emitted [][]kafka.Message
	d, err := decodePartition("t", 0, 0, response(aborted, batches...), &chunks{emit: func(msgs []kafka.Message) bool {
		emitted = append(emitted, msgs)
		return true
	}})
	if err != nil {
		t.Fatal(err)
	}
	var all []int64
	for i, c := range emitted {
		if len(c) != decodeChunk || cap(c) != decodeChunk {
			t.Fatalf("chunk %d has %d messages in a slice of capacity %d, want %d in %d", i, len(c), cap(c), decodeChunk, decodeChunk)
		}
		for _, m := range c {
			all = append(all, m.Offset)
		}
	}
	for _, m := range d.msgs {
		all = append(all, m.Offset)
	}
	var want []int64
	for _, m := range whole.msgs {
		want = append(want, m.Offset)
	}
	if len(emitted) < 2 || !slices.Equal(all, want) || d.next != whole.next || !isHidden(&d.msgs[len(d.msgs)-1]) {
		t.Fatalf("%d chunks; offsets %v…, next %d; want %v…, next %d", len(emitted), all[max(0, len(all)-3):], d.next, want[max(0, len(want)-3):], whole.next)
	}
	if _, err := decodePartition("t", 0, 0, response(aborted, batches...), &chunks{emit: func([]kafka.Message) bool { return false }}); err != errStopped {
		t.Fatalf("a refusing emit: %v, want errStopped", err)
	}
}

// TestDecodeChunkSizes: a response of a few records allocates for a few
// (a long-poll answered a record at a time must not allocate decodeChunk
// messages each time), the size guessed from the last response; a chunk
// that outgrows the guess still goes out at decodeChunk; and what a
// stopped response left is not handed out with the next one.
func TestDecodeChunkSizes(t *testing.T) {
	var emitted [][]kafka.Message
	refuse := false
	out := &chunks{emit: func(msgs []kafka.Message) bool {
		if refuse {
			return false
		}
		emitted = append(emitted, msgs)
		return true
	}}
	off := int64(0)
	resp := func(n int) *fetch.ResponsePartition {
		var offs []int64
		for range n {
			offs = append(offs, off)
			off++
		}
		return response(nil, plain(offs...))
	}
	for i, tc := range []struct{ records, wantCap int }{
		{3, minChunk},  // nothing known yet: the smallest chunk
		{3, minChunk},  // the last response held 3
		{20, minChunk}, // guessed 3 (minChunk): doubled to 16, then 32
		{20, 20},       // the last held 20
	} {
		from := off
		d, err := decodePartition("t", 0, from, resp(tc.records), out)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.msgs) != tc.records || d.msgs[0].Offset != from {
			t.Fatalf("response %d: %d messages from %d, want %d from %d", i, len(d.msgs), d.msgs[0].Offset, tc.records, from)
		}
		if i != 2 && cap(d.msgs) != tc.wantCap {
			t.Fatalf("response %d of %d records: a slice of capacity %d, want %d", i, tc.records, cap(d.msgs), tc.wantCap)
		}
		if i == 2 && cap(d.msgs) != 4*minChunk {
			t.Fatalf("response %d of %d records after one of 3: capacity %d, want %d (doubled twice)", i, tc.records, cap(d.msgs), 4*minChunk)
		}
	}
	// A long response after short ones: every chunk handed out is whole.
	// (resp moves off: from is read before it.)
	from := off
	if _, err := decodePartition("t", 0, from, resp(3*decodeChunk+5), out); err != nil {
		t.Fatal(err)
	}
	if len(emitted) != 3 {
		t.Fatalf("%d chunks emitted, want 3", len(emitted))
	}
	for i, c := range emitted {
		if len(c) != decodeChunk || cap(c) > decodeChunk {
			t.Fatalf("chunk %d: %d messages, capacity %d; want %d, at most %d", i, len(c), cap(c), decodeChunk, decodeChunk)
		}
	}
	// A refused emit stops the response; the next one starts clean.
	refuse = true
	from = off
	if _, err := decodePartition("t", 0, from, resp(decodeChunk+1), out); err != errStopped {
		t.Fatalf("refused: %v, want errStopped", err)
	}
	refuse = false
	from = off
	d, err := decodePartition("t", 0, from, resp(2), out)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.msgs) != 2 || d.msgs[0].Offset != from {
		t.Fatalf("after a stopped response: %d messages from offset %d, want 2 from %d", len(d.msgs), d.msgs[0].Offset, from)
	}
}
