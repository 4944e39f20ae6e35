package consumer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// The model test drives the real batcher and offsets tracker with a random
// sequence of operations — produce, time passing, the API accepting the
// oldest request, a rebalance (revoke, then re-read from the last commit),
// a commit — and checks them against a simple reference: the fold of the
// log.
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

type modelSink struct {
	mu       sync.Mutex
	inflight []*modelReq
	api      map[[2]string]bool // (cohort, uid) -> member
	applied  int
}

type modelReq struct {
	req  wire.Request
	ctx  context.Context
	done chan bool // true: the API answered 200
}

// Send models the real sink: the attempt under way always completes — the
// API may apply it at any later moment, in any order with other requests —
// and only then does a fenced (cancelled) send return.
func (s *modelSink) Send(ctx context.Context, req wire.Request) ([]wire.Rejection, error) {
	r := &modelReq{req: req, ctx: ctx, done: make(chan bool, 1)}
	s.mu.Lock()
	s.inflight = append(s.inflight, r)
	s.mu.Unlock()
	if <-r.done && ctx.Err() == nil {
		return nil, nil
	}
	return nil, context.Canceled
}

func (s *modelSink) apply(r *modelReq) {
	for _, u := range r.req.UIDs {
		s.api[[2]string{r.req.CohortID, u}] = r.req.Action == event.Add
	}
	s.applied++
}

func (s *modelSink) remove(r *modelReq) {
	for i, x := range s.inflight {
		if x == r {
			s.inflight = append(s.inflight[:i], s.inflight[i+1:]...)
			return
		}
	}
}

// complete lets the API apply in-flight request i (modulo their number)
// and answer 200 — or, for a fenced request, sometimes lose it.
func (s *modelSink) complete(i int, apply bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.inflight) == 0 {
		return false
	}
	i %= len(s.inflight)
	r := s.inflight[i]
	s.remove(r)
	if apply || r.ctx.Err() == nil {
		s.apply(r)
	}
	r.done <- true
	return true
}

func (s *modelSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inflight)
}

func runModel(t *testing.T, ops []byte) {
	sink := &modelSink{api: map[[2]string]bool{}}
	b, err := batcher.New(batcher.Config{Window: time.Second, MaxMembers: 3, MaxInFlight: 2, Sink: sink,
		DeadLetter: func(context.Context, []batcher.Rejected) error { t.Error("unexpected dead letter"); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = b.Run(ctx) }()
	defer func() { cancel(); <-runDone }()

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
			if err := b.Add(context.Background(), []batcher.Change{{Header: h, UID: rec.uid, Ack: ack}}); err != nil {
				t.Fatal(err)
			}
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
		sink.mu.Lock()
		defer sink.mu.Unlock()
		for k, i := range last {
			if i < committed && sink.api[k] != (log[i].action == event.Add) {
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
			time.Sleep(time.Second)
			synctest.Wait()
		case 3: // the API answers one in-flight request, in any order
			sink.complete(int(op/6), true)
			synctest.Wait()
		case 4: // rebalance: fence, then a new generation from the last commit
			revoked := make(chan error, 1)
			go func() { revoked <- b.Revoke(context.Background()) }()
			synctest.Wait()
			// The fence waits for the attempts under way; they finish, and
			// some of them reach the API.
			for k := 0; sink.count() > 0; k++ {
				select {
				case err := <-revoked:
					revoked <- err
				default:
				}
				if len(revoked) > 0 {
					break
				}
				sink.complete(0, (int(op)+k)%2 == 0)
				synctest.Wait()
			}
			if err := <-revoked; err != nil {
				t.Fatal(err)
			}
			if b.Pending() != 0 || b.InFlight() != 0 {
				t.Fatalf("after revoke: pending %d in flight %d", b.Pending(), b.InFlight())
			}
			tr = newTracker("t", 0, committed)
			read = committed
			deliver()
		case 5:
			synctest.Wait()
			commit()
		}
	}
	// Drain: everything is eventually accepted.
	for range 10000 {
		time.Sleep(time.Second)
		synctest.Wait()
		for sink.complete(0, true) {
			synctest.Wait()
		}
		if b.Pending() == 0 && b.InFlight() == 0 {
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
		if sink.api[k] != v {
			t.Fatalf("%v: API has %v, the log says %v", k, sink.api[k], v)
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
		t.Run(fmt.Sprint(i), func(t *testing.T) { synctest.Test(t, func(t *testing.T) { runModel(t, s) }) })
	}
	// A few long pseudo-random sequences.
	for seed := range 30 {
		ops := make([]byte, 300)
		x := uint32(seed*7919 + 1)
		for i := range ops {
			x = x*1664525 + 1013904223
			ops[i] = byte(x >> 24)
		}
		t.Run(fmt.Sprint("random-", seed), func(t *testing.T) { synctest.Test(t, func(t *testing.T) { runModel(t, ops) }) })
	}
}

func FuzzModel(f *testing.F) {
	f.Add([]byte{0, 1, 0, 6, 7, 2, 3, 5, 0, 4, 3, 2, 3, 5})
	f.Add([]byte{0, 12, 18, 2, 3, 4, 0, 2, 5, 3, 3, 5, 4, 5})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 400 {
			ops = ops[:400]
		}
		synctest.Test(t, func(t *testing.T) { runModel(t, ops) })
	})
}
