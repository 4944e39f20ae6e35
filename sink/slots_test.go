package sink_test

// MAX_IN_FLIGHT is concurrent requests per replica (Config.MaxConcurrent):
// an attempt takes one of the slots after its permit, so that a request
// waiting for its workspace's permit holds none.

import (
	"context"
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
