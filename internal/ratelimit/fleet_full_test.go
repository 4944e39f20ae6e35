package ratelimit_test

import (
	"context"
	"math"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

func TestFullShare(t *testing.T) {
	cases := []struct {
		rpm             float64
		assigned, total int
		want            float64
	}{
		{300, 1, 20, 15 * 60 / 61.0},
		{300, 2, 6, 100 * 60 / 61.0},
		{120, 1, 6, 20 * 60 / 61.0},
		{300, 3, 7, 128 * 60 / 61.0}, // 128.57: whole requests only
		{300, 1, 3, 100 * 60 / 61.0}, // 300/3 in floating point is 100 exactly, but 300*1/3 need not be
		{300, 1, 1000, 0},            // a share under two a minute keeps no reserve
		{300, 0, 6, 0},
		{300, 2, 0, 0}, // the total is unknown
		{0, 2, 6, 0},
	}
	for _, c := range cases {
		if got := ratelimit.FullShare(c.rpm, c.assigned, c.total); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("FullShare(%v, %d, %d) = %v, want %v", c.rpm, c.assigned, c.total, got, c.want)
		}
	}
	// Whole requests per 61 s that add up to at most the budget, and never
	// below the share: full replicas need no reserve, and running at full
	// never lowers a rate.
	for _, rpm := range []float64{120, 300, 299.5, 9000} {
		for total := 1; total <= 40; total++ {
			perWindow := 0.0
			for a := 1; a <= total; a++ {
				full := ratelimit.FullShare(rpm, a, total)
				if full == 0 {
					continue
				}
				if k := full * 61 / 60; math.Abs(k-math.Round(k)) > 1e-9 {
					t.Fatalf("FullShare(%v, %d, %d) = %v: %v requests per 61 s, not a whole number", rpm, a, total, full, k)
				}
				if share := ratelimit.Share(rpm, a, total); full < share {
					t.Fatalf("FullShare(%v, %d, %d) = %v under the share %v", rpm, a, total, full, share)
				}
			}
			for range total {
				perWindow += math.Round(ratelimit.FullShare(rpm, 1, total) * 61 / 60)
			}
			if perWindow > rpm {
				t.Fatalf("%d replicas with 1 of %d partitions each: %v requests per 61 s at full, budget %v", total, total, perWindow, rpm)
			}
		}
	}
}

// TestFleetFullShareRules: the rules of the full share (fleet_full.go),
// one replica against a scripted peer. It runs at its share for a minute
// after a rebalance and at its full share after; it leaves the full share
// as soon as a peer shows a spare, and takes no loan for a minute after
// (the peer's loan waits); once loans ended, it is back at full a minute
// later; turning idle, it leaves the full share and lends nothing for a
// minute, then lends.
func TestFleetFullShareRules(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		board := &scriptBoard{}
		lim := ratelimit.NewLimiter(0)
		f := ratelimit.NewFleet(ratelimit.FleetConfig{Replica: "a", Budget: 300, Limiter: lim, Board: board})
		share, full := f.Rebalance(1, 2, 6), ratelimit.FullShare(300, 2, 6)
		var busy, lends atomic.Bool
		busy.Store(true)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{}, 2)
		defer func() { cancel(); <-done; <-done }()
		go func() { // a's sends
			defer func() { done <- struct{}{} }()
			for ctx.Err() == nil {
				if !busy.Load() {
					time.Sleep(50 * time.Millisecond)
				} else if lim.Wait(ctx) != nil {
					return
				}
			}
		}()
		go func() { // b: busy, or idle lending a 50
			defer func() { done <- struct{}{} }()
			for ctx.Err() == nil {
				r := ratelimit.Record{Replica: "b", Generation: 1, Share: share, Demand: 300, Until: time.Now().Add(4 * time.Second).UnixMilli()}
				if lends.Load() {
					r.Demand, r.Lent = 0, map[string]float64{"a": 50}
				}
				board.set(r)
				time.Sleep(time.Second)
			}
		}()
		runFleet(t, f)
		rateIs := func(when string, want float64) {
			t.Helper()
			if got := lim.Rate(); math.Abs(got-want) > 1e-9 {
				t.Fatalf("%s: rate %v, want %v (share %v, full %v)", when, got, want, share, full)
			}
		}
		time.Sleep(55 * time.Second)
		rateIs("55 s after the rebalance", share)
		time.Sleep(10 * time.Second)
		rateIs("65 s after the rebalance", full)

		lends.Store(true)
		time.Sleep(3 * time.Second) // b's next record, then a's next step
		rateIs("a peer shows a spare", share)
		for range 56 {
			time.Sleep(time.Second)
			rateIs("within a minute of leaving the full share", share)
		}
		time.Sleep(5 * time.Second)
		rateIs("a minute after leaving the full share", share+50)

		lends.Store(false)
		time.Sleep(30 * time.Second)
		rateIs("30 s after the loan ended", share)
		time.Sleep(40 * time.Second)
		rateIs("70 s after the loan ended", full)

		// a turns idle while b needs more: a leaves full, lends nothing for a minute, then lends.
		busy.Store(false)
		idle := time.Now()
		time.Sleep(5 * time.Second) // its last permit, and its usage falling below its share
		if got := lim.Rate(); got >= full {
			t.Fatalf("idle: rate %v, still at full %v", got, full)
		}
		time.Sleep(55 * time.Second)
		for _, r := range board.of(1) {
			if time.UnixMilli(r.At).After(idle) && r.Lent["b"] > 0 {
				t.Fatalf("lent %v %v after it left the full share: within a minute", r.Lent["b"], time.UnixMilli(r.At).Sub(idle))
			}
		}
		time.Sleep(10 * time.Second)
		if r := board.of(1); r[len(r)-1].Lent["b"] <= 0 {
			t.Fatalf("lends nothing 67 s after it turned idle: %+v", r[len(r)-1])
		}
	})
}
