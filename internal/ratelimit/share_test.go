package ratelimit_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

func TestShare(t *testing.T) {
	cases := []struct {
		rpm             float64
		assigned, total int
		want            float64
	}{
		{300, 6, 6, 300*60/61.0 - 1}, // 295.08, less 1, not rounded
		{300, 2, 6, 100*60/61.0 - 1}, // 98.36, less 1
		{300, 3, 7, 300*3/7.0*60/61 - 1},
		{300, 4, 7, 300*4/7.0*60/61 - 1},
		{300, 1, 1000, 0.3 * 60 / 61 / 2},
		{300, 0, 6, 300 / 1e6},
		{0, 2, 6, 0},
		{300, 2, 0, 300 / 1e6}, // the total is unknown: the smallest share, not the budget
		{300, 3, 2, 300 / 1e6}, // more assigned than the total: unknown too
	}
	for _, c := range cases {
		if got := ratelimit.Share(c.rpm, c.assigned, c.total); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("ratelimit.Share(%v, %d, %d) = %v, want %v", c.rpm, c.assigned, c.total, got, c.want)
		}
	}
	// The shares of any split never add up to more than the budget (a
	// replica with nothing assigned sends nothing).
	for total := 2; total <= 24; total++ {
		for a := 1; a < total; a++ {
			if sum := ratelimit.Share(300, a, total) + ratelimit.Share(300, total-a, total); sum > 300 {
				t.Fatalf("split %d/%d of %d: shares add up to %v", a, total-a, total, sum)
			}
		}
	}
}

// TestShareArrivals checks the budget where the API counts it: at arrival.
// Replicas take permits at their shares' spacing, each request arrives
// after a delay anywhere in [0, ratelimit.ArrivalSlack), and no 60-second window of
// arrivals may hold more than the fleet budget. (Shares without the slack
// fail this: a late first request and an early last one put one request
// more per replica in a window.)
func TestShareArrivals(t *testing.T) {
	const rpm, total = 300, 6
	for _, split := range [][]int{{6}, {3, 3}, {2, 2, 2}, {1, 2, 3}, {1, 1, 1, 1, 1, 1}} {
		for seed := range uint64(20) {
			rng := rand.New(rand.NewPCG(seed, uint64(len(split))))
			var arrivals []time.Duration
			for _, assigned := range split {
				spacing := ratelimit.Spacing(ratelimit.Share(rpm, assigned, total))
				grant := time.Duration(rng.Int64N(int64(spacing)))
				for ; grant < 10*time.Minute; grant += spacing {
					delay := time.Duration(rng.Int64N(int64(ratelimit.ArrivalSlack)))
					if rng.IntN(2) == 0 { // the extremes are the adversarial case
						delay = time.Duration(rng.IntN(2)) * (ratelimit.ArrivalSlack - 1)
					}
					arrivals = append(arrivals, grant+delay)
				}
			}
			slices.Sort(arrivals)
			busiest := 0
			for i, j := 0, 0; i < len(arrivals); i++ {
				for j < len(arrivals) && arrivals[j]-arrivals[i] < time.Minute {
					j++
				}
				busiest = max(busiest, j-i)
			}
			if busiest > rpm {
				t.Fatalf("split %v, seed %d: %d arrivals in one 60-second window, budget %d", split, seed, busiest, rpm)
			}
			if perMin := float64(len(arrivals)) / 10; perMin < 0.95*rpm {
				t.Fatalf("split %v, seed %d: %.1f requests/min, under 95%% of the budget", split, seed, perMin)
			}
		}
	}
}

// TestRebalanceStartsTwoIntervalsLate: after a rebalance the new share
// grants nothing for two of its intervals, then permits at its spacing.
func TestRebalanceStartsTwoIntervalsLate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := ratelimit.NewLimiter(300)
		if err := l.Wait(t.Context()); err != nil { // a permit of the old share
			t.Fatal(err)
		}
		start := time.Now()
		rpm := l.Rebalance(300, 3, 6) // 150 × 60/61 = 147.54, less 1
		if want := 150*60/61.0 - 1; rpm != want || l.RPM() != want {
			t.Fatalf("share %v, limiter %v, want %v", rpm, l.RPM(), want)
		}
		spacing := ratelimit.Spacing(rpm)
		got := permits(t, l, 3, start)
		want := []time.Duration{2 * spacing, 3 * spacing, 4 * spacing}
		if !slices.Equal(got, want) {
			t.Fatalf("permits at %v, want %v", got, want)
		}
		if rpm := l.Rebalance(0, 3, 6); rpm != 0 {
			t.Fatalf("unlimited budget: share %v", rpm)
		}
		before := time.Now()
		if err := l.Wait(t.Context()); err != nil || time.Since(before) != 0 {
			t.Fatalf("unlimited after rebalance: waited %v, err %v", time.Since(before), err)
		}
	})
}
