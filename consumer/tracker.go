package consumer

import (
	"sync"
	"sync/atomic"
)

// tracker follows the records of one partition from fetch to settlement and
// yields the contiguous watermark: the offset below which every tracked
// record is settled. Records are tracked in fetch order (offsets strictly
// increasing, gaps allowed) and released in any order.
//
// tracker is safe for concurrent use: fetch loops track, send goroutines
// release, the commit loop reads.
type tracker struct {
	topic     string
	partition int

	mu      sync.Mutex
	base    int64     // sequence number of pending[0]
	pending []pendRec // tracked, not yet popped
	next    int64     // commit offset: every record below it is settled
	last    int64     // highest offset tracked, -1 before the first
	hwm     atomic.Int64
}

type pendRec struct {
	offset int64
	done   bool
}

// newTracker starts at the first offset to be read (the committed offset).
func newTracker(topic string, partition int, start int64) *tracker {
	return &tracker{topic: topic, partition: partition, next: start, last: start - 1}
}

// track registers a fetched record and returns its sequence number. It
// reports false (and tracks nothing) for an offset at or below one already
// tracked: a record delivered twice.
func (t *tracker) track(offset int64) (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if offset <= t.last {
		return 0, false
	}
	t.last = offset
	t.pending = append(t.pending, pendRec{offset: offset})
	return t.base + int64(len(t.pending)) - 1, true
}

// release settles the record with sequence number seq. Releasing twice is a
// bug and panics, as it would let the watermark pass an unsettled record.
func (t *tracker) release(seq int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := seq - t.base
	if i < 0 || i >= int64(len(t.pending)) || t.pending[i].done {
		panic("consumer: record released twice or never tracked")
	}
	t.pending[i].done = true
	if i != 0 {
		return
	}
	n := 0
	for n < len(t.pending) && t.pending[n].done {
		n++
	}
	t.next = t.pending[n-1].offset + 1
	t.base += int64(n)
	// Reuse the backing array once the popped prefix dominates it.
	rest := len(t.pending) - n
	if n >= rest {
		copy(t.pending, t.pending[n:])
		t.pending = t.pending[:rest]
	} else {
		t.pending = t.pending[n:]
	}
}

// watermark returns the offset to commit: the next offset to read after
// every settled-contiguous record.
func (t *tracker) watermark() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.next
}

// outstanding returns how many tracked records are not yet popped.
func (t *tracker) outstanding() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// recordAck is the batcher.Ack of one record. A record with n members is
// settled when all n are; the record is released in its tracker then.
type recordAck struct {
	t      *tracker
	seq    int64
	offset int64
	key    []byte
	n      atomic.Int32
}

func newRecordAck(t *tracker, seq, offset int64, key []byte, members int) *recordAck {
	a := &recordAck{t: t, seq: seq, offset: offset, key: key}
	a.n.Store(int32(members))
	return a
}

// Done settles one member of the record.
func (a *recordAck) Done() {
	switch n := a.n.Add(-1); {
	case n == 0:
		a.t.release(a.seq)
	case n < 0:
		panic("consumer: record acknowledged more times than it has members")
	}
}
