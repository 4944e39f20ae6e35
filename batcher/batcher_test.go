package batcher_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// ack counts Done calls per record.
type ack struct {
	mu   *sync.Mutex
	done map[int]int
	id   int
}

func (a ack) Done() {
	a.mu.Lock()
	a.done[a.id]++
	a.mu.Unlock()
}

type acks struct {
	mu   sync.Mutex
	done map[int]int
	next int
}

func newAcks() *acks { return &acks{done: map[int]int{}} }

func (a *acks) new() (batcher.Ack, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.next++
	return ack{&a.mu, a.done, a.next}, a.next
}

func (a *acks) count(id int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.done[id]
}

func (a *acks) total() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, c := range a.done {
		if c != 1 {
			panic(fmt.Sprintf("ack done %d times", c))
		}
		n += c
	}
	return n
}

type sent struct {
	at  time.Time
	req wire.Request
}

// fakeSink records requests. With hold set, each Send blocks until release
// is called for it; reject maps a uid to a rejection reason.
type fakeSink struct {
	mu       sync.Mutex
	sent     []sent
	hold     bool
	gates    []chan error
	inFlight map[string]int
	maxPer   int
	maxAll   int
	cur      int
	reject   map[string]string
	err      error
}

func (s *fakeSink) Send(ctx context.Context, req wire.Request) ([]wire.Rejection, error) {
	s.mu.Lock()
	if s.inFlight == nil {
		s.inFlight = map[string]int{}
	}
	s.inFlight[req.CohortID]++
	s.maxPer = max(s.maxPer, s.inFlight[req.CohortID])
	s.cur++
	s.maxAll = max(s.maxAll, s.cur)
	s.sent = append(s.sent, sent{time.Now(), req})
	var gate chan error
	if s.hold {
		gate = make(chan error, 1)
		s.gates = append(s.gates, gate)
	}
	err := s.err
	s.mu.Unlock()
	if gate != nil {
		select {
		case err = <-gate:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inFlight[req.CohortID]--
	s.cur--
	if err != nil {
		return nil, err
	}
	var rej []wire.Rejection
	for _, u := range req.UIDs {
		if r, ok := s.reject[u]; ok {
			rej = append(rej, wire.Rejection{UID: u, Reason: r})
		}
	}
	return rej, nil
}

// releaseAll lets every held Send return err.
func (s *fakeSink) releaseAll(err error) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.gates)
	for _, g := range s.gates {
		g <- err
	}
	s.gates = nil
	return n
}

func (s *fakeSink) requests() []sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sent(nil), s.sent...)
}

type deadLetters struct {
	mu  sync.Mutex
	got []batcher.Rejected
}

func (d *deadLetters) write(_ context.Context, r []batcher.Rejected) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, r...)
	for _, x := range r {
		for _, a := range x.Acks {
			a.Done()
		}
	}
	return nil
}

func hdr(cohort string, a event.Action) wire.Header {
	return wire.Header{Action: a, Partner: "p", CohortID: cohort, CohortName: "name-" + cohort}
}

type harness struct {
	t    *testing.T
	b    *batcher.Batcher
	sink *fakeSink
	dl   *deadLetters
	acks *acks
	stop func()
}

func start(t *testing.T, cfg batcher.Config) *harness {
	t.Helper()
	h := &harness{t: t, sink: &fakeSink{}, dl: &deadLetters{}, acks: newAcks()}
	if cfg.Sink == nil {
		cfg.Sink = h.sink
	} else {
		h.sink = cfg.Sink.(*fakeSink)
	}
	cfg.DeadLetter = h.dl.write
	b, err := batcher.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.b = b
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	h.stop = func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	}
	return h
}

func (h *harness) add(cohort string, a event.Action, uid string) int {
	h.t.Helper()
	ak, id := h.acks.new()
	if err := h.b.Add(context.Background(), []batcher.Change{{Header: hdr(cohort, a), UID: uid, Ack: ak}}); err != nil {
		h.t.Fatal(err)
	}
	return id
}

func TestWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, batcher.Config{Limits: batcher.Limits{Window: 5 * time.Second}})
		defer h.stop()
		t0 := time.Now()
		h.add("c1", event.Add, "u1")
		time.Sleep(4 * time.Second)
		h.add("c1", event.Add, "u2")
		synctest.Wait()
		if n := len(h.sink.requests()); n != 0 {
			t.Fatalf("sent %d requests before the window", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		reqs := h.sink.requests()
		if len(reqs) != 1 {
			t.Fatalf("want 1 request at the window, got %d", len(reqs))
		}
		if got := reqs[0].at.Sub(t0); got != 5*time.Second {
			t.Fatalf("sent after %v, want 5s (window counts from the first event)", got)
		}
		if got := reqs[0].req.UIDs; len(got) != 2 || got[0] != "u1" || got[1] != "u2" {
			t.Fatalf("members %v", got)
		}
		if h.acks.total() != 2 {
			t.Fatalf("acks %d, want 2", h.acks.total())
		}
		if h.b.Pending() != 0 {
			t.Fatalf("pending %d", h.b.Pending())
		}
	})
}

// TestBytesExact fills batches with uids of random lengths and checks that
// every body is within MaxBytes, and that a batch was closed only because
// the next member would not have fit.
func TestBytesExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxBytes = 2000
		h := start(t, batcher.Config{Limits: batcher.Limits{MaxBytes: maxBytes, Window: time.Hour}})
		defer h.stop()
		rng := rand.New(rand.NewPCG(1, 2))
		var uids []string
		for i := range 3000 {
			u := fmt.Sprintf("%d-%s", i, string(make([]byte, rng.IntN(40)))) // NULs escape to 6 bytes each
			uids = append(uids, u)
			h.add("c1", event.Add, u)
		}
		synctest.Wait()
		reqs := h.sink.requests()
		if len(reqs) < 10 {
			t.Fatalf("only %d requests", len(reqs))
		}
		next := 0
		for i, r := range reqs {
			size := len(wire.AppendBody(nil, r.req))
			if size > maxBytes {
				t.Fatalf("request %d is %d bytes > %d", i, size, maxBytes)
			}
			next += len(r.req.UIDs)
			if next < len(uids) {
				withNext := r.req
				withNext.UIDs = append(append([]string(nil), r.req.UIDs...), uids[next])
				if wire.Size(withNext) <= maxBytes {
					t.Fatalf("request %d closed at %d bytes though the next member fit", i, size)
				}
			}
		}
	})
}

func TestExactlyMaxBytesBody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h0 := hdr("c1", event.Add)
		// Choose MaxBytes so that two members fill the body exactly.
		one := wire.Request{Header: h0, UIDs: []string{"aaaaaaaaaa", "bbbbbbbbbb"}}
		maxBytes := wire.Size(one)
		h := start(t, batcher.Config{Limits: batcher.Limits{MaxBytes: maxBytes, Window: time.Hour}})
		defer h.stop()
		h.add("c1", event.Add, "aaaaaaaaaa")
		h.add("c1", event.Add, "bbbbbbbbbb")
		synctest.Wait()
		reqs := h.sink.requests()
		if len(reqs) != 1 || len(wire.AppendBody(nil, reqs[0].req)) != maxBytes {
			t.Fatalf("want one request of exactly %d bytes, got %d requests", maxBytes, len(reqs))
		}
		// One byte less: the second member no longer fits.
		h2 := start(t, batcher.Config{Limits: batcher.Limits{MaxBytes: maxBytes - 1, Window: time.Hour}})
		defer h2.stop()
		h2.add("c1", event.Add, "aaaaaaaaaa")
		h2.add("c1", event.Add, "bbbbbbbbbb")
		synctest.Wait()
		if reqs := h2.sink.requests(); len(reqs) != 1 || len(reqs[0].req.UIDs) != 1 {
			t.Fatalf("with MaxBytes-1 the first batch must close holding one member; got %+v", reqs)
		}
	})
}

func TestMaxMembers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, batcher.Config{Limits: batcher.Limits{MaxMembers: 3, Window: time.Hour}})
		defer h.stop()
		for i := range 7 {
			h.add("c1", event.Add, fmt.Sprint("u", i))
		}
		synctest.Wait()
		reqs := h.sink.requests()
		if len(reqs) != 2 || len(reqs[0].req.UIDs) != 3 || len(reqs[1].req.UIDs) != 3 {
			t.Fatalf("want two requests of 3, got %d", len(reqs))
		}
		if h.b.Pending() != 1 {
			t.Fatalf("pending %d, want 1", h.b.Pending())
		}
	})
}

func TestCompaction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, batcher.Config{Limits: batcher.Limits{Window: time.Second}})
		defer h.stop()
		a1 := h.add("c1", event.Add, "u")
		r1 := h.add("c1", event.Remove, "u")
		a2 := h.add("c1", event.Add, "u")
		a3 := h.add("c1", event.Add, "u") // repeat rides along
		h.add("c1", event.Add, "v")
		r2 := h.add("c1", event.Remove, "w")
		if h.b.Pending() != 3 {
			t.Fatalf("pending %d, want 3 (u, v, w)", h.b.Pending())
		}
		time.Sleep(time.Second)
		synctest.Wait()
		reqs := h.sink.requests()
		var adds, removes []string
		for _, r := range reqs {
			if r.req.Action == event.Add {
				adds = append(adds, r.req.UIDs...)
			} else {
				removes = append(removes, r.req.UIDs...)
			}
		}
		if fmt.Sprint(adds) != "[u v]" || fmt.Sprint(removes) != "[w]" {
			t.Fatalf("adds %v removes %v; want [u v] and [w]", adds, removes)
		}
		for _, id := range []int{a1, r1, a2, a3, r2} {
			if h.acks.count(id) != 1 {
				t.Fatalf("record %d acked %d times", id, h.acks.count(id))
			}
		}
	})
}

// TestCompactionAcrossFlush checks that a change arriving while an older
// change of the same uid is in flight is sent after it, not merged into it.
func TestCompactionAcrossFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &fakeSink{hold: true}
		h := start(t, batcher.Config{Limits: batcher.Limits{Window: time.Second}, Sink: sink})
		defer h.stop()
		a1 := h.add("c1", event.Add, "u")
		time.Sleep(time.Second)
		synctest.Wait() // add u in flight
		r1 := h.add("c1", event.Remove, "u")
		a2 := h.add("c1", event.Add, "u")
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := len(sink.requests()); n != 1 {
			t.Fatalf("%d requests while the first is in flight; want 1", n)
		}
		if h.acks.count(a1) != 0 {
			t.Fatal("acked before acceptance")
		}
		sink.releaseAll(nil)
		synctest.Wait()
		reqs := sink.requests()
		if len(reqs) != 2 || reqs[1].req.Action != event.Add || fmt.Sprint(reqs[1].req.UIDs) != "[u]" {
			t.Fatalf("second request %+v; want add [u] (the remove was superseded)", reqs)
		}
		if h.acks.count(a1) != 1 || h.acks.count(r1) != 0 || h.acks.count(a2) != 0 {
			t.Fatal("only the accepted batch's records may be acked")
		}
		sink.releaseAll(nil)
		synctest.Wait()
		if h.acks.count(r1) != 1 || h.acks.count(a2) != 1 {
			t.Fatal("the superseded remove must be acked with the add that replaced it")
		}
	})
}

func TestOneInFlightPerCohortInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &fakeSink{hold: true}
		h := start(t, batcher.Config{Limits: batcher.Limits{Window: time.Second, MaxMembers: 2, MaxInFlight: 8}, Sink: sink})
		defer h.stop()
		for i := range 20 {
			for _, c := range []string{"c1", "c2", "c3"} {
				a := event.Add
				if i%3 == 0 {
					a = event.Remove
				}
				h.add(c, a, fmt.Sprint("u", i))
			}
		}
		for range 100 {
			time.Sleep(time.Second)
			synctest.Wait()
			if sink.releaseAll(nil) == 0 && h.b.Pending() == 0 {
				break
			}
		}
		if sink.maxPer != 1 {
			t.Fatalf("max in flight per cohort %d, want 1", sink.maxPer)
		}
		if sink.maxAll != 3 {
			t.Fatalf("max in flight overall %d, want 3 (one per cohort)", sink.maxAll)
		}
		// Per cohort, members arrive in read order within each action.
		last := map[string]int{}
		for _, r := range sink.requests() {
			for _, u := range r.req.UIDs {
				var n int
				fmt.Sscanf(u, "u%d", &n)
				k := r.req.CohortID + string(r.req.Action)
				if prev, ok := last[k]; ok && n <= prev {
					t.Fatalf("cohort %s: %s sent after u%d", k, u, prev)
				}
				last[k] = n
			}
		}
		if h.acks.total() != 60 {
			t.Fatalf("acked %d of 60", h.acks.total())
		}
	})
}

func TestMaxInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &fakeSink{hold: true}
		h := start(t, batcher.Config{Limits: batcher.Limits{Window: time.Second, MaxInFlight: 2}, Sink: sink})
		defer h.stop()
		for c := range 5 {
			h.add(fmt.Sprint("c", c), event.Add, "u")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n := len(sink.requests()); n != 2 {
			t.Fatalf("%d in flight, want MaxInFlight=2", n)
		}
		for range 5 {
			sink.releaseAll(nil)
			synctest.Wait()
		}
		if n := len(sink.requests()); n != 5 {
			t.Fatalf("%d sent, want 5", n)
		}
	})
}

// TestLongestWaitingFirst: with a send slot free only now and then, the
// batch that has been due the longest goes first.
func TestLongestWaitingFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &fakeSink{hold: true}
		h := start(t, batcher.Config{Limits: batcher.Limits{Window: time.Second, MaxMembers: 2, MaxInFlight: 1}, Sink: sink})
		defer h.stop()
		h.add("Z", event.Add, "u1")
		h.add("Z", event.Add, "u2") // full: sent at once, and held
		h.add("A", event.Add, "u")  // due at 1s (window)
		time.Sleep(500 * time.Millisecond)
		h.add("C", event.Add, "u") // due at 1.5s (window)
		h.add("B", event.Add, "u1")
		time.Sleep(100 * time.Millisecond)
		h.add("B", event.Add, "u2") // full: due at 0.6s
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := len(sink.requests()); n != 1 {
			t.Fatalf("%d requests with MaxInFlight=1", n)
		}
		var order []string
		for range 3 {
			sink.releaseAll(nil)
			synctest.Wait()
			reqs := sink.requests()
			order = append(order, reqs[len(reqs)-1].req.CohortID)
		}
		if fmt.Sprint(order) != "[B A C]" {
			t.Fatalf("order %v, want [B A C]: the batch due longest goes first", order)
		}
		sink.releaseAll(nil)
	})
}

// TestDueBatchAbsorbsWhileSlotsAreBusy: a due batch waiting for a send
// slot keeps taking members.
func TestDueBatchAbsorbsWhileSlotsAreBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &fakeSink{hold: true}
		h := start(t, batcher.Config{Limits: batcher.Limits{Window: time.Second, MaxInFlight: 1}, Sink: sink})
		defer h.stop()
		h.add("Z", event.Add, "u1")
		time.Sleep(time.Second) // Z is sent, and held
		h.add("c1", event.Add, "u1")
		time.Sleep(3 * time.Second) // due, no slot
		h.add("c1", event.Add, "u2")
		h.add("c1", event.Add, "u3")
		sink.releaseAll(nil)
		synctest.Wait()
		reqs := sink.requests()
		if len(reqs) != 2 || reqs[1].req.CohortID != "c1" || len(reqs[1].req.UIDs) != 3 {
			t.Fatalf("want Z, then one c1 request with 3 members, got %+v", reqs)
		}
		sink.releaseAll(nil)
	})
}

func TestBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &fakeSink{hold: true}
		h := start(t, batcher.Config{Limits: batcher.Limits{Window: time.Second, MaxPending: 10}, Sink: sink})
		defer h.stop()
		for i := range 10 {
			h.add("c1", event.Add, fmt.Sprint("u", i))
		}
		added := make(chan struct{})
		go func() {
			h.add("c1", event.Add, "u10")
			close(added)
		}()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		select {
		case <-added:
			t.Fatal("Add did not block at MaxPending")
		default:
		}
		if h.b.Pending() != 10 {
			t.Fatalf("pending %d", h.b.Pending())
		}
		sink.releaseAll(nil)
		synctest.Wait()
		select {
		case <-added:
		default:
			t.Fatal("Add still blocked after the batch was accepted")
		}
		// Add gives up with ctx.
		for i := range 9 {
			h.add("c2", event.Add, fmt.Sprint("u", i))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ak, _ := h.acks.new()
		err := h.b.Add(ctx, []batcher.Change{{Header: hdr("c3", event.Add), UID: "x", Ack: ak}})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Add under backpressure with ended ctx: %v", err)
		}
		sink.releaseAll(nil)
		synctest.Wait()
		sink.releaseAll(nil)
	})
}

func TestRevokeDropsPendingAndAwaitsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &fakeSink{hold: true}
		h := start(t, batcher.Config{Limits: batcher.Limits{Window: time.Second}, Sink: sink})
		defer h.stop()
		inflight := h.add("c1", event.Add, "u1")
		time.Sleep(time.Second)
		synctest.Wait()
		dropped := h.add("c1", event.Add, "u2")
		h.add("c2", event.Remove, "u3")
		revoked := make(chan error, 1)
		go func() { revoked <- h.b.Revoke(context.Background()) }()
		synctest.Wait()
		select {
		case <-revoked:
			// The fake sink returns at once when its ctx is cancelled:
			// Revoke returns after that attempt finished.
		default:
			t.Fatal("Revoke did not return after the in-flight send ended")
		}
		if h.b.Pending() != 0 || h.b.InFlight() != 0 {
			t.Fatalf("pending %d in flight %d after revoke", h.b.Pending(), h.b.InFlight())
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := len(sink.requests()); n != 1 {
			t.Fatalf("%d requests: dropped changes were sent after revoke", n)
		}
		if h.acks.count(inflight) != 0 || h.acks.count(dropped) != 0 {
			t.Fatal("revoked changes must not be acked")
		}
		// The batcher keeps working for the next generation.
		h.add("c1", event.Add, "u9")
		time.Sleep(time.Second)
		synctest.Wait()
		sink.releaseAll(nil)
		synctest.Wait()
		if reqs := sink.requests(); len(reqs) != 2 || reqs[1].req.UIDs[0] != "u9" {
			t.Fatalf("after revoke: %+v", reqs)
		}
	})
}

func TestRejectedMembersAreDeadLettered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &fakeSink{reject: map[string]string{"bad": "400 uid invalid"}}
		h := start(t, batcher.Config{Limits: batcher.Limits{Window: time.Second}, Sink: sink})
		defer h.stop()
		good := h.add("c1", event.Add, "good")
		bad1 := h.add("c1", event.Remove, "bad")
		bad2 := h.add("c1", event.Add, "bad")
		time.Sleep(time.Second)
		synctest.Wait()
		if len(h.dl.got) != 1 || h.dl.got[0].UID != "bad" || len(h.dl.got[0].Acks) != 2 {
			t.Fatalf("dead letters %+v", h.dl.got)
		}
		for _, id := range []int{good, bad1, bad2} {
			if h.acks.count(id) != 1 {
				t.Fatalf("record %d acked %d times", id, h.acks.count(id))
			}
		}
	})
}

// A change too large for any request is the caller's to dead-letter (the
// consumer does, from the original record, with the reason too_large): Fits
// says so, and Add no longer dead-letters it itself. One added anyway goes
// in a batch of its own, so that no other member's body exceeds MaxBytes.
func TestTooLargeMemberIsSentAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, batcher.Config{Limits: batcher.Limits{MaxBytes: 300, Window: time.Second}})
		defer h.stop()
		big := string(make([]byte, 300))
		if h.b.Fits(hdr("c1", event.Add), big) || !h.b.Fits(hdr("c1", event.Add), "u") {
			t.Fatal("Fits is wrong")
		}
		before := h.add("c1", event.Add, "before")
		id := h.add("c1", event.Add, big)
		after := h.add("c1", event.Add, "after")
		if len(h.dl.got) != 0 {
			t.Fatalf("Add dead-lettered %+v: that is the caller's job", h.dl.got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		reqs := h.sink.requests()
		if len(reqs) != 3 || len(reqs[1].req.UIDs) != 1 || reqs[1].req.UIDs[0] != big {
			t.Fatalf("requests %d, want the big member alone between the others", len(reqs))
		}
		for _, r := range []sent{reqs[0], reqs[2]} {
			if wire.Size(r.req) > 300 {
				t.Fatalf("a body of %d bytes", wire.Size(r.req))
			}
		}
		for _, id := range []int{before, id, after} {
			if h.acks.count(id) != 1 {
				t.Fatalf("record %d acked %d times", id, h.acks.count(id))
			}
		}
	})
}

func TestFlushSendsEverythingNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, batcher.Config{Limits: batcher.Limits{Window: time.Hour}})
		defer h.stop()
		for c := range 3 {
			h.add(fmt.Sprint("c", c), event.Add, "u")
		}
		if err := h.b.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := len(h.sink.requests()); n != 3 || h.acks.total() != 3 {
			t.Fatalf("flush sent %d, acked %d", n, h.acks.total())
		}
	})
}

func TestSinkGivingUpIsFatal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &fakeSink{err: errors.New("gave up")}
		b, err := batcher.New(batcher.Config{Limits: batcher.Limits{Window: time.Second}, Sink: sink, DeadLetter: (&deadLetters{}).write})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- b.Run(context.Background()) }()
		a := newAcks()
		ak, id := a.new()
		if err := b.Add(context.Background(), []batcher.Change{{Header: hdr("c", event.Add), UID: "u", Ack: ak}}); err != nil {
			t.Fatal(err)
		}
		err = <-done
		if err == nil || errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want the sink's error", err)
		}
		if a.count(id) != 0 {
			t.Fatal("a failed batch must not be acked")
		}
	})
}
