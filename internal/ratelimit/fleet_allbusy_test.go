package ratelimit_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"
)

// TestFleetAllBusy: the fleet's ceiling with every replica busy (issue 18
// item 9). Each case runs a fleet through random rebalances, idle spells
// (the idle replica lends, the others borrow) and one SIGKILL-like
// disappearance (the group notices 10 s later), then every replica stays
// busy: from two minutes on (the reserves are back a minute after the last
// loan or rebalance), the fleet sends at least 95% of the budget a minute
// (over three minutes). Over the whole
// run, no 60-second window of arrivals holds more than the budget, counted
// the strictest way an API could: every closed window [t, t+60s], each
// request arriving anywhere up to the arrival slack after its permit.
func TestFleetAllBusy(t *testing.T) {
	for _, c := range []allBusyCase{
		{6, 6, 120},
		{6, 12, 300},
		{20, 20, 300},
		{20, 20, 120},
	} {
		for seed := range uint64(allBusySeeds) {
			t.Run(fmt.Sprintf("%d-replicas-%d-partitions-%v-seed-%d", c.replicas, c.partitions, c.budget, seed), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) { runAllBusy(t, c, seed) })
			})
		}
	}
}

// allBusySeeds is how many seeds each case of TestFleetAllBusy runs.
var allBusySeeds = 2

type allBusyCase struct {
	replicas, partitions int
	budget               float64
}

// TestFleetAllBusyFromTheStart: every replica is busy from the start of a
// generation (a fleet restarted over a backlog). Each waits for its first
// permit (the late start) with no usage yet, and a replica at 13.75/min
// has a permit every 4.4 s, so most Ticks see none: neither is idleness.
// Read as idle, every replica lent its share to the others, which could
// not use it either (1 request in 3 minutes, 20 replicas at 300/min).
// From the second minute on, the fleet sends at least 85% of the budget
// each minute.
func TestFleetAllBusyFromTheStart(t *testing.T) {
	for _, c := range []allBusyCase{{6, 6, 120}, {20, 20, 300}} {
		t.Run(fmt.Sprintf("%d-replicas-%v", c.replicas, c.budget), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newSimFleet(t, c.budget, 1)
				defer s.close()
				for i := range c.replicas {
					s.start(fmt.Sprint("r", i)).busy.Store(true)
				}
				s.rebalance(c.partitions)
				time.Sleep(time.Minute)
				for minute := range 3 {
					from := time.Now()
					time.Sleep(time.Minute)
					sent := 0
					for _, r := range s.replicas {
						sent += s.count(r.name, from, time.Now())
					}
					if float64(sent) < 0.85*c.budget {
						t.Fatalf("minute %d: %d replicas, all busy, sent %d, want >= %v", minute+2, c.replicas, sent, 0.85*c.budget)
					}
				}
			})
		})
	}
}

func runAllBusy(t *testing.T, c allBusyCase, seed uint64) {
	s := newSimFleet(t, c.budget, seed)
	defer s.close()
	rng := rand.New(rand.NewPCG(seed, 11))
	for i := range c.replicas {
		s.start(fmt.Sprint("r", i)).busy.Store(true)
	}
	s.rebalance(c.partitions)
	ops := []string{"idle", "idle", "idle", "rebalance", "rebalance", "kill", "idle"}
	rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	for _, op := range ops {
		time.Sleep(time.Duration(5+rng.IntN(90)) * time.Second)
		switch op {
		case "idle": // it lends its share, the others borrow it, then it wants it back
			r := s.replicas[rng.IntN(len(s.replicas))]
			r.busy.Store(false)
			time.Sleep(time.Duration(5+rng.IntN(90)) * time.Second)
			r.busy.Store(true)
		case "kill": // gone at once, its lease and loans still counted until they end
			s.stop(s.replicas[rng.IntN(len(s.replicas))])
			time.Sleep(10 * time.Second)
			s.rebalance(c.partitions)
		default:
			s.rebalance(c.partitions)
		}
	}
	time.Sleep(2 * time.Minute)
	from := time.Now()
	time.Sleep(3 * time.Minute) // at 6/min, a replica sends 5 or 6 in a minute, as its phase falls
	sent := 0
	for _, r := range s.replicas {
		sent += s.count(r.name, from, time.Now())
	}
	if perMin := float64(sent) / 3; perMin < 0.95*c.budget {
		t.Errorf("%d replicas, all busy, sent %.1f a minute: %.3f of the budget %v, want >= 0.95",
			len(s.replicas), perMin, perMin/c.budget, c.budget)
	}
	got := busiestClosed(s.arrivals())
	t.Logf("%d replicas, all busy: %.1f a minute (%.3f of the budget); busiest closed 60-second window %d",
		len(s.replicas), float64(sent)/3, float64(sent)/3/c.budget, got)
	if float64(got) > c.budget {
		t.Errorf("%d arrivals in one closed 60-second window, budget %v", got, c.budget)
	}
}

// busiestClosed returns the most arrivals in any closed 60-second window
// [t, t+60s]: one more instant than a half-open one, so the strictest count
// an API could make.
func busiestClosed(arrivals []time.Duration) int {
	most := 0
	for i, j := 0, 0; i < len(arrivals); i++ {
		for j < len(arrivals) && arrivals[j]-arrivals[i] <= time.Minute {
			j++
		}
		most = max(most, j-i)
	}
	return most
}
