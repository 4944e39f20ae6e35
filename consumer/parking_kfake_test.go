package consumer_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cohortsync/cohortsync-worker/consumer"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/parking"
	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Isolation by parking (issue 21 item 4, DESIGN.md invariant 8), on kfake.

const parkParts = 3

// blockedSet is a fake of the sink's per-workspace blocked view
// (consumer.Config.Blocked, BlockedChanged).
type blockedSet struct {
	mu      sync.Mutex
	ws      map[string]bool
	changed chan struct{}
}

func newBlockedSet(ws ...string) *blockedSet {
	b := &blockedSet{ws: map[string]bool{}, changed: make(chan struct{})}
	for _, w := range ws {
		b.ws[w] = true
	}
	return b
}

func (b *blockedSet) Blocked(w string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ws[w]
}

func (b *blockedSet) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

func (b *blockedSet) set(w string, blocked bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ws[w] = blocked
	close(b.changed)
	b.changed = make(chan struct{})
}

// parkingOpts returns replica options with parking on the group's parking
// topic (created here), bl as the blocked view, and a sink that holds (never
// accepts) a request of a blocked workspace until it is cancelled or the
// workspace is unblocked (unblock releases them).
func (h *harness) parkingOpts(bl *blockedSet, def string, served ...string) replicaOpts {
	h.t.Helper()
	io := parkio.Config{Brokers: h.brokers, Topic: parkio.TopicName(h.group), Partitions: parkParts, Replication: 1}
	pk := &consumer.Parking{Topic: io.Topic, IO: &io} // the consumer creates the topic
	if !h.lazyParking {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		k, err := parkio.Ensure(ctx, io)
		if err != nil || k != parkParts {
			h.t.Fatalf("parking topic: %d partitions, %v", k, err)
		}
		pk = consumer.NewParking(io, h.group, k)
	}
	pk.UndetourInterval = 200 * time.Millisecond
	return replicaOpts{workspace: def, serves: func(w string) bool { return slices.Contains(served, w) },
		parking: pk, blocked: bl.Blocked, blockedChanged: bl.Changed,
		hold: func(req wire.Request) bool { return bl.Blocked(req.Workspace) }}
}

// parkedRecords reads the parking topic: every parked record (markers
// left out), in offset order per parking partition.
func (h *harness) parkedRecords() []parkio.Parked {
	h.t.Helper()
	var out []parkio.Parked
	for _, m := range h.readTopic(parkio.TopicName(h.group), parkParts) {
		p, err := parkio.Decode(m)
		if err != nil {
			h.t.Fatalf("parking record %d/%d: %v", m.Partition, m.Offset, err)
		}
		if !p.Marker {
			out = append(out, p)
		}
	}
	return out
}

// sourceMeta returns the committed metadata of the input topic's
// partition p.
func (h *harness) sourceMeta(p int) string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(h.brokers...), Transport: h.tr}
	res, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: h.group, Topics: map[string][]int{topic: {p}}})
	if err != nil {
		h.t.Fatalf("offset fetch: %v", err)
	}
	for _, po := range res.Topics[topic] {
		if po.Partition == p {
			return po.Metadata
		}
	}
	return ""
}

// waitParkingSettled waits until the group's commit of every parking
// partition is at its end: every parked record delivered.
func (h *harness) waitParkingSettled(timeout time.Duration) {
	h.t.Helper()
	pt := parkio.TopicName(h.group)
	var end, got map[int]int64
	waitFor(h.t, timeout, "the parking partitions committed to their end", func() bool {
		end = h.endOffsets(pt, parkParts)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		if got, err = h.admin.Committed(ctx, pt, h.group, seq(parkParts)); err != nil {
			h.t.Fatal(err)
		}
		for p, e := range end {
			if got[p] != e {
				return false
			}
		}
		return true
	})
}

func detouredAt(h *harness, p int) []string {
	ws, err := parking.ParseDetoured(h.sourceMeta(p))
	if err != nil {
		h.t.Fatal(err)
	}
	return ws
}

// wsEvents returns, for workspaces a and b alternating, n single-member
// changes each in partition p: uids cycle over 3 per workspace (the same
// in every call) and the action alternates per uid every 3, starting with a
// remove when flip, so that calls can end with opposite actions and a
// reordering across calls changes the fold.
func wsEvents(p, n int, flip bool, a, b string) []rec {
	var out []rec
	for i := range n {
		act := event.Add
		if (i/3)%2 == 1 != flip {
			act = event.Remove
		}
		for _, w := range []string{a, b} {
			out = append(out, wsRecord(change{p, act, "c" + fmt.Sprint(i%3), fmt.Sprintf("%s-u%d", w, i%3)}, w))
		}
	}
	return out
}

func ofWorkspace(w string) func(event.Event) bool {
	return func(ev event.Event) bool { return ev.Workspace == w }
}

// attempts counts the requests of workspace w the sink was given, whatever
// their outcome.
func (r *recorder) attempts(w string) int {
	n := 0
	for _, s := range r.snapshot() {
		if s.req.Workspace == w {
			n++
		}
	}
	return n
}

// checkFolds checks each workspace's membership at the API against the
// fold of its events in log, and that no send broke the recorder's rules.
func (h *harness) checkFolds(t *testing.T, log []kafka.Message, ws ...string) {
	t.Helper()
	for _, w := range ws {
		checkFold(t, h.rec.foldAccepted(reqOf(w)), foldLog(log, ofWorkspace(w)))
	}
	h.rec.checkNoViolations(t)
}

func reqOf(w string) func(wire.Request) bool {
	return func(r wire.Request) bool { return r.Workspace == w }
}

// G1: two workspaces in one partition, WS_B blocked from the start. WS_A's
// changes flow and the partition's commit passes WS_B's records; WS_B's
// records are in the parking topic in log order and nothing of WS_B is
// accepted; once WS_B is unblocked, its parked records are delivered, and
// its later records follow them (still parked while the detour lasts, then
// direct once it ended); the API's membership per workspace is the log's.
func TestParkingIsolatesABlockedWorkspace(t *testing.T) {
	isolationScenario(t, newHarness(t))
}

// The same with the parking topic missing at the start: the consumer's
// set-up creates it (Parking.IO), and the group takes its partitions once
// the partition watch sees it.
func TestParkingCreatesItsTopic(t *testing.T) {
	h := newHarness(t)
	h.lazyParking = true
	isolationScenario(t, h)
	parts, err := h.admin.Partitions(context.Background(), parkio.TopicName(h.group))
	if err != nil || len(parts) != parkParts {
		t.Errorf("parking topic partitions %v, %v; want %d", parts, err, parkParts)
	}
}

func isolationScenario(t *testing.T, h *harness) {
	bl := newBlockedSet("WS_B")
	a := h.startReplica("a", h.parkingOpts(bl, "WS_A", "WS_B"))
	a.waitAssigned(t, partitions)

	h.produce(wsEvents(0, 30, false, "WS_A", "WS_B")...)
	h.waitCommittedToEnd(30 * time.Second)
	log := h.readTopic(topic, partitions)
	checkFold(t, h.rec.foldAccepted(reqOf("WS_A")), foldLog(log, ofWorkspace("WS_A")))
	if n := h.rec.attempts("WS_B"); n != 0 {
		t.Fatalf("%d requests of the blocked WS_B were sent", n)
	}
	if d := detouredAt(h, 0); !slices.Equal(d, []string{"WS_B"}) {
		t.Errorf("partition 0 committed with d=%v, want WS_B", d)
	}
	checkParkedInOrder(t, h.parkedRecords(), log, "WS_B")
	if n := testutil.ToFloat64(a.m.ParkingWrites); n < 30 {
		t.Errorf("parking_writes_total = %v, want at least WS_B's 30 records", n)
	}
	if n := testutil.ToFloat64(a.m.ParkedChanges.WithLabelValues("WS_B")); n < 30 {
		t.Errorf("parked_changes{WS_B} = %v, want at least 30", n)
	}
	waitFor(t, 5*time.Second, "parked_oldest_age_seconds{WS_B} > 0", func() bool {
		return testutil.CollectAndCount(a.m.ParkedOldestAge) == 1 && testutil.ToFloat64(a.m.ParkedOldestAge.WithLabelValues("WS_B")) > 0
	})

	bl.set("WS_B", false)
	a.sink.setHold(func(wire.Request) bool { return false })
	h.produce(wsEvents(0, 12, true, "WS_A", "WS_B")...) // races the parked records' delivery
	log = h.readTopic(topic, partitions)
	waitFor(t, 30*time.Second, "WS_B delivered", func() bool {
		return fmtFold(h.rec.foldAccepted(reqOf("WS_B"))) == fmtFold(foldLog(log, ofWorkspace("WS_B")))
	})
	waitFor(t, 30*time.Second, "the detour of WS_B ended", func() bool { return len(detouredAt(h, 0)) == 0 })
	parked := len(h.parkedRecords())
	h.produce(wsEvents(0, 6, false, "WS_A", "WS_B")...)
	h.waitCommittedToEnd(30 * time.Second)
	log = h.readTopic(topic, partitions)
	waitFor(t, 30*time.Second, "everything delivered", func() bool {
		return fmtFold(h.rec.foldAccepted(reqOf("WS_B"))) == fmtFold(foldLog(log, ofWorkspace("WS_B")))
	})
	h.waitParkingSettled(30 * time.Second)
	checkFold(t, h.rec.foldAccepted(reqOf("WS_A")), foldLog(log, ofWorkspace("WS_A")))
	checkFold(t, h.rec.foldAccepted(reqOf("WS_B")), foldLog(log, ofWorkspace("WS_B")))
	if n := len(h.parkedRecords()); n != parked {
		t.Errorf("%d records parked after the detour ended, want none (direct sends)", n-parked)
	}
	waitFor(t, 5*time.Second, "no parked_oldest_age_seconds series once delivered", func() bool {
		return testutil.CollectAndCount(a.m.ParkedOldestAge) == 0
	})
	h.rec.checkNoViolations(t)
}

// checkParkedInOrder checks that every record of workspace w in log is in
// the parking topic, and that per parking partition w's records are in
// source order (duplicates allowed only as repeats of a later record's
// predecessors).
func checkParkedInOrder(t *testing.T, parked []parkio.Parked, log []kafka.Message, w string) {
	t.Helper()
	want := map[int64]bool{}
	for _, m := range log {
		if ev, err := event.Decode(m.Value, ""); err == nil && ev.Workspace == w {
			want[m.Offset] = true
		}
	}
	last := map[int]int64{}
	seen := map[int64]bool{}
	for _, p := range parked {
		if p.Workspace != w {
			continue
		}
		if l, ok := last[p.Partition]; ok && p.SourceOffset < l && !seen[p.SourceOffset] {
			t.Errorf("parking partition %d: source offset %d after %d, never seen before", p.Partition, p.SourceOffset, l)
		}
		last[p.Partition] = p.SourceOffset
		seen[p.SourceOffset] = true
		if p.Workspace != w || p.SourceTopic != topic {
			t.Errorf("parked record %+v", p.Record)
		}
	}
	for off := range want {
		if !seen[off] {
			t.Errorf("%s's record at offset %d was not parked", w, off)
		}
	}
	if len(want) == 0 {
		t.Fatal("test bug: nothing of the workspace in the log")
	}
}

// G2: WS_B becomes blocked while its requests are stuck in the sink (sent,
// no answer) and more of its changes wait in the batcher: the replan
// revokes them, detours WS_B and parks everything of it that was not
// settled, in order; WS_A goes on; once WS_B is unblocked, the membership
// per workspace is the log's.
func TestParkingReplanTakesABlockedWorkspaceOut(t *testing.T) {
	h := newHarness(t)
	bl := newBlockedSet()
	var stuck sync.Mutex // held: WS_B's requests get no answer
	stuckOn := true
	o := h.parkingOpts(bl, "WS_A", "WS_B")
	o.hold = func(req wire.Request) bool {
		stuck.Lock()
		defer stuck.Unlock()
		return bl.Blocked(req.Workspace) || req.Workspace == "WS_B" && stuckOn
	}
	a := h.startReplica("a", o)
	a.waitAssigned(t, partitions)

	h.produce(wsEvents(0, 30, false, "WS_A", "WS_B")...)
	log := h.readTopic(topic, partitions)
	waitFor(t, 20*time.Second, "WS_A sent, WS_B stuck", func() bool {
		return fmtFold(h.rec.foldAccepted(reqOf("WS_A"))) == fmtFold(foldLog(log, ofWorkspace("WS_A"))) &&
			h.rec.count("a", "held") > 0
	})
	if c := h.committed()[0]; c > 2 {
		t.Fatalf("partition 0 committed at %d past WS_B's first unsent record", c)
	}
	bl.set("WS_B", true)
	h.waitCommittedToEnd(30 * time.Second)
	// WS_B's stuck requests were abandoned (revoked): nothing of it is in
	// flight or pending in the batcher any more, it is all parked.
	waitFor(t, 10*time.Second, "the batcher empty", func() bool { return a.b.InFlight() == 0 && a.b.Pending() == 0 })
	if n := h.rec.count("a", "cancelled"); n == 0 {
		t.Errorf("no request of WS_B was cancelled by the replan")
	}
	h.produce(wsEvents(0, 12, true, "WS_A", "WS_B")...)
	h.waitCommittedToEnd(30 * time.Second)
	log = h.readTopic(topic, partitions)
	if got := h.rec.foldAccepted(reqOf("WS_B")); len(got) != 0 {
		t.Fatalf("accepted for WS_B while stuck or blocked: %s", fmtFold(got))
	}
	checkParkedInOrder(t, h.parkedRecords(), log, "WS_B")

	stuck.Lock()
	stuckOn = false
	stuck.Unlock()
	bl.set("WS_B", false)
	a.sink.setHold(func(wire.Request) bool { return false })
	waitFor(t, 30*time.Second, "WS_B delivered", func() bool {
		return fmtFold(h.rec.foldAccepted(reqOf("WS_B"))) == fmtFold(foldLog(log, ofWorkspace("WS_B")))
	})
	h.waitCommittedToEnd(30 * time.Second)
	h.waitParkingSettled(30 * time.Second)
	checkFold(t, h.rec.foldAccepted(reqOf("WS_A")), foldLog(log, ofWorkspace("WS_A")))
	checkFold(t, h.rec.foldAccepted(reqOf("WS_B")), foldLog(log, ofWorkspace("WS_B")))
	if n := testutil.ToFloat64(a.m.Replans.WithLabelValues("blocked_changed")); n < 1 {
		t.Errorf("replans_total{reason=blocked_changed} = %v", n)
	}
	h.rec.checkNoViolations(t)
}

// G3: the owner stops while WS_B is parked (its successor starts from the
// commits alone: the source's d=WS_B and the parking partitions' state),
// and WS_B is unblocked before the successor starts, with records of WS_B
// in the source that the old owner never read. The successor must park
// those behind the parked ones (d= from the metadata, positions from the
// ends) until those are delivered, then send directly. The successor's
// parking readers start late, so a direct send that overtook the parked
// records would be accepted first and lose to them.
func TestParkingSuccessorRebuildsFromTheCommits(t *testing.T) {
	h := newHarness(t)
	bl := newBlockedSet("WS_B")
	a := h.startReplica("a", h.parkingOpts(bl, "WS_A", "WS_B"))
	a.waitAssigned(t, partitions)
	h.produce(wsEvents(0, 30, false, "WS_A", "WS_B")...)
	h.waitCommittedToEnd(30 * time.Second)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if got := h.rec.foldAccepted(reqOf("WS_B")); len(got) != 0 {
		t.Fatalf("accepted for the blocked WS_B: %s", fmtFold(got))
	}
	h.produce(wsEvents(0, 12, true, "WS_A", "WS_B")...)
	log := h.readTopic(topic, partitions)

	bl.set("WS_B", false)
	o := h.parkingOpts(bl, "WS_A", "WS_B")
	parkTopic := parkio.TopicName(h.group)
	o.wrapReaders = func(tp consumer.TopicPartition, open func() (consumer.PartitionReader, error)) (consumer.PartitionReader, error) {
		if tp.Topic == parkTopic {
			time.Sleep(1500 * time.Millisecond)
		}
		return open()
	}
	h.startReplica("b", o)
	waitFor(t, 30*time.Second, "WS_B delivered", func() bool {
		return fmtFold(h.rec.foldAccepted(reqOf("WS_B"))) == fmtFold(foldLog(log, ofWorkspace("WS_B")))
	})
	h.waitCommittedToEnd(30 * time.Second)
	waitFor(t, 30*time.Second, "the detour of WS_B ended", func() bool { return len(detouredAt(h, 0)) == 0 })
	h.waitParkingSettled(30 * time.Second)
	checkFold(t, h.rec.foldAccepted(reqOf("WS_A")), foldLog(log, ofWorkspace("WS_A")))
	checkFold(t, h.rec.foldAccepted(reqOf("WS_B")), foldLog(log, ofWorkspace("WS_B")))
	h.rec.checkNoViolations(t)
}

// lateReaders wraps the readers of topic tp so that they return nothing
// before at (a stop or a replan still ends their wait).
func lateReaders(tp string, at time.Time) func(consumer.TopicPartition, func() (consumer.PartitionReader, error)) (consumer.PartitionReader, error) {
	return func(p consumer.TopicPartition, open func() (consumer.PartitionReader, error)) (consumer.PartitionReader, error) {
		r, err := open()
		if err != nil || p.Topic != tp {
			return r, err
		}
		return lateReader{r, at}, nil
	}
}

type lateReader struct {
	consumer.PartitionReader
	at time.Time
}

func (r lateReader) FetchMessage(ctx context.Context) (kafka.Message, error) {
	select {
	case <-time.After(time.Until(r.at)):
	case <-ctx.Done():
		return kafka.Message{}, ctx.Err()
	}
	return r.PartitionReader.FetchMessage(ctx)
}

// failCommits makes the broker refuse every offset commit of the group
// while down is true: a replica that stops then loses its last commits,
// as if it had crashed.
func (h *harness) failCommits(down *atomic.Bool) {
	h.cluster.ControlKey(int16(kmsg.OffsetCommit), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		h.cluster.KeepControl()
		if !down.Load() {
			return nil, nil, false
		}
		req := kr.(*kmsg.OffsetCommitRequest)
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range req.Topics {
			t := kmsg.NewOffsetCommitResponseTopic()
			t.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				p := kmsg.NewOffsetCommitResponseTopicPartition()
				p.Partition = rp.Partition
				p.ErrorCode = kerr.CoordinatorLoadInProgress.Code
				t.Partitions = append(t.Partitions, p)
			}
			resp.Topics = append(resp.Topics, t)
		}
		return resp, nil, true
	})
}

// G3, a crash: the owner parks WS_B's records, then parks more of them (and
// delivers WS_A's) with every commit refused, and stops: its successor
// starts from older commits (d=WS_B and parking partitions' state from
// before the refused ones), with WS_B unblocked. It re-reads and parks
// again what the owner had parked after its last commit (duplicates after
// their originals), delivers the parked records in order before any direct
// send of WS_B, and ends the detour. Its parking readers start late, so a
// direct send that overtook them (the detour ignored, or ended before the
// parked records were settled) would lose to them.
func TestParkingCrashedOwnerSuccessor(t *testing.T) {
	h := newHarness(t)
	var down atomic.Bool
	h.failCommits(&down)
	bl := newBlockedSet("WS_B")
	a := h.startReplica("a", h.parkingOpts(bl, "WS_A", "WS_B"))
	a.waitAssigned(t, partitions)
	h.produce(wsEvents(0, 30, false, "WS_A", "WS_B")...)
	h.waitCommittedToEnd(30 * time.Second)
	committed := h.committed()[0]
	down.Store(true)
	h.produce(wsEvents(0, 12, true, "WS_A", "WS_B")...)
	log := h.readTopic(topic, partitions)
	waitFor(t, 20*time.Second, "a parked and sent the second round", func() bool {
		return len(h.parkedRecords()) >= 42 &&
			fmtFold(h.rec.foldAccepted(reqOf("WS_A"))) == fmtFold(foldLog(log, ofWorkspace("WS_A")))
	})
	_ = a.stop()
	down.Store(false)
	if c := h.committed()[0]; c != committed {
		t.Fatalf("test bug: partition 0 committed at %d, want the commit before the refused ones, %d", c, committed)
	}

	bl.set("WS_B", false)
	o := h.parkingOpts(bl, "WS_A", "WS_B")
	parkTopic := parkio.TopicName(h.group)
	o.wrapReaders = lateReaders(parkTopic, time.Now().Add(3*time.Second))
	b := h.startReplica("b", o)
	b.waitAssigned(t, partitions)
	// A third round while the parked records wait for b's slow readers: an
	// early un-detour would send it directly, before them.
	time.Sleep(500 * time.Millisecond)
	h.produce(wsEvents(0, 6, false, "WS_A", "WS_B")...)
	log = h.readTopic(topic, partitions)
	h.waitCommittedToEnd(30 * time.Second)
	waitFor(t, 30*time.Second, "the detour of WS_B ended", func() bool { return len(detouredAt(h, 0)) == 0 })
	h.waitParkingSettled(30 * time.Second)
	checkFold(t, h.rec.foldAccepted(reqOf("WS_A")), foldLog(log, ofWorkspace("WS_A")))
	checkFold(t, h.rec.foldAccepted(reqOf("WS_B")), foldLog(log, ofWorkspace("WS_B")))
	if n := len(h.parkedRecords()); n <= 42 {
		t.Errorf("%d records parked: b parked nothing again after the lost commits", n)
	}
	h.rec.checkNoViolations(t)
}

// A replan whose write-ahead commit keeps failing (the broker refuses every
// commit) retries until the commit is accepted, and parks nothing
// meanwhile; a shutdown that begins then is not held up by it.
func TestParkingReplanDoesNotHoldTheDrain(t *testing.T) {
	h := newHarness(t)
	var down atomic.Bool
	down.Store(true)
	h.failCommits(&down)
	bl := newBlockedSet("WS_B")
	a := h.startReplica("a", h.parkingOpts(bl, "WS_A", "WS_B"))
	a.waitAssigned(t, partitions)
	h.produce(wsEvents(0, 10, false, "WS_A", "WS_B")...)
	waitFor(t, 20*time.Second, "a replan", func() bool { return testutil.ToFloat64(a.m.Replans.WithLabelValues("blocked")) >= 1 })
	time.Sleep(500 * time.Millisecond)
	if n := len(h.parkedRecords()); n != 0 {
		t.Errorf("%d records parked before the detour's commit was accepted (write-ahead)", n)
	}
	start := time.Now()
	_ = a.stop()
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the drain took %v behind a replan retrying its commit", took)
	}
}

// Two workspaces parked in the same parking partitions: unblocking one
// delivers its parked records (and ends its detour) while the other stays
// held and nothing of it is sent; then the other follows. WS_A flows
// throughout.
func TestParkingResumesOneOfTwoHeld(t *testing.T) {
	h := newHarness(t)
	bl := newBlockedSet("WS_B", "WS_C")
	a := h.startReplica("a", h.parkingOpts(bl, "WS_A", "WS_B", "WS_C"))
	a.waitAssigned(t, partitions)
	recs := wsEvents(0, 24, false, "WS_A", "WS_B")
	recs = append(recs, wsEvents(0, 24, false, "WS_C", "WS_A")...)
	h.produce(recs...)
	h.waitCommittedToEnd(30 * time.Second)
	log := h.readTopic(topic, partitions)
	checkFold(t, h.rec.foldAccepted(reqOf("WS_A")), foldLog(log, ofWorkspace("WS_A")))
	parked := map[string]map[int]bool{}
	for _, p := range h.parkedRecords() {
		if parked[p.Workspace] == nil {
			parked[p.Workspace] = map[int]bool{}
		}
		parked[p.Workspace][p.Partition] = true
	}
	shared := false
	for k := range parked["WS_C"] {
		shared = shared || parked["WS_B"][k]
	}
	if !shared {
		t.Fatalf("test bug: WS_B and WS_C share no parking partition (%v)", parked)
	}

	bl.set("WS_C", false)
	waitFor(t, 30*time.Second, "WS_C delivered", func() bool {
		return fmtFold(h.rec.foldAccepted(reqOf("WS_C"))) == fmtFold(foldLog(log, ofWorkspace("WS_C")))
	})
	waitFor(t, 30*time.Second, "the detour of WS_C ended", func() bool { return !slices.Contains(detouredAt(h, 0), "WS_C") })
	h.produce(wsEvents(0, 6, true, "WS_C", "WS_B")...)
	h.waitCommittedToEnd(30 * time.Second)
	log = h.readTopic(topic, partitions)
	waitFor(t, 30*time.Second, "WS_C's later records sent", func() bool {
		return fmtFold(h.rec.foldAccepted(reqOf("WS_C"))) == fmtFold(foldLog(log, ofWorkspace("WS_C")))
	})
	if n := h.rec.attempts("WS_B"); n != 0 {
		t.Fatalf("%d requests of the still blocked WS_B were sent", n)
	}

	bl.set("WS_B", false)
	a.sink.setHold(func(wire.Request) bool { return false })
	waitFor(t, 30*time.Second, "WS_B delivered", func() bool {
		return fmtFold(h.rec.foldAccepted(reqOf("WS_B"))) == fmtFold(foldLog(log, ofWorkspace("WS_B")))
	})
	h.waitParkingSettled(30 * time.Second)
	h.checkFolds(t, log, "WS_A", "WS_B", "WS_C")
}

// A workspace outside the registry, with parking: its events are parked
// like those of a workspace without a key (the sink stops its line,
// no_key: blocked here from the start), not dead-lettered as
// unknown_workspace; once the registry serves it and the sink unblocks
// it, they are delivered by themselves, in log order, with no replay.
func TestParkingUnknownWorkspaceUntilServed(t *testing.T) {
	h := newHarness(t)
	bl := newBlockedSet("WS_C")
	var served atomic.Bool
	opts := h.parkingOpts(bl, "WS_A")
	opts.serves = func(w string) bool { return w == "WS_C" && served.Load() }
	a := h.startReplica("a", opts)
	a.waitAssigned(t, partitions)

	h.produce(wsEvents(0, 20, false, "WS_A", "WS_C")...)
	h.waitCommittedToEnd(30 * time.Second)
	log := h.readTopic(topic, partitions)
	checkFold(t, h.rec.foldAccepted(reqOf("WS_A")), foldLog(log, ofWorkspace("WS_A")))
	if n := len(h.readTopic(dlqTopic, dlqParts)); n != 0 {
		t.Fatalf("%d dead letters: WS_C's events were dead-lettered, not parked", n)
	}
	checkParkedInOrder(t, h.parkedRecords(), log, "WS_C")

	served.Store(true) // the registry gains WS_C; the sink's no_key hold ends
	bl.set("WS_C", false)
	a.sink.setHold(func(wire.Request) bool { return false })
	waitFor(t, 30*time.Second, "WS_C delivered", func() bool {
		return fmtFold(h.rec.foldAccepted(reqOf("WS_C"))) == fmtFold(foldLog(log, ofWorkspace("WS_C")))
	})
	h.waitParkingSettled(30 * time.Second)
	h.rec.checkNoViolations(t)
}

// A parked record's not-before holds its cohort, not the parking partition
// (DESIGN.md protocol 2): WS_B's records are parked while their cohorts are
// held for an hour (HoldOf), and once WS_B is unblocked every one of them
// is handed on at once, each with its cohort's hold (HoldCohort, from its
// reading), in log order. A reader that waited out each record's
// not-before itself would deliver one record an hour.
func TestParkedNotBeforeHoldsTheCohortNotThePartition(t *testing.T) {
	h := newHarness(t)
	bl := newBlockedSet("WS_B")
	o := h.parkingOpts(bl, "WS_A", "WS_B")
	const nb = time.Hour
	o.parking.HoldOf = func(hd wire.Header) time.Duration {
		if hd.Workspace == "WS_B" {
			return nb
		}
		return 0
	}
	type held struct {
		h     wire.Header
		until time.Time
		at    time.Time
	}
	var mu sync.Mutex
	var holds []held
	o.parking.HoldCohort = func(hd wire.Header, until time.Time) {
		mu.Lock()
		defer mu.Unlock()
		holds = append(holds, held{hd, until, time.Now()})
	}
	a := h.startReplica("a", o)
	a.waitAssigned(t, partitions)
	h.produce(wsEvents(0, 12, false, "WS_A", "WS_B")...)
	h.waitCommittedToEnd(30 * time.Second)
	log := h.readTopic(topic, partitions)
	if n := h.rec.attempts("WS_B"); n != 0 {
		t.Fatalf("%d requests of the blocked WS_B were sent", n)
	}
	for _, p := range h.parkedRecords() {
		if p.Workspace == "WS_B" && p.NotBefore < nb-time.Second {
			t.Fatalf("test bug: WS_B's record at %d/%d parked with not-before %s, want %s", p.Partition, p.Offset, p.NotBefore, nb)
		}
	}

	bl.set("WS_B", false)
	a.sink.setHold(func(wire.Request) bool { return false })
	waitFor(t, 30*time.Second, "WS_B delivered", func() bool {
		return fmtFold(h.rec.foldAccepted(reqOf("WS_B"))) == fmtFold(foldLog(log, ofWorkspace("WS_B")))
	})
	mu.Lock()
	defer mu.Unlock()
	if len(holds) < 12 {
		t.Fatalf("%d cohort holds taken for WS_B's 12 parked records", len(holds))
	}
	for _, x := range holds {
		if x.h.Workspace != "WS_B" {
			t.Errorf("a hold for %s's cohort %s: only WS_B's records carry a not-before", x.h.Workspace, x.h.CohortID)
		}
		if d := x.until.Sub(x.at); d < nb-time.Second || d > nb {
			t.Errorf("cohort %s held %s from its reading, want %s", x.h.CohortID, d, nb)
		}
	}
	h.checkFolds(t, log, "WS_A", "WS_B")
}
