package integration

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// The API never sees a uid's changes out of log order (DESIGN.md invariant
// 8; issue 21's tests), checked from the outside: the emulator's request
// log against the input topic.
//
// A request names no log position, so each event carries a marker: a
// second member, unique in the test (markerPrefix + a counter), that no
// other event names. A marker is never superseded, so it rides in its
// event's batch; a tracked uid in a request is placed at the highest
// position of its (workspace, partner, cohort, uid) whose marker rides in
// the same request with the same action (earlier changes of the same action
// merge into it). A cohort's batches go one at a time in the order they
// were opened (batcher.Core.Next), so a placement is never below a change
// of the key the API already saw from a later batch.
//
// The rule: the positions at which the API saw a key, in order, may step
// back only as a re-read's repeat, and a repeat is followed, later, by a
// send at or past the highest position seen before it (the model's rule,
// DESIGN.md "Workspaces and parking": a re-read sends everything after it
// again, in order). A change that reached the API after a later one and was
// never followed by that later one again is an overtaking. (An overtaking
// followed by the later change again looks like a repeat from here: the
// fold then holds, and the model is where such an order is checked.)

// markerPrefix starts the uid of every marker; tracked uids start with "u"
// (gen).
const markerPrefix = "m"

// orderCheck is the outcome of orderViolations.
type orderCheck struct {
	violations []string
	positioned int // tracked changes in applied requests placed by a marker
	unplaced   int // tracked changes in applied requests without a marker of theirs
	checked    int // keys judged: every change of theirs has a marker
	unchecked  int // keys with marked changes not checked: one of their changes has no marker
	requests   int // applied requests of the workspaces checked
}

// orderKey is a (workspace, partner, cohort, uid).
type orderKey struct{ ws, partner, cohort, uid string }

// orderPos is one change of an orderKey in the log.
type orderPos struct {
	marker    string
	action    string
	partition int
	offset    int64
}

// checkLogOrder fails t unless the emulator's applied requests for the
// workspaces wss (def: the workspace of events naming none) saw every
// tracked uid's changes in log order, as the events in topic (produced with
// markers) give it.
func checkLogOrder(t *testing.T, a *api, topic, def string, wss ...string) {
	t.Helper()
	reqs := a.Requests()
	if _, dropped := a.RequestLogStats(); dropped > 0 {
		t.Fatalf("test bug: the request log dropped %d records to stay within its bounds (emulator.Config.RequestLogSize, RequestLogMaxMembers); earlier requests are lost", dropped)
	}
	oc := orderViolations(t, readAll(t, topic), reqs, def, wss...)
	t.Logf("log order: %d applied requests, %d changes placed by their markers, %d without one; %d keys checked, %d not (a change without a marker); %d violations",
		oc.requests, oc.positioned, oc.unplaced, oc.checked, oc.unchecked, len(oc.violations))
	if oc.positioned == 0 {
		t.Fatal("test bug: no change could be placed (events produced without markers?)")
	}
	for i, v := range oc.violations {
		if i == 10 {
			t.Errorf("… and %d more", len(oc.violations)-i)
			break
		}
		t.Error(v)
	}
}

// orderViolations is checkLogOrder's rule over the input records log and
// the emulator's request log reqs.
func orderViolations(t *testing.T, log []kafka.Message, reqs []emulator.RequestRecord, def string, wss ...string) orderCheck {
	t.Helper()
	log = slices.Clone(log)
	slices.SortFunc(log, func(x, y kafka.Message) int {
		return cmp.Or(cmp.Compare(x.Partition, y.Partition), cmp.Compare(x.Offset, y.Offset))
	})
	keys := map[orderKey][]orderPos{}
	unmarked := map[orderKey]bool{} // keys with a change that carries no marker
	for _, m := range log {
		ev, err := event.Decode(m.Value, "")
		if err != nil {
			continue // dead-lettered: not the API's
		}
		ws := cmp.Or(ev.Workspace, def)
		marker, tracked := splitMarker(ev.UIDs)
		if marker == "" {
			for _, u := range tracked {
				unmarked[orderKey{ws, ev.Partner, ev.CohortID, u}] = true
			}
			continue
		}
		for _, u := range tracked {
			k := orderKey{ws, ev.Partner, ev.CohortID, u}
			if ps := keys[k]; len(ps) > 0 && ps[0].partition != m.Partition {
				t.Fatalf("test bug: %v's events are in partitions %d and %d; their log order is not defined", k, ps[0].partition, m.Partition)
			}
			keys[k] = append(keys[k], orderPos{marker: marker, action: string(ev.Action), partition: m.Partition, offset: m.Offset})
		}
	}
	// A key with an unmarked change is not checked: that change can be
	// where a re-read's repeat continues (or it supersedes, in the
	// batcher, the marked change after it), unseen from here, and the
	// repeat would look like one never followed.
	var oc orderCheck
	for k := range unmarked {
		if _, ok := keys[k]; ok {
			delete(keys, k)
			oc.unchecked++
		}
	}
	oc.checked = len(keys)
	want := map[string]bool{}
	for _, w := range wss {
		want[w] = true
	}
	reqs = slices.Clone(reqs)
	slices.SortFunc(reqs, func(x, y emulator.RequestRecord) int { return cmp.Compare(x.Seq, y.Seq) })
	type send struct {
		seq uint64
		at  int
	}
	sends := map[orderKey][]send{}
	for _, r := range reqs {
		if !r.Applied || !want[r.Workspace] {
			continue
		}
		oc.requests++
		in := map[string]bool{}
		for _, u := range r.Members {
			if strings.HasPrefix(u, markerPrefix) {
				in[u] = true
			}
		}
		for _, u := range r.Members {
			if strings.HasPrefix(u, markerPrefix) {
				continue
			}
			k := orderKey{r.Workspace, r.Partner, r.CohortID, u}
			at := -1
			for i, p := range keys[k] {
				if in[p.marker] && p.action == r.Action {
					at = i
				}
			}
			if at < 0 {
				oc.unplaced++
				continue
			}
			oc.positioned++
			sends[k] = append(sends[k], send{r.Seq, at})
		}
	}
	for k, ss := range sends {
		ps := keys[k]
		top := -1 // the highest position sent so far
		for i, s := range ss {
			if s.at < top && !slices.ContainsFunc(ss[i+1:], func(l send) bool { return l.at >= top }) {
				oc.violations = append(oc.violations, fmt.Sprintf(
					"request #%d sent %s/%s %s of %s (offset %d/%d) after request #%d had sent its later %s (offset %d/%d), and never that one again",
					s.seq, k.partner, k.cohort, ps[s.at].action, k.uid, ps[s.at].partition, ps[s.at].offset,
					ss[slices.IndexFunc(ss, func(l send) bool { return l.at == top })].seq, ps[top].action, ps[top].partition, ps[top].offset))
				break
			}
			top = max(top, s.at)
		}
	}
	return oc
}

// splitMarker returns an event's marker ("": none) and its tracked uids.
func splitMarker(uids []string) (marker string, tracked []string) {
	for _, u := range uids {
		if strings.HasPrefix(u, markerPrefix) {
			marker = u
		} else {
			tracked = append(tracked, u)
		}
	}
	return marker, tracked
}

// markEvent adds a marker to ev (checkLogOrder): a member no other event
// names.
func markEvent(ev *event.Event, n int) {
	ev.UIDs = append(ev.UIDs, fmt.Sprintf("%s%09d", markerPrefix, n))
}

// TestOrderViolations checks checkLogOrder's rule on made-up logs: an
// in-order run, a repeat (a re-read's duplicates) and merges pass; an
// overtaking, and a stale repeat never followed by the later change, fail.
func TestOrderViolations(t *testing.T) {
	const ws, part, c = "WS", "p", "c1"
	evs := []struct {
		act    event.Action
		marker string
	}{{event.Add, "m1"}, {event.Remove, "m2"}, {event.Add, "m3"}, {event.Remove, "m4"}}
	var log []kafka.Message
	for i, e := range evs {
		log = append(log, kafka.Message{Partition: 0, Offset: int64(i),
			Value: event.Encode(event.Event{Action: e.act, Partner: part, CohortID: c, CohortName: "n", UIDs: []string{"u1", e.marker}, Workspace: ws})})
	}
	req := func(seq uint64, act event.Action, members ...string) emulator.RequestRecord {
		return emulator.RequestRecord{Seq: seq, Workspace: ws, Partner: part, CohortID: c, Action: string(act), Members: members, Applied: true}
	}
	for _, tc := range []struct {
		name string
		reqs []emulator.RequestRecord
		bad  int
	}{
		{"in order", []emulator.RequestRecord{req(1, event.Add, "u1", "m1"), req(2, event.Remove, "u1", "m2"), req(3, event.Add, "u1", "m3"), req(4, event.Remove, "u1", "m4")}, 0},
		{"a repeat", []emulator.RequestRecord{req(1, event.Add, "u1", "m1"), req(2, event.Remove, "u1", "m2"), req(3, event.Add, "u1", "m1"), req(4, event.Remove, "u1", "m2"),
			req(5, event.Add, "u1", "m3"), req(6, event.Remove, "u1", "m4")}, 0},
		// u1 back in the add batch opened first: sent before m2's batch.
		{"superseded into the batch opened first", []emulator.RequestRecord{req(1, event.Add, "m1", "m3", "u1"), req(2, event.Remove, "m2", "m4", "u1")}, 0},
		{"superseded, its marker alone", []emulator.RequestRecord{req(1, event.Add, "m1"), req(2, event.Remove, "u1", "m2"), req(3, event.Add, "m3"), req(4, event.Remove, "u1", "m4")}, 0},
		{"an overtaking", []emulator.RequestRecord{req(1, event.Add, "u1", "m1"), req(2, event.Add, "u1", "m3"), req(3, event.Remove, "u1", "m2")}, 1},
		{"a stale repeat never followed", []emulator.RequestRecord{req(1, event.Add, "u1", "m1"), req(2, event.Remove, "u1", "m2"), req(3, event.Add, "u1", "m3"),
			req(4, event.Remove, "u1", "m4"), req(5, event.Remove, "u1", "m2")}, 1},
		{"a stale change not applied", []emulator.RequestRecord{req(1, event.Add, "u1", "m1"), req(2, event.Add, "u1", "m3"),
			{Seq: 3, Workspace: ws, Partner: part, CohortID: c, Action: "remove_members", Members: []string{"u1", "m2"}}}, 0},
		// Indistinguishable from a re-read's repeat: the fold holds, the
		// model checks this order.
		{"an overtaking followed by the later change again", []emulator.RequestRecord{req(1, event.Add, "u1", "m1"), req(2, event.Add, "u1", "m3"),
			req(3, event.Remove, "u1", "m2"), req(4, event.Add, "u1", "m3")}, 0},
	} {
		oc := orderViolations(t, log, tc.reqs, ws, ws)
		if len(oc.violations) != tc.bad {
			t.Errorf("%s: %d violations %q, want %d", tc.name, len(oc.violations), oc.violations, tc.bad)
		}
		if oc.positioned == 0 {
			t.Errorf("%s: nothing placed", tc.name)
		}
	}
	// u2's remove between its adds has no marker: a re-read's repeat of
	// its first add may continue there, unseen, so u2 is not judged.
	log2 := slices.Clone(log)
	for i, e := range []struct {
		act  event.Action
		uids []string
	}{{event.Add, []string{"u2", "m5"}}, {event.Remove, []string{"u2"}}, {event.Add, []string{"u2", "m6"}}} {
		log2 = append(log2, kafka.Message{Partition: 0, Offset: int64(len(evs) + i),
			Value: event.Encode(event.Event{Action: e.act, Partner: part, CohortID: c, CohortName: "n", UIDs: e.uids, Workspace: ws})})
	}
	oc := orderViolations(t, log2, []emulator.RequestRecord{req(1, event.Add, "u1", "m1"), req(2, event.Add, "u2", "m6"), req(3, event.Add, "u2", "m5")}, ws, ws)
	if len(oc.violations) != 0 || oc.unchecked != 1 || oc.positioned != 1 {
		t.Errorf("a key with an unmarked change: %d violations %q, %d keys unchecked, %d placed; want 0, 1 (u2), 1 (u1)", len(oc.violations), oc.violations, oc.unchecked, oc.positioned)
	}
}
