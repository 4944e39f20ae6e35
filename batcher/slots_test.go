package batcher_test

import (
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// TestSlotsPerWorkspace: workspace A's batches are out and unsettled (as if
// waiting in the sink for A's permits) while B has due batches, due later
// than A's: B's are handed out all the same. A's cohorts due meanwhile are
// set aside, and come back in their due order as A's batches settle.
func TestSlotsPerWorkspace(t *testing.T) {
	c, err := batcher.NewCore(batcher.Limits{Window: time.Second, MaxInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	for i, co := range []string{"a1", "a2", "a3", "a4"} { // due at 1s, 1.1s, 1.2s, 1.3s
		c.Add(batcher.Change{Header: wsHdr("A", co, event.Add), UID: "u", Ack: &countAck{}}, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	for i, co := range []string{"b1", "b2", "b3"} { // due at 1.5s, 1.6s, 1.7s
		c.Add(batcher.Change{Header: wsHdr("B", co, event.Add), UID: "u", Ack: &countAck{}}, t0.Add(500*time.Millisecond+time.Duration(i)*100*time.Millisecond))
	}
	now := t0.Add(2 * time.Second) // all due
	got := nextAll(c, now)
	cohorts := func(bs []*batcher.Batch) (s []string) {
		for _, b := range bs {
			s = append(s, b.Header.CohortID)
		}
		return s
	}
	if g := cohorts(got); len(g) != 4 || g[0] != "a1" || g[1] != "a2" || g[2] != "b1" || g[3] != "b2" {
		t.Fatalf("handed out %v, want [a1 a2 b1 b2]: A's two out (unsettled) must not keep B's out", g)
	}
	if c.InFlight() != 4 {
		t.Fatalf("InFlight %d, want 4", c.InFlight())
	}
	if at, ok := c.NextDue(); ok {
		t.Fatalf("NextDue %v: want none while both workspaces have MaxInFlight out", at)
	}
	// One of A's settles: A's held cohort due the longest (a3) goes, not a4, not B's.
	c.Settle(got[1])
	if at, ok := c.NextDue(); !ok || at.After(now) {
		t.Fatalf("NextDue %v %v: want a3 due", at, ok)
	}
	if g := cohorts(nextAll(c, now)); len(g) != 1 || g[0] != "a3" {
		t.Fatalf("after a settle of A: handed out %v, want [a3]", g)
	}
	c.Settle(got[2]) // b1
	if g := cohorts(nextAll(c, now)); len(g) != 1 || g[0] != "b3" {
		t.Fatalf("after a settle of B: handed out %v, want [b3]", g)
	}
}

// TestSlotsMaxOut: MaxOut bounds the batches out of all workspaces
// together, whatever each one's MaxInFlight.
func TestSlotsMaxOut(t *testing.T) {
	c, err := batcher.NewCore(batcher.Limits{Window: time.Second, MaxInFlight: 2, MaxOut: 3})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	for _, ws := range []string{"A", "B", "C"} {
		for _, co := range []string{"1", "2"} {
			c.Add(batcher.Change{Header: wsHdr(ws, co, event.Add), UID: "u", Ack: &countAck{}}, t0)
		}
	}
	got := nextAll(c, t0.Add(time.Second))
	if len(got) != 3 {
		t.Fatalf("%d out, want MaxOut=3", len(got))
	}
	c.Settle(got[0])
	if n := len(nextAll(c, t0.Add(time.Second))); n != 1 {
		t.Fatalf("%d handed out after a settle, want 1", n)
	}
}

// TestSlotsRevokeWhileHeld: a Revoke while a workspace has cohorts held
// drops them with the rest, and the workspace's slots work on after it.
func TestSlotsRevokeWhileHeld(t *testing.T) {
	c, err := batcher.NewCore(batcher.Limits{Window: time.Second, MaxInFlight: 1})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	for _, co := range []string{"a1", "a2", "a3"} {
		c.Add(batcher.Change{Header: wsHdr("A", co, event.Add), UID: "u", Ack: &countAck{}}, t0)
	}
	now := t0.Add(2 * time.Second)
	got := nextAll(c, now) // a1 out; a2, a3 held
	if len(got) != 1 {
		t.Fatalf("%d out, want 1", len(got))
	}
	if n := c.Revoke(); n != 2 {
		t.Fatalf("Revoke dropped %d, want 2", n)
	}
	c.Settle(got[0])
	if c.Pending() != 0 || c.InFlight() != 0 {
		t.Fatalf("pending %d, in flight %d after Revoke and Settle", c.Pending(), c.InFlight())
	}
	if b := c.Next(now); b != nil {
		t.Fatalf("Next gave %s after Revoke", b.Header.CohortID)
	}
	c.Add(batcher.Change{Header: wsHdr("A", "a2", event.Add), UID: "v", Ack: &countAck{}}, now)
	c.Add(batcher.Change{Header: wsHdr("A", "a4", event.Add), UID: "v", Ack: &countAck{}}, now)
	later := now.Add(time.Second)
	b := c.Next(later)
	if b == nil || c.Next(later) != nil {
		t.Fatalf("want exactly one batch out (MaxInFlight 1), got %v", b)
	}
	c.Settle(b)
	if b = c.Next(later); b == nil {
		t.Fatal("the held cohort did not come back after the settle")
	}
}
