package consumer

import (
	"log/slog"
	"testing"
	"time"
)

// TestRebalanceLeaseUntil: a REBALANCE_IN_PROGRESS answer during the drain
// proves membership until the earlier of the session (restarted by that
// answer) and the rebalance's deadline (counted from the last good
// heartbeat), each less the lease's margins.
func TestRebalanceLeaseUntil(t *testing.T) {
	c := &Consumer{cfg: Config{SessionTimeout: 10 * time.Second, HeartbeatInterval: 3 * time.Second,
		RebalanceTimeout: 30 * time.Second}}
	t0 := time.Now()
	// Early in the rebalance: the session bounds it (10 - 3 - 1 = 6 s).
	if got, want := c.rebalanceLeaseUntil(t0.Add(5*time.Second), t0), t0.Add(11*time.Second); !got.Equal(want) {
		t.Errorf("early: %s after t0, want %s", got.Sub(t0), want.Sub(t0))
	}
	// Late: the rebalance timeout bounds it (30 - 3 - 1 = 26 s after t0).
	if got, want := c.rebalanceLeaseUntil(t0.Add(24*time.Second), t0), t0.Add(26*time.Second); !got.Equal(want) {
		t.Errorf("late: %s after t0, want %s", got.Sub(t0), want.Sub(t0))
	}
}

// TestAwaitDrain: the fence waits for the drain, stops waiting when the
// lease is lost or RebalanceTimeout passes, and does not wait at all when
// the term was already lost.
func TestAwaitDrain(t *testing.T) {
	c := &Consumer{cfg: Config{RebalanceTimeout: 2 * time.Second}}
	log := slog.New(slog.DiscardHandler)
	wait := func(h *handover, act func()) time.Duration {
		done := make(chan time.Duration)
		start := time.Now()
		go func() { c.awaitDrain(h, log); done <- time.Since(start) }()
		time.Sleep(50 * time.Millisecond)
		if act != nil {
			act()
		}
		return <-done
	}
	h := newHandover()
	if d := wait(h, func() { close(h.drained) }); d < 50*time.Millisecond || d > time.Second {
		t.Errorf("drained: returned after %s", d)
	}
	h = newHandover()
	if d := wait(h, h.loseTerm); d < 50*time.Millisecond || d > time.Second {
		t.Errorf("lost: returned after %s", d)
	}
	h = newHandover()
	if d := wait(h, nil); d < 2*time.Second {
		t.Errorf("timeout: returned after %s, before RebalanceTimeout", d)
	}
	h = newHandover()
	h.loseTerm()
	start := time.Now()
	c.awaitDrain(h, log)
	if d := time.Since(start); d > time.Second {
		t.Errorf("already lost: waited %s", d)
	}
}
