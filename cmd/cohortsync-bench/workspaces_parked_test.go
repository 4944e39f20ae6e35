package main

import (
	"slices"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// The fold is in log order: a uid removed and added again is a member, one
// added and removed is not, and a remove of a uid never added leaves none.
func TestRevokedEventsFold(t *testing.T) {
	r := &revokedEvents{id: "ws0019"}
	ev := func(a event.Action, c, u string) event.Event {
		return event.Event{Action: a, CohortID: c, UIDs: []string{u}, Workspace: "ws0019"}
	}
	r.events = []event.Event{
		ev(event.Add, "c1", "a"), ev(event.Remove, "c1", "a"), // out
		ev(event.Remove, "c1", "b"), ev(event.Add, "c1", "b"), // in
		ev(event.Add, "c1", "d"), ev(event.Add, "c2", "a"), // in, and "a" in c2 only
		ev(event.Remove, "c3", "z"), // c3 empty
	}
	got := r.fold()
	if want := []string{"b", "d"}; !slices.Equal(got["c1"], want) {
		t.Errorf("c1: %v, want %v", got["c1"], want)
	}
	if want := []string{"a"}; !slices.Equal(got["c2"], want) {
		t.Errorf("c2: %v, want %v", got["c2"], want)
	}
	if len(got["c3"]) != 0 {
		t.Errorf("c3: %v, want none", got["c3"])
	}
}

// The lag watch: a partition with lag whose committed offset does not move
// counts its time without a commit, from its last move (or first poll);
// one without lag does not; polls before from count for the moves only.
func TestLagWatchGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	lw := newLagWatch(t0.Add(10 * time.Second))
	// Before from: p0 commits, p1 is stuck; neither counts yet.
	lw.observe(t0, map[int]int64{0: 100, 1: 100}, map[int]int64{0: 10, 1: 50})
	lw.observe(t0.Add(5*time.Second), map[int]int64{0: 100, 1: 100}, map[int]int64{0: 20, 1: 50})
	if lw.maxGap != 0 || lw.atStart != -1 || lw.maxLag != 0 {
		t.Fatalf("before from: %+v", lw)
	}
	if lw.maxGapBefore != 5*time.Second {
		t.Errorf("max gap before from %s, want 5s (p1 stuck since t0)", lw.maxGapBefore)
	}
	// From 10 s: p0 keeps committing, p1 is stuck since t0 (its first poll).
	lw.observe(t0.Add(10*time.Second), map[int]int64{0: 100, 1: 100}, map[int]int64{0: 30, 1: 50})
	if lw.atStart != 70+50 {
		t.Errorf("lag at from %d, want 120", lw.atStart)
	}
	lw.observe(t0.Add(40*time.Second), map[int]int64{0: 100, 1: 100}, map[int]int64{0: 40, 1: 50})
	if lw.maxGap != 40*time.Second {
		t.Errorf("max gap %s, want 40s (p1 stuck since t0)", lw.maxGap)
	}
	if lw.maxGapBefore != 5*time.Second {
		t.Errorf("max gap before from %s after from, want 5s still", lw.maxGapBefore)
	}
	// p1 commits everything, then stays without lag for a minute: no gap.
	lw.observe(t0.Add(41*time.Second), map[int]int64{0: 100, 1: 100}, map[int]int64{0: 100, 1: 100})
	lw.observe(t0.Add(101*time.Second), map[int]int64{0: 100, 1: 100}, map[int]int64{0: 100, 1: 100})
	if lw.maxGap != 40*time.Second {
		t.Errorf("max gap %s after the lag went to 0, want 40s", lw.maxGap)
	}
	// A partition with no commit at all (-1) counts from 0.
	lw.observe(t0.Add(102*time.Second), map[int]int64{0: 100, 1: 100, 2: 7}, map[int]int64{0: 100, 1: 100, 2: -1})
	if lw.maxLag != 120 {
		t.Errorf("max lag %d, want 120", lw.maxLag)
	}
}

// The figures during the revocation count only requests in [from, to), of
// the other workspaces, over the window's minutes and each budget; the
// revoked workspace's 401s are counted whenever they came, and its first
// 2xx from to (the restore) on is timed.
func TestHPrimeFigures(t *testing.T) {
	from := time.Unix(6000, 0)
	to := from.Add(2 * time.Minute)
	var recs []emulator.RequestRecord
	add := func(ws string, at time.Time, status, n int) {
		for range n {
			recs = append(recs, emulator.RequestRecord{Workspace: ws, Time: at, Status: status})
		}
	}
	for i := range wsCount {
		n := 2 * wsBudget(i) // a full budget a minute
		if i == 2 {
			n = wsBudget(i) // half of it
		}
		add(wsID(i), from.Add(time.Second), 200, n)
	}
	add(wsID(0), from.Add(-time.Second), 200, 500) // before: not counted
	add(wsID(0), to, 200, 500)                     // at to: not counted
	add(wsID(1), from, 429, 12)                    // 429s count as requests (as (h))
	add(wsID(hpRevoked), from.Add(-time.Minute), 401, 3)
	add(wsID(hpRevoked), from.Add(time.Minute), 401, 4)
	add(wsID(hpRevoked), from.Add(-time.Second), 200, 1) // before the restore (to): not its first 2xx after it
	add(wsID(hpRevoked), to.Add(5*time.Second), 200, 1)
	add(wsID(hpRevoked), to.Add(9*time.Second), 200, 1)
	recs[len(recs)-2].Members, recs[len(recs)-1].Members = []string{"a", "b", "c"}, []string{"d"}
	hr := &hpResult{}
	hprimeFigures(hr, recs, from, to)
	if len(hr.Others) != wsCount-1 {
		t.Fatalf("%d others, want %d", len(hr.Others), wsCount-1)
	}
	if hr.FirstOKS != 5 || hr.AfterRequests != 2 || hr.AfterMeanMembers != 2 {
		t.Errorf("after the restore: first 2xx %.1fs, %d 2xx of %.1f members; want 5s, 2 of 2", hr.FirstOKS, hr.AfterRequests, hr.AfterMeanMembers)
	}
	if hr.Revoked401 != 7 {
		t.Errorf("401s %d, want 7", hr.Revoked401)
	}
	for _, f := range hr.Others {
		want := 1.0
		if f.Workspace == wsID(2) {
			want = 0.5
		}
		if f.Workspace == wsID(1) {
			want = float64(2*wsBudget(1)+12) / 2 / float64(wsBudget(1))
			if f.Rejected429 != 12 {
				t.Errorf("%s: 429s %d, want 12", f.Workspace, f.Rejected429)
			}
		}
		if f.PerMinOverBudget != want {
			t.Errorf("%s: %.3f of its budget, want %.3f", f.Workspace, f.PerMinOverBudget, want)
		}
		if f.Workspace == wsID(hpRevoked) {
			t.Errorf("the revoked workspace is among the others")
		}
	}
	if hr.MinUse != 0.5 {
		t.Errorf("lowest use %.3f, want 0.5 (%s)", hr.MinUse, wsID(2))
	}
}
