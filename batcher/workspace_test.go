package batcher_test

import (
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// wsHdr is hdr for the cohort of workspace ws.
func wsHdr(ws, cohort string, a event.Action) wire.Header {
	h := hdr(cohort, a)
	h.Workspace = ws
	return h
}

// nextAll takes every batch the Core gives at now.
func nextAll(c *batcher.Core, now time.Time) []*batcher.Batch {
	var out []*batcher.Batch
	for b := c.Next(now); b != nil; b = c.Next(now) {
		out = append(out, b)
	}
	return out
}

// Two workspaces' changes of the same cohort id and uid are two cohorts'
// changes: neither merges with nor supersedes the other, each batch goes
// with its own workspace, and both may be in flight at once.
func TestWorkspacesNeverShareACohort(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b event.Action
	}{
		{"same change", event.Add, event.Add},
		{"opposite changes", event.Add, event.Remove},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := batcher.NewCore(batcher.Limits{Window: time.Second, MaxInFlight: 4})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Unix(1000, 0)
			ackA, ackB := &countAck{}, &countAck{}
			c.Add(batcher.Change{Header: wsHdr("A", "c1", tc.a), UID: "u1", Ack: ackA}, now)
			c.Add(batcher.Change{Header: wsHdr("B", "c1", tc.b), UID: "u1", Ack: ackB}, now)
			if c.Compacted() != 0 || c.Pending() != 2 {
				t.Fatalf("compacted %d, pending %d: want 0 and 2 (the workspaces' changes are unrelated)", c.Compacted(), c.Pending())
			}
			got := nextAll(c, now.Add(time.Second))
			if len(got) != 2 {
				t.Fatalf("%d batches in flight, want 2 (one per workspace's cohort)", len(got))
			}
			seen := map[string]bool{}
			for _, b := range got {
				r := b.Request()
				if len(r.UIDs) != 1 || r.UIDs[0] != "u1" {
					t.Fatalf("batch of %q holds %v", r.Workspace, r.UIDs)
				}
				want := map[string]event.Action{"A": tc.a, "B": tc.b}[r.Workspace]
				if r.Action != want || seen[r.Workspace] {
					t.Fatalf("batch %+v: unexpected", r.Header)
				}
				seen[r.Workspace] = true
				b.Acknowledge(nil)
				c.Settle(b)
			}
			if ackA.n != 1 || ackB.n != 1 {
				t.Fatalf("acks done: A %d, B %d; want 1 each", ackA.n, ackB.n)
			}
		})
	}
}

// One in flight is per (workspace, partner, cohort): a batch of workspace A
// in flight does not hold workspace B's batch of the same cohort, and a
// second batch of A's cohort still waits for the first.
func TestOneInFlightPerWorkspaceCohort(t *testing.T) {
	c, err := batcher.NewCore(batcher.Limits{Window: time.Second, MaxInFlight: 4})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	c.Add(batcher.Change{Header: wsHdr("A", "c1", event.Add), UID: "u1", Ack: &countAck{}}, now)
	first := nextAll(c, now.Add(time.Second))
	if len(first) != 1 {
		t.Fatalf("%d batches, want 1", len(first))
	}
	c.Add(batcher.Change{Header: wsHdr("A", "c1", event.Add), UID: "u2", Ack: &countAck{}}, now.Add(time.Second))
	c.Add(batcher.Change{Header: wsHdr("B", "c1", event.Add), UID: "u2", Ack: &countAck{}}, now.Add(time.Second))
	got := nextAll(c, now.Add(2*time.Second))
	if len(got) != 1 || got[0].Header.Workspace != "B" {
		t.Fatalf("while A's c1 is in flight: %d batches (%v), want only B's", len(got), got)
	}
	first[0].Acknowledge(nil)
	c.Settle(first[0])
	if got := nextAll(c, now.Add(2*time.Second)); len(got) != 1 || got[0].Header.Workspace != "A" {
		t.Fatalf("after A's first settled: %d batches, want A's second", len(got))
	}
}

type countAck struct{ n int }

func (a *countAck) Done() { a.n++ }
