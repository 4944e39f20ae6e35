package consumer

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// TestTrackerRandomRelease releases tracked offsets in random orders and
// checks after every release that the watermark never passes an unreleased
// offset and always reaches the highest contiguous released one.
func TestTrackerRandomRelease(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		start := int64(rng.IntN(1000))
		tr := newTracker("t", 0, start)
		n := 1 + rng.IntN(300)
		offsets := make([]int64, n)
		seqs := make([]int64, n)
		off := start
		for i := range n {
			off += int64(1 + rng.IntN(3)) // gaps, as after compaction or transactions
			if i == 0 {
				off = start + int64(rng.IntN(2))
			}
			offsets[i] = off
			s, ok := tr.track(off)
			if !ok {
				t.Fatalf("seed %d: track(%d) refused", seed, off)
			}
			seqs[i] = s
		}
		released := make([]bool, n)
		for _, i := range rng.Perm(n) {
			tr.release(seqs[i])
			released[i] = true
			want := start
			for j := range n {
				if !released[j] {
					break
				}
				want = offsets[j] + 1
			}
			if got := tr.watermark(); got != want {
				t.Fatalf("seed %d: watermark %d, want %d", seed, got, want)
			}
			for j := range n {
				if !released[j] && tr.watermark() > offsets[j] {
					t.Fatalf("seed %d: watermark %d passed unreleased offset %d", seed, tr.watermark(), offsets[j])
				}
			}
		}
		if tr.outstanding() != 0 {
			t.Fatalf("seed %d: %d outstanding", seed, tr.outstanding())
		}
	}
}

func TestTrackerInterleaved(t *testing.T) {
	// Tracking continues while releases happen, as in the worker.
	rng := rand.New(rand.NewPCG(1, 1))
	tr := newTracker("t", 0, 0)
	var open []int64
	var offs = map[int64]int64{}
	next := int64(0)
	for range 20000 {
		if rng.IntN(2) == 0 || len(open) == 0 {
			s, _ := tr.track(next)
			offs[s] = next
			open = append(open, s)
			next++
			continue
		}
		k := rng.IntN(len(open))
		s := open[k]
		open = append(open[:k], open[k+1:]...)
		tr.release(s)
		low := next
		for _, o := range open {
			low = min(low, offs[o])
		}
		if tr.watermark() != low {
			t.Fatalf("watermark %d, want %d", tr.watermark(), low)
		}
	}
}

func TestTrackerDuplicateDelivery(t *testing.T) {
	tr := newTracker("t", 0, 10)
	if _, ok := tr.track(10); !ok {
		t.Fatal("first track refused")
	}
	if _, ok := tr.track(10); ok {
		t.Fatal("the same offset tracked twice")
	}
	if _, ok := tr.track(9); ok {
		t.Fatal("an older offset tracked")
	}
}

func TestTrackerDoubleReleasePanics(t *testing.T) {
	tr := newTracker("t", 0, 0)
	s, _ := tr.track(0)
	tr.release(s)
	defer func() {
		if recover() == nil {
			t.Fatal("double release did not panic")
		}
	}()
	tr.release(s)
}

func TestRecordAckReleasesAfterAllMembers(t *testing.T) {
	tr := newTracker("t", 0, 0)
	s, _ := tr.track(0)
	a := newRecordAck(tr, s, nil, nil, 3)
	a.Done()
	a.Done()
	if tr.watermark() != 0 {
		t.Fatal("released before every member settled")
	}
	a.Done()
	if tr.watermark() != 1 {
		t.Fatalf("watermark %d after all members settled", tr.watermark())
	}
}

func BenchmarkTrackRelease(b *testing.B) {
	tr := newTracker("t", 0, 0)
	const window = 1024
	seqs := make([]int64, 0, window)
	b.ReportAllocs()
	off := int64(0)
	for b.Loop() {
		s, _ := tr.track(off)
		off++
		seqs = append(seqs, s)
		if len(seqs) == window {
			for i := len(seqs) - 1; i >= 0; i-- { // release newest first: the worst order
				tr.release(seqs[i])
			}
			seqs = seqs[:0]
		}
	}
}

// TestRecordAckSource checks that a dead letter gets its source record's
// key and offset back from the compact ack, for every way a key is kept.
func TestRecordAckSource(t *testing.T) {
	tr := newTracker("t", 3, 100)
	h := wire.Header{Action: event.Add, Partner: "p", CohortID: "c1", CohortName: "n"}
	cases := []struct {
		name string
		key  []byte
		ev   *event.Event
		uid  string
		want []byte
		kind keyKind
	}{
		{"null key", nil, &event.Event{CohortID: "c1", UIDs: []string{"u1"}}, "u1", nil, keyNull},
		{"cohort key", []byte("c1"), &event.Event{CohortID: "c1", UIDs: []string{"u1", "u2"}}, "u2", []byte("c1"), keyCohort},
		{"uid key", []byte("u1"), &event.Event{CohortID: "c1", UIDs: []string{"u1"}}, "u1", []byte("u1"), keyUID},
		// A bulk record keyed by one of its uids: the key is not the
		// rejected member's, so it is kept.
		{"bulk uid key", []byte("u1"), &event.Event{CohortID: "c1", UIDs: []string{"u1", "u2"}}, "u2", []byte("u1"), keyOther},
		{"other key", []byte("tenant-7"), &event.Event{CohortID: "c1", UIDs: []string{"u1"}}, "u1", []byte("tenant-7"), keyOther},
		{"empty key", []byte{}, &event.Event{CohortID: "c1", UIDs: []string{"u1"}}, "u1", []byte{}, keyOther},
		{"invalid record", []byte("k"), nil, "", []byte("k"), keyOther},
	}
	for i, c := range cases {
		offset := int64(100 + 2*i)
		seq, ok := tr.track(offset)
		if !ok {
			t.Fatalf("%s: not tracked", c.name)
		}
		ack := newRecordAck(tr, seq, c.key, c.ev, 1)
		ra, gotOffset, key, ok := source(ack, h, c.uid)
		if !ok || ra.key != c.kind {
			t.Fatalf("%s: source ok=%v kind=%v, want kind %v", c.name, ok, ra.key, c.kind)
		}
		if gotOffset != offset {
			t.Errorf("%s: offset %d, want %d", c.name, gotOffset, offset)
		}
		if (key == nil) != (c.want == nil) || string(key) != string(c.want) {
			t.Errorf("%s: key %q (nil %v), want %q (nil %v)", c.name, key, key == nil, c.want, c.want == nil)
		}
	}
	if _, _, _, ok := source(nopAck{}, h, "u"); ok {
		t.Error("source accepted an ack of another kind")
	}
}

type nopAck struct{}

func (nopAck) Done() {}

// TestTrackerCarry: a replan carries the offsets settled past the
// watermark, up to the first record not settled that has several members
// (it may be settled in part: the records after it must be read again), and
// the carried offsets the reader did not reach.
func TestTrackerCarry(t *testing.T) {
	tr := newTracker("t", 0, 10)
	seqs := map[int64]int64{}
	for _, off := range []int64{10, 11, 12, 13, 14, 15} {
		seqs[off], _ = tr.track(off)
	}
	for _, off := range []int64{11, 12, 14, 15} {
		tr.release(seqs[off])
	}
	if got := tr.carry(nil); !slices.Equal(got, []int64{11, 12, 14, 15}) {
		t.Fatalf("carry = %v, want [11 12 14 15]", got)
	}
	if got := tr.carry(func(o int64) bool { return o != 12 }); !slices.Equal(got, []int64{11, 14, 15}) {
		t.Fatalf("carry(keep) = %v, want [11 14 15]", got)
	}
	tr.markMulti(seqs[13]) // unsettled, two members: the carry stops there
	if got := tr.carry(nil); !slices.Equal(got, []int64{11, 12}) {
		t.Fatalf("carry past a record with several members not settled = %v, want [11 12]", got)
	}
	tr.release(seqs[13]) // settled: no stop any more
	if got := tr.carry(nil); !slices.Equal(got, []int64{11, 12, 13, 14, 15}) {
		t.Fatalf("carry once it settled = %v, want [11 12 13 14 15]", got)
	}

	// The next epoch: a reader that stops before 15 hands 15 on again.
	next := newTracker("t", 0, 10)
	next.done = []int64{11, 12, 14, 15}
	for _, off := range []int64{10, 11, 12, 13} {
		seq, _ := next.track(off)
		if d := next.settledDone(off); d != (off == 11 || off == 12) {
			t.Fatalf("settledDone(%d) = %v", off, d)
		}
		if off != 10 {
			next.release(seq)
		}
	}
	if got := next.carry(nil); !slices.Equal(got, []int64{11, 12, 13, 14, 15}) {
		t.Fatalf("next epoch's carry = %v, want [11 12 13 14 15]", got)
	}
}
