package consumer

import (
	"sync"
	"sync/atomic"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// tracker follows the records of one partition from fetch to settlement and
// yields the contiguous watermark: the offset below which every tracked
// record is settled. Records are tracked in fetch order (offsets strictly
// increasing, gaps allowed) and released in any order.
//
// tracker is safe for concurrent use: the partition's process loop tracks
// (and releases the records it settles itself: hidden ones, tombstones),
// the batcher's send goroutines and the dead-letter writer release through
// the records' Acks, the commit loop and the drain read.
type tracker struct {
	topic     string
	partition int

	mu   sync.Mutex
	base int64 // sequence number of pending[0]
	// pending holds the offsets of the records tracked and not yet popped,
	// in fetch order; a settled record's entry is stored inverted (^offset,
	// negative, since offsets are not), 8 bytes a record.
	pending []int64
	next    int64 // commit offset: every record below it is settled
	last    int64 // highest offset tracked, -1 before the first
	// done: offsets at or past next, in order, of records settled in an
	// earlier epoch of this generation (carried over a replan: settledDone);
	// consumed as the reader passes them.
	done []int64
	// multi: offsets, in order, of the records tracked with more than one
	// member (markMulti); entries below next are dropped as they pass.
	multi []int64
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
	t.pending = append(t.pending, offset)
	return t.base + int64(len(t.pending)) - 1, true
}

// release settles the record with sequence number seq. Releasing twice is a
// bug and panics, as it would let the watermark pass an unsettled record.
func (t *tracker) release(seq int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := seq - t.base
	if i < 0 || i >= int64(len(t.pending)) || t.pending[i] < 0 {
		panic("consumer: record released twice or never tracked")
	}
	t.pending[i] = ^t.pending[i]
	if i != 0 {
		return
	}
	n := 0
	for n < len(t.pending) && t.pending[n] < 0 {
		n++
	}
	t.next = ^t.pending[n-1] + 1
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

// settledDone reports whether the record at offset, just tracked, was
// settled in an earlier epoch of the generation (done): it is then not
// handled again. Offsets are asked in increasing order, as tracked.
func (t *tracker) settledDone(offset int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := 0
	for i < len(t.done) && t.done[i] < offset {
		i++
	}
	t.done = t.done[i:]
	return len(t.done) > 0 && t.done[0] == offset
}

// markMulti notes that record seq has more than one member: it can be
// settled in part (carry).
func (t *tracker) markMulti(seq int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := seq - t.base
	if i < 0 || i >= int64(len(t.pending)) || t.pending[i] < 0 {
		return
	}
	n := 0
	for n < len(t.multi) && t.multi[n] < t.next {
		n++
	}
	t.multi = append(t.multi[n:], t.pending[i])
}

// carry returns, in order, the offsets at or past the watermark whose
// records are settled (keep, if not nil, chooses among them), and the
// offsets carried into t that its reader has not reached: what the next
// epoch's tracker, started at the watermark, is not to handle again.
//
// It stops at the first record not settled that has more than one member
// (markMulti): such a record may be settled in part, a member's change
// superseded by a later record's that was accepted while another member
// waits, and read again it sends that member's stale change. The records
// after it are then read again too, so that the later change follows it
// (duplicates in log order), as without a carry.
func (t *tracker) carry(keep func(offset int64) bool) []int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []int64
	mi := 0
	for _, o := range t.pending {
		if o < 0 {
			if keep == nil || keep(^o) {
				out = append(out, ^o)
			}
			continue
		}
		for mi < len(t.multi) && t.multi[mi] < o {
			mi++
		}
		if mi < len(t.multi) && t.multi[mi] == o {
			return out // the first unsettled record with several members
		}
	}
	for _, o := range t.done {
		if o > t.last {
			out = append(out, o)
		}
	}
	return out
}

// offset returns the offset of the tracked, not yet settled record seq.
func (t *tracker) offset(seq int64) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := seq - t.base
	if i < 0 || i >= int64(len(t.pending)) || t.pending[i] < 0 {
		return -1
	}
	return t.pending[i]
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
//
// It is kept small (24 bytes), as there is one per pending record: the
// record's offset is read from the tracker when needed (a record is tracked
// until it is settled), and its key is not kept when it can be rebuilt from
// the change, as with the keyings the README recommends (cohort_id or uid).
// Other keys ride in a keyedAck.
type recordAck struct {
	t   *tracker
	seq int64
	n   atomic.Int32
	key keyKind
}

// keyKind says how to rebuild a record's key.
type keyKind uint8

const (
	keyNull   keyKind = iota // no key
	keyCohort                // the key is the event's cohort_id
	keyUID                   // the key is the event's only uid
	keyOther                 // the key is kept (keyedAck)
)

// keyedAck is the recordAck of a record whose key is kept.
type keyedAck struct {
	recordAck
	k []byte
}

// newRecordAck returns the Ack of record seq, whose key is key and whose
// event (when it decoded) is ev.
func newRecordAck(t *tracker, seq int64, key []byte, ev *event.Event, members int) batcher.Ack {
	kind := keyOther
	switch {
	case key == nil:
		kind = keyNull
	case ev != nil && string(key) == ev.CohortID:
		kind = keyCohort
	case ev != nil && len(ev.UIDs) == 1 && string(key) == ev.UIDs[0]:
		kind = keyUID
	}
	if kind == keyOther {
		a := &keyedAck{k: key}
		a.init(t, seq, kind, members)
		return a
	}
	a := &recordAck{}
	a.init(t, seq, kind, members)
	return a
}

func (a *recordAck) init(t *tracker, seq int64, kind keyKind, members int) {
	a.t, a.seq, a.key = t, seq, kind
	a.n.Store(int32(members))
	if members > 1 {
		t.markMulti(seq)
	}
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

// source returns the record an Ack stands for: its tracker, offset and key
// (rebuilt from the change h/uid where it was not kept). ok is false for an
// Ack of another kind.
func source(ack batcher.Ack, h wire.Header, uid string) (a *recordAck, offset int64, key []byte, ok bool) {
	switch x := ack.(type) {
	case *keyedAck:
		a, key = &x.recordAck, x.k
	case *recordAck:
		a = x
		switch x.key {
		case keyCohort:
			key = []byte(h.CohortID)
		case keyUID:
			key = []byte(uid)
		}
	default:
		return nil, -1, nil, false
	}
	return a, a.t.offset(a.seq), key, true
}
