package consumer

import (
	"fmt"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// The model test drives the batcher's core (batcher.Core, with an explicit
// clock) and the offsets tracker with a random sequence of operations —
// produce, time passing, the API accepting an in-flight request (in any
// order), a rebalance (revoke, then re-read from the last commit), a
// commit — and checks them against a simple reference: the fold of the
// log. There are no goroutines: each sequence runs the same way every time.
//
// Safety, checked at every commit: for every (cohort, uid) whose last
// record lies below the committed offset, the API already holds that
// record's result; so a crash at any commit, followed by a re-read from
// it, loses nothing. Liveness, checked at the end: once everything is
// accepted, the API equals the fold of the log.

type modelRecord struct {
	cohort string
	uid    string
	action event.Action
}

// modelFlight is a batch the core gave out: the request under way.
type modelFlight struct {
	batch  *batcher.Batch
	fenced bool // revoked while under way: its answer no longer counts
}

type model struct {
	t        *testing.T
	core     *batcher.Core
	now      time.Time
	api      map[[2]string]bool // (cohort, uid) -> member
	inflight []*modelFlight
}

// dispatch takes every batch the core has due, as the Batcher's Run does.
func (m *model) dispatch() {
	for b := m.core.Next(m.now); b != nil; b = m.core.Next(m.now) {
		m.inflight = append(m.inflight, &modelFlight{batch: b})
	}
}

// complete ends in-flight request i (modulo their number): the API applies
// it and answers 200 — or, for a fenced request, applies it only if apply
// is set (it may have been lost), and the answer is not acknowledged, as
// the real sink's cancelled Send returns an error.
func (m *model) complete(i int, apply bool) bool {
	if len(m.inflight) == 0 {
		return false
	}
	i %= len(m.inflight)
	f := m.inflight[i]
	m.inflight = append(m.inflight[:i], m.inflight[i+1:]...)
	if apply || !f.fenced {
		req := f.batch.Request()
		for _, u := range req.UIDs {
			m.api[[2]string{req.CohortID, u}] = req.Action == event.Add
		}
	}
	if !f.fenced {
		f.batch.Acknowledge(nil)
	}
	m.core.Settle(f.batch)
	m.dispatch()
	return true
}

func runModel(t *testing.T, ops []byte) {
	core, err := batcher.NewCore(batcher.Limits{Window: time.Second, MaxMembers: 3, MaxInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	m := &model{t: t, core: core, now: time.Unix(1e9, 0), api: map[[2]string]bool{}}

	var log []modelRecord
	committed := int64(0)
	tr := newTracker("t", 0, 0)
	read := int64(0) // next offset the current generation reads
	deliver := func() {
		for ; read < int64(len(log)); read++ {
			rec := log[read]
			seq, ok := tr.track(read)
			if !ok {
				t.Fatalf("track(%d) refused", read)
			}
			ack := newRecordAck(tr, seq, nil, nil, 1)
			h := wire.Header{Action: rec.action, Partner: "p", CohortID: rec.cohort, CohortName: "n"}
			if core.Room() == 0 {
				t.Fatal("no room: MaxPending reached")
			}
			core.Add(batcher.Change{Header: h, UID: rec.uid, Ack: ack}, m.now)
			m.dispatch()
		}
	}
	commit := func() {
		w := tr.watermark()
		if w < committed {
			t.Fatalf("watermark %d went below the commit %d", w, committed)
		}
		committed = w
		last := map[[2]string]int64{}
		for i, r := range log {
			last[[2]string{r.cohort, r.uid}] = int64(i)
		}
		for k, i := range last {
			if i < committed && m.api[k] != (log[i].action == event.Add) {
				t.Fatalf("committed %d past record %d (%s %s %s) whose result the API does not hold", committed, i, log[i].action, k[0], k[1])
			}
		}
	}
	for i, op := range ops {
		switch op % 6 {
		case 0, 1: // produce
			log = append(log, modelRecord{cohort: fmt.Sprint("c", op/6%2), uid: fmt.Sprint("u", op/12%4),
				action: []event.Action{event.Add, event.Remove}[(int(op)+i)%2]})
			deliver()
		case 2:
			m.now = m.now.Add(time.Second)
			m.dispatch()
		case 3: // the API answers one in-flight request, in any order
			m.complete(int(op/6), true)
		case 4: // rebalance: fence, then a new generation from the last commit
			core.Revoke()
			for _, f := range m.inflight {
				f.fenced = true
			}
			// The fence waits for the attempts under way; they finish, and
			// some of them reach the API.
			for k := 0; m.complete(0, (int(op)+k)%2 == 0); k++ {
			}
			if core.Pending() != 0 || core.InFlight() != 0 {
				t.Fatalf("after revoke: pending %d in flight %d", core.Pending(), core.InFlight())
			}
			tr = newTracker("t", 0, committed)
			read = committed
			deliver()
		case 5:
			commit()
		}
	}
	// Drain: everything is eventually accepted.
	for range 10000 {
		m.now = m.now.Add(time.Second)
		m.dispatch()
		for m.complete(0, true) {
		}
		if core.Pending() == 0 && core.InFlight() == 0 {
			break
		}
	}
	commit()
	if committed != int64(len(log)) {
		t.Fatalf("committed %d of %d records after everything was accepted", committed, len(log))
	}
	want := map[[2]string]bool{}
	for _, r := range log {
		want[[2]string{r.cohort, r.uid}] = r.action == event.Add
	}
	for k, v := range want {
		if m.api[k] != v {
			t.Fatalf("%v: API has %v, the log says %v", k, m.api[k], v)
		}
	}
}

func TestModelSeeds(t *testing.T) {
	seeds := [][]byte{
		{0, 1, 0, 6, 7, 2, 3, 5, 0, 4, 3, 2, 3, 5},
		{0, 12, 18, 2, 3, 4, 0, 2, 5, 3, 3, 5, 4, 5},
		{1, 7, 13, 19, 2, 10, 16, 22, 4, 2, 3, 5, 3, 5, 28, 34, 2, 3, 3, 5},
	}
	for i, s := range seeds {
		t.Run(fmt.Sprint(i), func(t *testing.T) { runModel(t, s) })
	}
	// A few long pseudo-random sequences.
	for seed := range 30 {
		ops := make([]byte, 300)
		x := uint32(seed*7919 + 1)
		for i := range ops {
			x = x*1664525 + 1013904223
			ops[i] = byte(x >> 24)
		}
		t.Run(fmt.Sprint("random-", seed), func(t *testing.T) { runModel(t, ops) })
	}
}

func FuzzModel(f *testing.F) {
	f.Add([]byte{0, 1, 0, 6, 7, 2, 3, 5, 0, 4, 3, 2, 3, 5})
	f.Add([]byte{0, 12, 18, 2, 3, 4, 0, 2, 5, 3, 3, 5, 4, 5})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 400 {
			ops = ops[:400]
		}
		runModel(t, ops)
	})
}
