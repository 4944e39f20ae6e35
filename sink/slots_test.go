package sink_test

// MAX_IN_FLIGHT is concurrent requests per replica (Config.MaxConcurrent):
// an attempt takes one of the slots after its permit, so that a request
// waiting for its workspace's permit holds none.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// countingLimiter gives a permit at once when open, never otherwise, and
// counts the permits it gave.
type countingLimiter struct {
	open    bool
	permits atomic.Int64
}

func (l *countingLimiter) Wait(ctx context.Context) error {
	if !l.open {
		<-ctx.Done()
		return ctx.Err()
	}
	l.permits.Add(1)
	return nil
}

func (l *countingLimiter) PauseUntil(time.Time) {}

// TestHTTPSlotsAfterThePermit: WS_A's Limiter never gives a permit, WS_B's
// does; with one HTTP slot, WS_A's Send waiting for its permit keeps none of
// it, and WS_B's four Sends go through one at a time: the API never has more
// than MaxConcurrent requests at once.
func TestHTTPSlotsAfterThePermit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "key-a", "WS_B", "key-b")
		lims := map[string]*countingLimiter{"WS_A": {}, "WS_B": {open: true}}
		var cur, most atomic.Int64
		e := newEnv(t, "mem", func(_ int, c call) reply {
			n := cur.Add(1)
			if n > most.Load() {
				most.Store(n)
			}
			hold := make(chan struct{})
			go func() { // the answer comes 1 s later
				time.Sleep(time.Second)
				cur.Add(-1)
				close(hold)
			}()
			return reply{status: 200, body: okBody, hold: hold}
		}, func(c *sink.Config) {
			c.Targets = reg.lookup
			c.Limiters = func(ws string) sink.Limiter { return lims[ws] }
			c.MaxConcurrent = 1
		})
		ctxA, cancelA := context.WithCancel(e.ctx())
		resA := e.goSend(ctxA, wsRequest("WS_A", "a1", event.Add, 2))
		synctest.Wait() // WS_A's Send waits for its permit
		start := time.Now()
		var res []<-chan sendResult
		for _, co := range []string{"b1", "b2", "b3", "b4"} {
			res = append(res, e.goSend(e.ctx(), wsRequest("WS_B", co, event.Add, 2)))
		}
		for i, r := range res {
			if got := <-r; got.err != nil {
				t.Fatalf("WS_B's Send %d: %v", i, got.err)
			}
		}
		if d := time.Since(start); d != 4*time.Second {
			t.Errorf("WS_B's four Sends took %v, want 4s (one 1 s request at a time)", d)
		}
		if n := most.Load(); n != 1 {
			t.Errorf("the API had %d requests at once, want at most MaxConcurrent=1", n)
		}
		if n := len(e.api.got()); n != 4 {
			t.Errorf("the API got %d requests, want WS_B's 4", n)
		}
		cancelA()
		if r := <-resA; r.err == nil {
			t.Error("WS_A's Send succeeded without a permit")
		}
	})
}

// TestHTTPSlotWaitFreshensThePermit: a permit that grew older than its
// maximum age while its attempt waited for an HTTP slot is taken anew
// before the request goes: the second Send, waiting 2 s behind the first,
// takes two permits.
func TestHTTPSlotWaitFreshensThePermit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := &countingLimiter{open: true}
		e := newEnv(t, "mem", func(int, call) reply {
			return reply{status: 200, body: okBody, sleep: 2 * time.Second}
		}, func(c *sink.Config) {
			c.Limiter = lim
			c.MaxConcurrent = 1
		})
		r1 := e.goSend(e.ctx(), request(2))
		synctest.Wait()
		r2 := e.goSend(e.ctx(), request(2))
		for _, r := range []<-chan sendResult{r1, r2} {
			if got := <-r; got.err != nil {
				t.Fatal(got.err)
			}
		}
		if n := lim.permits.Load(); n != 3 {
			t.Errorf("%d permits taken, want 3 (the second Send's first went stale waiting for the slot)", n)
		}
	})
}

// scheduledLimiter gives its first permits at once (now), then one every
// spacing from next; it counts the permits it gave.
type scheduledLimiter struct {
	mu      sync.Mutex
	now     int           // permits at once
	spacing time.Duration // then one every spacing
	next    time.Time     // the last permit's time; the next one is due a spacing later
	permits int
}

func (l *scheduledLimiter) Wait(ctx context.Context) error {
	l.mu.Lock()
	l.permits++
	if l.permits <= l.now {
		l.mu.Unlock()
		return nil
	}
	l.next = l.next.Add(l.spacing)
	at := l.next
	l.mu.Unlock()

	select {
	case <-time.After(time.Until(at)):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitWithin takes the next permit if it is due within d.
func (l *scheduledLimiter) WaitWithin(ctx context.Context, d time.Duration) (bool, error) {
	l.mu.Lock()
	if l.permits >= l.now && time.Until(l.next.Add(l.spacing)) > d {
		l.mu.Unlock()
		return false, nil
	}
	l.mu.Unlock()
	return true, l.Wait(ctx)
}

func (l *scheduledLimiter) PauseUntil(time.Time) {}

// plainLimiter hides a Limiter's WaitWithin.
type plainLimiter struct{ sink.Limiter }

// smallAndOpen returns an env with one HTTP slot whose API answers after
// answer: WS_S takes its permits from small (its WaitWithin hidden unless
// within), WS_B from an open Limiter, which it returns too.
func smallAndOpen(t *testing.T, small *scheduledLimiter, within bool, answer time.Duration) (*env, *countingLimiter) {
	reg := newTargets("WS_S", "key-s", "WS_B", "key-b")
	open := &countingLimiter{open: true}
	e := newEnv(t, "mem", func(int, call) reply {
		return reply{status: 200, body: okBody, sleep: answer}
	}, func(c *sink.Config) {
		c.Targets = reg.lookup
		c.Limiters = func(ws string) sink.Limiter {
			switch {
			case ws != "WS_S":
				return open
			case within:
				return small
			}
			return plainLimiter{small}
		}
		c.MaxConcurrent = 1
	})
	return e, open
}

// TestStalePermitRetakenWithoutTheSlot: a request whose permit went stale
// waiting for the HTTP slot does not wait for a far permit with the slot
// held. One slot; the API answers in 2 s. WS_S (a small budget: two permits
// at once, then one every 10 s) sends a1 and a2, then WS_B (an open budget)
// sends b1: a2 and b1 wait for a1's slot with their permits, and find them
// 2 s old when it frees. a2's next permit is 10 s away: it gives the slot
// back (its Limiter's WaitWithin says no, or it has none), and b1 takes a
// new permit at once and goes at 2 s, done at 4 s. Were a2 to wait for its
// permit with the slot held, b1 would go at 12 s (the convoy that held
// bench (h) at half its budgets).
func TestStalePermitRetakenWithoutTheSlot(t *testing.T) {
	for _, within := range []bool{false, true} {
		t.Run(fmt.Sprintf("WaitWithin=%v", within), func(t *testing.T) { staleRetakenWithoutTheSlot(t, within) })
	}
}

func staleRetakenWithoutTheSlot(t *testing.T, within bool) {
	synctest.Test(t, func(t *testing.T) {
		limA := &scheduledLimiter{now: 2, spacing: 10 * time.Second}
		e, limB := smallAndOpen(t, limA, within, 2*time.Second)
		start := time.Now()
		limA.next = start
		a1 := e.goSend(e.ctx(), wsRequest("WS_S", "a1", event.Add, 2))
		synctest.Wait() // a1 holds the slot
		a2 := e.goSend(e.ctx(), wsRequest("WS_S", "a2", event.Add, 2))
		synctest.Wait() // a2 waits for the slot, its permit taken
		b1 := e.goSend(e.ctx(), wsRequest("WS_B", "b1", event.Add, 2))
		got := map[string]sendResult{}
		for name, r := range map[string]<-chan sendResult{"a1": a1, "a2": a2, "b1": b1} {
			got[name] = <-r
			if got[name].err != nil {
				t.Fatalf("%s: %v", name, got[name].err)
			}
		}
		if d := got["b1"].at.Sub(start); d != 4*time.Second {
			t.Errorf("b1 done %v after the start, want 4s: it waited behind a2's permit", d)
		}
		if d := got["a2"].at.Sub(start); d != 12*time.Second {
			t.Errorf("a2 done %v after the start, want 12s (its new permit at 10 s, then 2 s on the wire)", d)
		}
		if n := limB.permits.Load(); n != 2 {
			t.Errorf("WS_B took %d permits, want 2 (its first went stale waiting for the slot)", n)
		}
		for _, c := range e.api.got() {
			if c.req.CohortID == "a2" {
				if d := c.at.Sub(start); d < 10*time.Second {
					t.Errorf("a2 reached the API %v after the start, before its new permit (10 s)", d)
				}
			}
		}
	})
}

// TestSmallBudgetNotStarvedBySlots: when the slots are the bottleneck, a
// request of a small budget still goes. One slot, answers in 1.4 s; four
// senders of WS_B (an open budget) send without a pause; WS_S has one
// permit at once, then one every 3 s, so the permits it takes are stale
// by the time the slot frees (1.2, 1.0, 0.8, 0.6 s after them). Its one
// Send is done within 10 s: after one renewal it waits for its next permit
// with the slot held (done at 8.4 s). Giving the slot back every time, it
// went only when a permit happened to come within permitMaxAge of a free
// slot (at 15 s, done at 16.8 s); with slower permits, never.
func TestSmallBudgetNotStarvedBySlots(t *testing.T) {
	for _, within := range []bool{false, true} {
		t.Run(fmt.Sprintf("WaitWithin=%v", within), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				limS := &scheduledLimiter{now: 1, spacing: 3 * time.Second}
				e, _ := smallAndOpen(t, limS, within, 1400*time.Millisecond)
				start := time.Now()
				limS.next = start
				stop := make(chan struct{})
				var senders sync.WaitGroup
				for i := range 4 {
					senders.Add(1)
					go func() {
						defer senders.Done()
						for n := 0; ; n++ {
							select {
							case <-stop:
								return
							default:
							}
							if _, err := e.client.Send(e.ctx(), wsRequest("WS_B", fmt.Sprintf("b%d-%d", i, n), event.Add, 2)); err != nil {
								t.Error(err)
								return
							}
						}
					}()
				}
				synctest.Wait() // WS_B's four Sends hold and queue for the slot
				rs := e.goSend(e.ctx(), wsRequest("WS_S", "s1", event.Add, 2))
				var got sendResult
				select {
				case got = <-rs:
				case <-time.After(60 * time.Second):
					close(stop)
					got = <-rs
					stop = nil
				}
				if stop != nil {
					close(stop)
				}
				senders.Wait()
				if got.err != nil {
					t.Fatal(got.err)
				}
				if d := got.at.Sub(start); d > 10*time.Second {
					t.Errorf("WS_S's Send done %v after the start, want within 10s: starved behind WS_B's", d)
				}
			})
		})
	}
}
