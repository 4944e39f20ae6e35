package ratelimit_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

// TestFleetCeiling: the fleet's ceiling does not shrink as replicas are
// added. With one replica busy and the others idle, the busy one sends at
// least 95% of the budget once the idle ones have lent their whole shares
// (reserves included, a minute after they went idle), with 6 and with 20
// replicas; then every replica turns busy at once (the idle lenders must
// not burst), and no 60-second window of arrivals holds more than the
// budget, with each request arriving anywhere up to the arrival slack
// after its permit.
func TestFleetCeiling(t *testing.T) {
	for _, c := range []struct {
		replicas, partitions int
		budget               float64
	}{
		{6, 12, 120},
		{6, 6, 300},
		{20, 20, 300},
		{20, 6, 300},
		{20, 20, 120},
	} {
		t.Run(fmt.Sprintf("%d-replicas-%d-partitions-%v", c.replicas, c.partitions, c.budget), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newSimFleet(t, c.budget, uint64(c.replicas))
				defer s.close()
				for i := range c.replicas {
					s.start(fmt.Sprint("r", i))
				}
				s.replicas[0].busy.Store(true)
				s.rebalance(c.partitions)
				time.Sleep(90 * time.Second)
				from := time.Now()
				time.Sleep(time.Minute)
				if n := s.count("r0", from, time.Now()); float64(n) < 0.95*c.budget {
					t.Fatalf("the busy replica sent %d in a minute beside %d idle ones, want >= %v", n, c.replicas-1, 0.95*c.budget)
				}
				for _, r := range s.replicas {
					r.busy.Store(true)
				}
				time.Sleep(2 * time.Minute)
				if got := busiest(s.arrivals()); float64(got) > c.budget {
					t.Fatalf("%d arrivals in one 60-second window, budget %v", got, c.budget)
				}
			})
		})
	}
}

// TestFleetReserveLentAfterAMinuteDrained: a replica that lent its whole
// share lends its reserve too, but only after a minute drained at the
// floor rate; while a loan it honours lends part of its reserve it borrows
// nothing, even when it turns busy and a peer offers a loan, so that it
// sends nothing while a borrower may still use its reserve.
func TestFleetReserveLentAfterAMinuteDrained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		board := &scriptBoard{}
		lim := ratelimit.NewLimiter(0)
		f := ratelimit.NewFleet(ratelimit.FleetConfig{Replica: "a", Budget: 300, Limiter: lim, Board: board})
		share := f.Rebalance(1, 2, 6)
		runFleet(t, f)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		defer func() { cancel(); <-done }()
		offer := atomic.Bool{}
		go func() { // b is busy; c, once asked to, lends a 50
			defer close(done)
			for ctx.Err() == nil {
				until := time.Now().Add(4 * time.Second).UnixMilli()
				recs := []ratelimit.Record{{Replica: "b", Generation: 1, Share: share, Demand: 300, Until: until}}
				if offer.Load() {
					recs = append(recs, ratelimit.Record{Replica: "c", Generation: 1, Share: share, Lent: map[string]float64{"a": 50}, Until: until})
				}
				board.set(recs...)
				time.Sleep(time.Second)
			}
		}()
		mostLent := func(from time.Time) float64 {
			board.mu.Lock()
			defer board.mu.Unlock()
			m := 0.0
			for _, r := range board.published {
				if !time.UnixMilli(r.At).Before(from) {
					m = max(m, r.Lent["b"])
				}
			}
			return m
		}
		time.Sleep(30 * time.Second)
		if got := mostLent(time.Now().Add(-15 * time.Second)); got > share {
			t.Fatalf("lent %v within its first minute idle, over its share %v", got, share)
		}
		time.Sleep(60 * time.Second)
		if got := mostLent(time.Now().Add(-5 * time.Second)); got <= share {
			t.Fatalf("lent at most %v after 90 s idle: not its reserve (share %v)", got, share)
		}
		// a turns busy, and c offers it a loan at once.
		waited := make(chan error, 1)
		go func() { waited <- lim.Wait(ctx) }()
		offer.Store(true)
		end := time.Now().Add(4*time.Second + time.Second) // its last record lending the reserve: Lease + Margin
		for time.Now().Before(end.Add(-time.Second)) {
			time.Sleep(200 * time.Millisecond)
			if r := lim.Rate(); r > 0.01 {
				t.Fatalf("rate %v while a loan it honours may lend its reserve", r)
			}
		}
		select {
		case err := <-waited:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no permit 10 s after its loans ended")
		}
		if r := lim.Rate(); r < share+50-1e-9 {
			t.Fatalf("rate %v once its loans ended, want its share %v and the 50 offered", r, share)
		}
	})
}
