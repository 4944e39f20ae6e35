package consumer_test

// Component tests of the consumer against an in-process Kafka (kfake): the
// real consumer, batcher and dead-letter queue, with a fake Sink. They check
// DESIGN.md invariants 1 (commit after acceptance), 4 (fencing on
// rebalance), 6 (backpressure) and 7 (bad input never blocks a partition),
// and the shutdown drain.

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// randomChanges returns perPart changes for every partition, round-robin,
// with uids drawn from a small per-partition pool so that (cohort, uid)
// pairs repeat and the order of their changes matters.
func randomChanges(seed uint64, perPart int, cohorts []string, uidsPerPart int) []change {
	rng := rand.New(rand.NewPCG(seed, 7))
	out := make([]change, 0, perPart*partitions)
	for i := range perPart * partitions {
		p := i % partitions
		a := event.Add
		if rng.IntN(2) == 0 {
			a = event.Remove
		}
		out = append(out, change{part: p, action: a, cohort: cohorts[rng.IntN(len(cohorts))],
			uid: fmt.Sprintf("p%d-u%d", p, rng.IntN(uidsPerPart))})
	}
	return out
}

func recsOf(cs []change) []rec {
	out := make([]rec, len(cs))
	for i, c := range cs {
		out[i] = valid(c)
	}
	return out
}

func (r *replica) waitAssigned(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 20*time.Second, r.name+" assigned "+strconv.Itoa(n)+" partitions", func() bool { return len(r.current()) == n })
}

// noneCommittedPast checks that no partition's committed offset passes
// limit[p] (a missing limit means 0: nothing may be committed).
func (h *harness) noneCommittedPast(limit map[int]int64) func() (bool, string) {
	return func() (bool, string) {
		for p, o := range h.committed() {
			if o > limit[p] {
				return false, fmt.Sprintf("partition %d committed at %d, past %d", p, o, limit[p])
			}
		}
		return true, ""
	}
}

// Invariant 1: nothing is committed while the API has accepted nothing;
// once it accepts, the commits reach the end and every change was sent.
func TestCommitAfterAcceptance(t *testing.T) {
	h := newHarness(t)
	a := h.startReplica("a", replicaOpts{hold: holdAll})
	a.waitAssigned(t, partitions)

	cs := randomChanges(1, 12, []string{"c0", "c1", "c2"}, 5)
	h.produce(recsOf(cs)...)
	log := h.readTopic(topic, partitions)
	waitFor(t, 20*time.Second, "every event read", func() bool { return a.consumed() == len(cs) })
	waitFor(t, 20*time.Second, "requests in flight", func() bool { return h.rec.count("a", "held") > 0 })
	// Ten commit intervals with every request held: the watermark stays
	// where reading started (0), whatever the commit loop does.
	holdsFor(t, 10*commitInterval, "commit while the API accepted nothing", h.noneCommittedPast(nil))

	a.sink.setHold(nil)
	h.waitCommittedToEnd(20 * time.Second)
	checkFold(t, h.rec.foldAccepted(nil), foldLog(log, nil))
	h.rec.checkNoViolations(t)
}

// Invariant 1, partially accepted: with cohort A accepted and cohort B held,
// a partition's commit reaches its first B record and never passes it, even
// though every A record after it was accepted.
func TestCommitStopsAtFirstUnacceptedRecord(t *testing.T) {
	h := newHarness(t)
	a := h.startReplica("a", replicaOpts{hold: func(r wire.Request) bool { return r.CohortID == "cb" }})
	a.waitAssigned(t, partitions)

	var cs []change
	for p := range partitions {
		u := func(i int) string { return fmt.Sprintf("p%d-u%d", p, i) }
		cs = append(cs,
			change{p, event.Add, "ca", u(0)}, change{p, event.Add, "ca", u(1)},
			change{p, event.Add, "cb", u(2)}, // the first B record
			change{p, event.Add, "ca", u(3)}, change{p, event.Remove, "ca", u(0)},
			change{p, event.Remove, "cb", u(1)}, change{p, event.Add, "ca", u(4)},
			change{p, event.Remove, "ca", u(1)})
	}
	h.produce(recsOf(cs)...)
	log := h.readTopic(topic, partitions)
	firstB := map[int]int64{}
	for _, m := range log {
		if ev, _ := event.Decode(m.Value, ""); ev.CohortID == "cb" {
			if _, ok := firstB[m.Partition]; !ok {
				firstB[m.Partition] = m.Offset
			}
		}
	}
	if len(firstB) != partitions {
		t.Fatalf("test bug: first B records %v", firstB)
	}
	isA := func(ev event.Event) bool { return ev.CohortID == "ca" }
	wantA := foldLog(log, isA)
	waitFor(t, 20*time.Second, "every cohort A change accepted", func() bool {
		return maps.Equal(h.rec.foldAccepted(func(r wire.Request) bool { return r.CohortID == "ca" }), wantA)
	})
	waitFor(t, 20*time.Second, "commits reaching the first B record", func() bool {
		c := h.committed()
		for p, o := range firstB {
			if c[p] > o {
				t.Fatalf("partition %d committed at %d, past its first unaccepted record %d", p, c[p], o)
			}
			if c[p] != o {
				return false
			}
		}
		return true
	})
	holdsFor(t, 10*commitInterval, "commit past an unaccepted record", h.noneCommittedPast(firstB))

	a.sink.setHold(nil)
	h.waitCommittedToEnd(20 * time.Second)
	checkFold(t, h.rec.foldAccepted(nil), foldLog(log, nil))
	h.rec.checkNoViolations(t)
}

// Invariant 7: invalid records go to the dead-letter topic with their key,
// value, headers and the reason; tombstones are skipped; none of them
// blocks the partition.
func TestInvalidEventsDeadLettered(t *testing.T) {
	h := newHarness(t)
	a := h.startReplica("a", replicaOpts{})
	a.waitAssigned(t, partitions)

	forbidden := event.Encode(event.Event{Action: event.Add, Partner: partner, CohortID: "c9",
		CohortName: "Bad|Name", UIDs: []string{"p2-x"}})
	type bad struct {
		r      rec
		reason event.Reason
	}
	bads := []bad{
		{rec{part: 0, key: []byte("k-malformed"), value: []byte(`{"action":"add_members","cohort_id":`),
			headers: []kafka.Header{{Key: "origin", Value: []byte("upstream-1")}}}, event.ReasonMalformed},
		{rec{part: 1, key: []byte("k-no-cohort"), value: []byte(`{"action":"add","cohort_name":"N","partner":"p","uid":"p1-x"}`)},
			event.ReasonMissingField},
		{rec{part: 2, key: []byte("k-forbidden"), value: forbidden}, event.ReasonForbiddenChar},
	}
	tombstone := rec{part: 3, key: []byte("k-tombstone")}
	var recs []rec
	for p := range partitions {
		recs = append(recs, valid(change{p, event.Add, "c1", fmt.Sprintf("p%d-before", p)}))
		if p < len(bads) {
			recs = append(recs, bads[p].r)
		} else {
			recs = append(recs, tombstone)
		}
		recs = append(recs, valid(change{p, event.Add, "c1", fmt.Sprintf("p%d-after", p)}),
			valid(change{p, event.Remove, "c2", fmt.Sprintf("p%d-after", p)}))
	}
	h.produce(recs...)
	log := h.readTopic(topic, partitions)
	h.waitCommittedToEnd(20 * time.Second)

	// Offsets are committed only after the dead letters were written: the
	// dead-letter topic is complete now.
	source := map[string]kafka.Message{}
	for _, m := range log {
		source[string(m.Key)] = m
	}
	dead := h.readTopic(dlqTopic, dlqParts)
	if len(dead) != len(bads) {
		for _, m := range dead {
			t.Logf("dead letter key=%q value=%q", m.Key, m.Value)
		}
		t.Fatalf("%d dead letters, want %d", len(dead), len(bads))
	}
	got := map[string]kafka.Message{}
	for _, m := range dead {
		got[string(m.Key)] = m
	}
	for _, b := range bads {
		m, ok := got[string(b.r.key)]
		if !ok {
			t.Errorf("%s: not dead-lettered", b.r.key)
			continue
		}
		src := source[string(b.r.key)]
		if string(m.Value) != string(b.r.value) {
			t.Errorf("%s: value %q, want the original %q", b.r.key, m.Value, b.r.value)
		}
		want := map[string]string{
			deadletter.HeaderReason:          string(b.reason),
			deadletter.HeaderSourceTopic:     topic,
			deadletter.HeaderSourcePartition: strconv.Itoa(src.Partition),
			deadletter.HeaderSourceOffset:    strconv.FormatInt(src.Offset, 10),
			partHeader:                       strconv.Itoa(b.r.part), // the original headers stay
		}
		for _, hd := range b.r.headers {
			want[hd.Key] = string(hd.Value)
		}
		for k, v := range want {
			if g, _ := header(m, k); g != v {
				t.Errorf("%s: header %s = %q, want %q", b.r.key, k, g, v)
			}
		}
		if e, _ := header(m, deadletter.HeaderError); e == "" {
			t.Errorf("%s: no %s header", b.r.key, deadletter.HeaderError)
		}
		if at, _ := header(m, deadletter.HeaderFailedAt); !validTime(at) {
			t.Errorf("%s: %s = %q", b.r.key, deadletter.HeaderFailedAt, at)
		}
	}
	if n := testutil.ToFloat64(a.m.EventsSkipped); n != 1 {
		t.Errorf("skipped %v events, want the 1 tombstone", n)
	}
	checkFold(t, h.rec.foldAccepted(nil), foldLog(log, nil))
	h.rec.checkNoViolations(t)
}

// Invariant 1(c): an invalid record is settled only once its dead letter is
// written. While the dead-letter topic refuses writes, its partition's
// commit stays below it (the valid records after it are accepted); once the
// topic takes writes again, the letter is written once and the commit
// passes it.
func TestDeadLetterSettlesOnlyWhenWritten(t *testing.T) {
	h := newHarness(t)
	var down atomic.Bool
	down.Store(true)
	h.failDLQWrites(&down)
	a := h.startReplica("a", replicaOpts{})
	a.waitAssigned(t, partitions)

	var recs []rec
	for p := range partitions {
		recs = append(recs, valid(change{p, event.Add, "c1", fmt.Sprintf("p%d-before", p)}))
		if p == 1 {
			recs = append(recs, rec{part: p, key: []byte("k-bad"), value: []byte(`{"action":"add"`)})
		}
		recs = append(recs, valid(change{p, event.Add, "c1", fmt.Sprintf("p%d-after", p)}))
	}
	h.produce(recs...)
	log := h.readTopic(topic, partitions)
	var bad kafka.Message
	for _, m := range log {
		if string(m.Key) == "k-bad" {
			bad = m
		}
	}
	want := foldLog(log, nil)
	waitFor(t, 20*time.Second, "every valid change accepted", func() bool { return maps.Equal(h.rec.foldAccepted(nil), want) })
	waitFor(t, 20*time.Second, "the other partitions committed", func() bool {
		end, c := h.endOffsets(topic, partitions), h.committed()
		for p := range partitions {
			if p != bad.Partition && c[p] != end[p] {
				return false
			}
		}
		return true
	})
	limit := map[int]int64{}
	for p := range partitions {
		limit[p] = math.MaxInt64
	}
	limit[bad.Partition] = bad.Offset
	holdsFor(t, 10*commitInterval, "commit past an unwritten dead letter", h.noneCommittedPast(limit))
	if c := h.committed()[bad.Partition]; c != bad.Offset {
		t.Errorf("partition %d committed at %d, want %d (up to the invalid record)", bad.Partition, c, bad.Offset)
	}

	down.Store(false)
	h.waitCommittedToEnd(20 * time.Second)
	dead := h.readTopic(dlqTopic, dlqParts)
	if len(dead) != 1 || string(dead[0].Key) != "k-bad" {
		t.Fatalf("%d dead letters, want the one invalid record", len(dead))
	}
}

func validTime(s string) bool {
	_, err := time.Parse(time.RFC3339, s)
	return err == nil
}

// Invariant 7: a member the API rejects on its own is dead-lettered as a
// single-member event with the reason api_rejected and where it came from;
// the rest of its batch is accepted and everything is committed.
func TestAPIRejectionDeadLettered(t *testing.T) {
	h := newHarness(t)
	const badUID, why = "p2-bad", "invalid_member: uid has a bad format"
	a := h.startReplica("a", replicaOpts{reject: map[string]string{badUID: why}})
	a.waitAssigned(t, partitions)

	cs := randomChanges(2, 6, []string{"c0", "c1"}, 4)
	cs = append(cs, change{2, event.Add, "c1", badUID}, change{2, event.Add, "c1", "p2-good"})
	h.produce(recsOf(cs)...)
	log := h.readTopic(topic, partitions)
	h.waitCommittedToEnd(20 * time.Second)

	dead := h.readTopic(dlqTopic, dlqParts)
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	m := dead[0]
	var src kafka.Message
	for _, l := range log {
		if string(l.Key) == badUID {
			src = l
		}
	}
	ev, err := event.Decode(m.Value, "")
	if err != nil {
		t.Fatalf("dead letter %q does not decode: %v", m.Value, err)
	}
	if string(m.Key) != badUID || ev.Action != event.Add || ev.CohortID != "c1" || ev.CohortName != "Name_c1" ||
		ev.Partner != partner || len(ev.UIDs) != 1 || ev.UIDs[0] != badUID {
		t.Errorf("dead letter key=%q event=%+v, want the rejected member alone", m.Key, ev)
	}
	want := map[string]string{
		deadletter.HeaderReason:          string(event.ReasonAPIRejected),
		deadletter.HeaderError:           why,
		deadletter.HeaderSourceTopic:     topic,
		deadletter.HeaderSourcePartition: strconv.Itoa(src.Partition),
		deadletter.HeaderSourceOffset:    strconv.FormatInt(src.Offset, 10),
	}
	for k, v := range want {
		if g, _ := header(m, k); g != v {
			t.Errorf("header %s = %q, want %q", k, g, v)
		}
	}
	wantFold := foldLog(log, nil)
	delete(wantFold, memberKey{"c1", badUID})
	checkFold(t, h.rec.foldAccepted(nil), wantFold)
}

// Invariant 4: a replica whose partitions are revoked drops their pending
// changes and has its in-flight requests end before it rejoins; no two
// replicas send one partition's changes at once, none sends a partition it
// does not own, and the API converges to the fold of the log.
func TestRebalanceFencing(t *testing.T) {
	h := newHarness(t)
	a := h.startReplica("a", replicaOpts{hold: holdAll})
	a.waitAssigned(t, partitions)

	cs := randomChanges(3, 15, []string{"c0", "c1", "c2"}, 5)
	h.produce(recsOf(cs)...)
	log := h.readTopic(topic, partitions)
	waitFor(t, 20*time.Second, "a read every event", func() bool { return a.consumed() == len(cs) })
	waitFor(t, 20*time.Second, "a's requests in flight", func() bool { return h.rec.count("a", "held") > 0 })
	if a.b.Pending() == 0 {
		t.Fatal("test bug: nothing pending in a before the rebalance")
	}
	heldBefore := h.rec.count("a", "held")

	b := h.startReplica("b", replicaOpts{})
	waitFor(t, 30*time.Second, "a and b splitting the partitions", func() bool {
		pa, pb := a.current(), b.current()
		if len(pa) == 0 || len(pb) == 0 || len(a.assignments()) < 2 {
			return false
		}
		for p := range partitions {
			if pa[p] == pb[p] {
				return false
			}
		}
		return true
	})
	// The fence ran before a rejoined: at every later assignment nothing of
	// the old generation was pending or in flight.
	for _, r := range []*replica{a, b} {
		for _, as := range r.assignments() {
			if as.total != partitions {
				t.Errorf("%s: OnAssign total %d, want %d", r.name, as.total, partitions)
			}
		}
	}
	for i, as := range a.assignments()[1:] {
		if as.pending != 0 || as.inFlight != 0 {
			t.Errorf("a's assignment %d: %d members pending, %d requests in flight after the fence", i+2, as.pending, as.inFlight)
		}
	}
	// The requests a had in flight were cancelled by the fence, not accepted.
	cancelled := 0
	for _, s := range h.rec.snapshot() {
		if s.replica == "a" && s.outcome == "accepted" {
			t.Errorf("a's send #%d accepted while the sink held everything", s.seq)
		}
		if s.replica == "a" && s.outcome == "cancelled" {
			cancelled++
		}
	}
	if cancelled < heldBefore {
		t.Errorf("%d of a's held requests cancelled by the fence, want at least %d", cancelled, heldBefore)
	}
	// b owns half the log: its partitions are committed to the end while a
	// still holds everything.
	waitFor(t, 20*time.Second, "b committing its partitions", func() bool {
		end, c := h.endOffsets(topic, partitions), h.committed()
		for p := range b.current() {
			if c[p] != end[p] {
				return false
			}
		}
		return true
	})

	a.sink.setHold(nil)
	h.waitCommittedToEnd(20 * time.Second)
	checkFold(t, h.rec.foldAccepted(nil), foldLog(log, nil))
	h.rec.checkNoViolations(t)
	if h.rec.count("b", "") == 0 {
		t.Error("b sent nothing")
	}
}

// Invariant 4 under churn: replicas join and leave while events are produced
// and the API accepts with random latency. No partition is ever sent by two
// replicas at once or by one that does not own it, every fence leaves
// nothing pending or in flight, and the API ends at the fold of the log.
func TestRebalanceChurn(t *testing.T) {
	h := newHarness(t)
	opts := replicaOpts{delay: 40 * time.Millisecond}
	cohorts := []string{"c0", "c1", "c2", "c3"}
	round := func(seed uint64) { h.produce(recsOf(randomChanges(seed, 25, cohorts, 8))...) }

	owners := func(rs ...*replica) func() bool {
		return func() bool {
			n := 0
			for _, r := range rs {
				if len(r.current()) == 0 {
					return false
				}
				n += len(r.current())
			}
			return n == partitions
		}
	}
	a := h.startReplica("a", opts)
	waitFor(t, 20*time.Second, "a owning every partition", owners(a))
	round(10)
	b := h.startReplica("b", opts)
	round(11) // while the group rebalances
	waitFor(t, 30*time.Second, "a and b sharing the partitions", owners(a, b))
	round(12)
	c := h.startReplica("c", opts)
	round(13)
	waitFor(t, 30*time.Second, "a, b and c sharing the partitions", owners(a, b, c))
	round(14)
	if err := a.stop(); err != nil { // a drains and leaves: b and c take over
		t.Fatalf("a: Run: %v", err)
	}
	round(15)
	waitFor(t, 30*time.Second, "b and c sharing the partitions", owners(b, c))
	round(16)
	h.waitCommittedToEnd(30 * time.Second)

	for _, r := range []*replica{a, b, c} {
		for i, as := range r.assignments()[1:] {
			if as.pending != 0 || as.inFlight != 0 {
				t.Errorf("%s's assignment %d: %d members pending, %d requests in flight after the fence", r.name, i+2, as.pending, as.inFlight)
			}
		}
	}
	checkFold(t, h.rec.foldAccepted(nil), foldLog(h.readTopic(topic, partitions), nil))
	h.rec.checkNoViolations(t)
	t.Logf("%d requests: a %d, b %d, c %d (%d cancelled by fences); assignments a %d, b %d, c %d",
		h.rec.count("", ""), h.rec.count("a", ""), h.rec.count("b", ""), h.rec.count("c", ""), h.rec.count("", "cancelled"),
		len(a.assignments()), len(b.assignments()), len(c.assignments()))
}

// The shutdown drain: cancelling Run flushes the open batches at once
// (however long the window), commits and leaves; the next member of the
// group re-reads nothing.
func TestShutdownDrain(t *testing.T) {
	h := newHarness(t)
	const drain = 20 * time.Second
	a := h.startReplica("a", replicaOpts{window: time.Minute, drain: drain})
	a.waitAssigned(t, partitions)

	cs := randomChanges(4, 10, []string{"c0", "c1", "c2"}, 6)
	h.produce(recsOf(cs)...)
	log := h.readTopic(topic, partitions)
	want := foldLog(log, nil)
	// Pending counts the net changes: every event was added.
	waitFor(t, 20*time.Second, "every event added", func() bool {
		return a.consumed() == len(cs) && a.b.Pending() == len(want)
	})
	if n := h.rec.count("", ""); n != 0 {
		t.Fatalf("%d requests sent before the one-minute window ended", n)
	}

	err := a.stop()
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if a.stopTook > 5*time.Second {
		t.Errorf("Run took %v to drain, want well under the drain timeout %v", a.stopTook, drain)
	}
	t.Logf("drained in %v", a.stopTook)
	checkFold(t, h.rec.foldAccepted(nil), want)
	// Committed before Run returned: no waiting.
	end, c := h.endOffsets(topic, partitions), h.committed()
	for p := range partitions {
		if c[p] != end[p] {
			t.Errorf("partition %d: committed %d at exit, end %d", p, c[p], end[p])
		}
	}

	// The next member starts from the commits: it sends only what is
	// produced after it joined.
	b := h.startReplica("b", replicaOpts{})
	b.waitAssigned(t, partitions)
	var sentinels []change
	for p := range partitions {
		sentinels = append(sentinels, change{p, event.Add, "sentinel", fmt.Sprintf("p%d-sentinel", p)})
	}
	h.produce(recsOf(sentinels)...)
	waitFor(t, 20*time.Second, "b sending the new events", func() bool {
		n := 0
		for _, s := range h.rec.snapshot() {
			if s.replica == "b" && s.outcome == "accepted" {
				n += len(s.req.UIDs)
			}
		}
		return n >= len(sentinels)
	})
	for _, s := range h.rec.snapshot() {
		if s.replica == "b" && s.req.CohortID != "sentinel" {
			t.Errorf("b re-sent %s %s %v", s.req.Action, s.req.CohortID, s.req.UIDs)
		}
	}
	if n := b.consumed(); n != len(sentinels) {
		t.Errorf("b read %d events, want the %d new ones", n, len(sentinels))
	}
}

// The drain is bounded: with cohort B held, Run gives up after DrainTimeout,
// commits only what was accepted (every partition stops at its first B
// record), and the next member of the group re-sends the rest.
func TestShutdownDrainTimeout(t *testing.T) {
	h := newHarness(t)
	const drain = time.Second
	a := h.startReplica("a", replicaOpts{window: time.Minute, drain: drain,
		hold: func(r wire.Request) bool { return r.CohortID == "cb" }})
	a.waitAssigned(t, partitions)

	var cs []change
	for p := range partitions {
		u := func(i int) string { return fmt.Sprintf("p%d-u%d", p, i) }
		cs = append(cs, change{p, event.Add, "ca", u(0)}, change{p, event.Add, "cb", u(1)},
			change{p, event.Remove, "ca", u(0)}, change{p, event.Add, "ca", u(2)})
	}
	h.produce(recsOf(cs)...)
	log := h.readTopic(topic, partitions)
	firstB := map[int]int64{}
	for _, m := range log {
		if ev, _ := event.Decode(m.Value, ""); ev.CohortID == "cb" {
			if _, ok := firstB[m.Partition]; !ok {
				firstB[m.Partition] = m.Offset
			}
		}
	}
	waitFor(t, 20*time.Second, "every event added", func() bool { return a.consumed() == len(cs) })

	if err := a.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if a.stopTook < drain || a.stopTook > drain+5*time.Second {
		t.Errorf("Run took %v to give up draining, want about the drain timeout %v", a.stopTook, drain)
	}
	c := h.committed()
	for p, o := range firstB {
		if c[p] != o {
			t.Errorf("partition %d: committed %d at exit, want %d (its first unaccepted record)", p, c[p], o)
		}
	}

	// b re-reads from the commits: the first B record of each partition on.
	b := h.startReplica("b", replicaOpts{})
	h.waitCommittedToEnd(20 * time.Second)
	checkFold(t, h.rec.foldAccepted(nil), foldLog(log, nil))
	reread := 0
	for _, m := range log {
		if m.Offset >= firstB[m.Partition] {
			reread++
		}
	}
	if b.consumed() != reread {
		t.Errorf("b read %d records, want the %d from the first B record on", b.consumed(), reread)
	}
}

// Invariant 6: with the API holding every request, the consumer stops
// fetching once MaxPending members are pending, and resumes when the API
// accepts again.
func TestBackpressure(t *testing.T) {
	h := newHarness(t)
	const maxPending = 50
	a := h.startReplica("a", replicaOpts{maxPending: maxPending, maxMembers: 25, hold: holdAll})
	a.waitAssigned(t, partitions)

	// More records per partition than the consumer can buffer between the
	// fetch and the batcher (a 512-record channel and a 2048-change Add).
	const perPart = 4000
	cs := make([]change, 0, perPart*partitions)
	for i := range perPart * partitions {
		p := i % partitions
		cs = append(cs, change{p, event.Add, "c" + strconv.Itoa(p), fmt.Sprintf("p%d-u%d", p, i/partitions%500)})
	}
	start := time.Now()
	h.produce(recsOf(cs)...)
	t.Logf("produced %d records in %v", len(cs), time.Since(start))

	bounded := func() (bool, string) {
		if n := a.b.Pending(); n > maxPending+1 {
			return false, fmt.Sprintf("%d members pending, cap %d", n, maxPending)
		}
		return true, ""
	}
	// Wait until reading stalls: the consumed count stops moving.
	last, since := -1, time.Now()
	waitFor(t, 20*time.Second, "the consumer to stop reading", func() bool {
		if ok, why := bounded(); !ok {
			t.Fatal(why)
		}
		n := a.consumed()
		if n != last {
			last, since = n, time.Now()
			return false
		}
		return time.Since(since) > 8*commitInterval && a.b.Pending() >= maxPending
	})
	t.Logf("stalled after reading %d of %d records, %d members pending", last, len(cs), a.b.Pending())
	if last >= len(cs) {
		t.Fatalf("read all %d records with the API holding every request", last)
	}
	// Still stopped a while later. (Only "not everything" is asserted: a
	// starved machine may let reading creep on after a pause.)
	holdsFor(t, 8*commitInterval, "backpressure", func() (bool, string) {
		if ok, why := bounded(); !ok {
			return false, why
		}
		if n := a.consumed(); n >= len(cs) {
			return false, fmt.Sprintf("read all %d records, was stalled at %d", n, last)
		}
		return true, ""
	})
	holdsFor(t, 0, "commit while the API accepted nothing", h.noneCommittedPast(nil))

	a.sink.setHold(nil)
	waitFor(t, 30*time.Second, "every record read", func() bool {
		if ok, why := bounded(); !ok {
			t.Fatal(why)
		}
		return a.consumed() == len(cs)
	})
	h.waitCommittedToEnd(30 * time.Second)
	want := map[memberKey]event.Action{}
	for _, c := range cs {
		want[memberKey{c.cohort, c.uid}] = c.action
	}
	checkFold(t, h.rec.foldAccepted(nil), want)
}

// A start/stop cycle leaves no goroutine behind.
func TestNoGoroutineLeak(t *testing.T) {
	h := newHarness(t)
	cs := randomChanges(5, 5, []string{"c0", "c1"}, 3)
	h.produce(recsOf(cs)...)
	h.produce(rec{part: 0, key: []byte("bad"), value: []byte("{")}) // the DLQ writer works too
	leaks := goleak.IgnoreCurrent()

	a := h.startReplica("a", replicaOpts{})
	h.waitCommittedToEnd(20 * time.Second)
	if err := a.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	h.tr.CloseIdleConnections() // the test's own offset queries
	// No goroutine is exempt, kfake's included: the broker's per-connection
	// goroutines end once it notices the client closed the connection,
	// which on a loaded machine can take longer than VerifyNone's own
	// retries (about half a second).
	deadline := time.Now().Add(10 * time.Second)
	for goleak.Find(leaks) != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	goleak.VerifyNone(t, leaks)
}
