package ratelimit_test

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

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
