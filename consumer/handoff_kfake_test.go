package consumer_test

// Hand-over proofs (consumer/handoff.go; DESIGN.md Non-obvious 11): the next
// owner of a partition waits MaxProcessingTime unless the previous owner
// proved, in its offsets' metadata, that it handed over cleanly.

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/consumer"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// settlingBatcher is the app's settlingBatcher with a test's settle in
// place of sink.Client.Settle.
type settlingBatcher struct {
	*batcher.Batcher
	settle func(context.Context) error
}

func (b settlingBatcher) Revoke(ctx context.Context) error {
	if err := b.Batcher.Revoke(ctx); err != nil {
		return err
	}
	return b.settle(ctx)
}

func settling(b *batcher.Batcher, settle func(context.Context) error) consumer.Batcher {
	if settle == nil {
		return b
	}
	return settlingBatcher{b, settle}
}

// settleNeverOnce is a settle that, the first time, does not finish before
// the fence's deadline (RebalanceTimeout): a request whose outcome is unknown
// is still within MaxProcessingTime, so the replica is expelled while it
// settles. Later calls return at once.
func settleNeverOnce() func(context.Context) error {
	var once sync.Once
	return func(ctx context.Context) error {
		blocked := false
		once.Do(func() { blocked = true })
		if !blocked {
			return nil
		}
		<-ctx.Done()
		return ctx.Err()
	}
}

// marks reads the committed metadata of every partition of the input topic.
func (h *harness) marks() map[int]string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(h.brokers...), Transport: h.tr}
	res, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: h.group, Topics: map[string][]int{topic: seq(partitions)}})
	if err != nil {
		h.t.Fatalf("offset fetch: %v", err)
	}
	out := map[int]string{}
	for _, p := range res.Topics[topic] {
		out[p.Partition] = p.Metadata
	}
	return out
}

// firstAssignment waits for r's first assignment with partitions.
func firstAssignment(t *testing.T, r *replica) assignment {
	t.Helper()
	var first assignment
	waitFor(t, 60*time.Second, r.name+"'s first partitions", func() bool {
		for _, a := range r.assignments() {
			if len(a.parts) > 0 {
				first = a
				return true
			}
		}
		return false
	})
	return first
}

// sentBy returns the requests replica sent, in send order.
func (r *recorder) sentBy(replica string) []sentReq {
	var out []sentReq
	for _, s := range r.snapshot() {
		if s.replica == replica {
			out = append(out, s)
		}
	}
	return out
}

// produceAll produces one change of action per partition, uid u<p>.
func (h *harness) produceAll(action event.Action) {
	for p := range partitions {
		h.produce(valid(change{part: p, action: action, cohort: "c", uid: "u" + string(rune('0'+p))}))
	}
}

// TestExpelledOwnerHoldsNextOwner: replica a owns every partition and, when
// b joins, cannot settle (a request of its own whose outcome is unknown is
// still within MaxProcessingTime) before the rebalance timeout: the
// coordinator expels it, and it writes no proof. b must not send any
// request before MaxProcessingTime after it got the partitions: a late copy
// of a's "add" could otherwise overtake b's "remove". A first start (no
// committed offset, so no proof) waits as well.
func TestExpelledOwnerHoldsNextOwner(t *testing.T) {
	const wait = 4 * time.Second
	h := newHarness(t)
	a := h.startReplica("a", replicaOpts{maxProcessing: wait, settle: settleNeverOnce()})
	h.produceAll(event.Add)
	h.waitCommittedToEnd(30 * time.Second)
	aFirst := firstAssignment(t, a)
	for _, s := range h.rec.sentBy("a") {
		if s.at.Before(aFirst.at.Add(wait - 300*time.Millisecond)) {
			t.Errorf("a first start sent %s %s %v after %s, before MaxProcessingTime %s: no proof of a clean hand-over",
				s.req.Action, s.req.CohortID, s.req.UIDs, s.at.Sub(aFirst.at), wait)
			break
		}
	}

	b := h.startReplica("b", replicaOpts{maxProcessing: wait})
	bFirst := firstAssignment(t, b)
	if a.c.Joined() {
		t.Logf("a is in a generation again (it rejoined after its fence timed out)")
	}
	h.produceAll(event.Remove)
	h.waitCommittedToEnd(60 * time.Second)
	sent := h.rec.sentBy("b")
	if len(sent) == 0 {
		t.Fatal("b sent nothing")
	}
	for _, s := range sent {
		if early := s.at.Sub(bFirst.at); early < wait-300*time.Millisecond {
			t.Errorf("b sent %s %s %v %s after it took partitions %v over from an expelled owner, before MaxProcessingTime %s",
				s.req.Action, s.req.CohortID, s.req.UIDs, early, keys(bFirst.parts), wait)
		}
	}
	checkFold(t, h.rec.foldAccepted(nil), foldLog(h.readTopic(topic, partitions), nil))
	h.rec.checkNoViolations(t)
}

// TestCleanHandOverDoesNotWait: replica a fences cleanly when b joins, and
// proves it in the offsets' metadata (clean:<generation>); b reads the proof
// and sends its partitions' requests at once, without waiting
// MaxProcessingTime.
func TestCleanHandOverDoesNotWait(t *testing.T) {
	const wait = 8 * time.Second
	h := newHarness(t)
	a := h.startReplica("a", replicaOpts{maxProcessing: wait})
	h.produceAll(event.Add)
	h.waitCommittedToEnd(30 * time.Second)
	firstAssignment(t, a)

	b := h.startReplica("b", replicaOpts{maxProcessing: wait})
	bFirst := firstAssignment(t, b)
	want := "clean:" + strconv.Itoa(int(b.c.Generation())-1)
	for p, m := range h.marks() {
		if m != want {
			t.Errorf("partition %d: committed metadata %q after a clean hand-over, want %q", p, m, want)
		}
	}
	h.produceAll(event.Remove)
	waitFor(t, 30*time.Second, "b's first request", func() bool { return len(h.rec.sentBy("b")) > 0 })
	s := h.rec.sentBy("b")[0]
	if took := s.at.Sub(bFirst.at); took >= wait/2 {
		t.Errorf("b's first request went %s after it took partitions %v over cleanly: it waited for MaxProcessingTime %s without need",
			took, keys(bFirst.parts), wait)
	}
	h.waitCommittedToEnd(60 * time.Second)
	checkFold(t, h.rec.foldAccepted(nil), foldLog(h.readTopic(topic, partitions), nil))
	h.rec.checkNoViolations(t)
}

// TestInheritedHoldIsNotRestarted: a partition taken over without proof
// that moves again, cleanly, before its wait is over carries the rest of the
// wait in its mark (clean:<generation>;wait=<ms>): the next owner waits only
// that long, not MaxProcessingTime again. Rebalances more often than the
// bound would otherwise keep such a partition unread for ever.
func TestInheritedHoldIsNotRestarted(t *testing.T) {
	const wait = 5 * time.Second
	h := newHarness(t)
	a := h.startReplica("a", replicaOpts{maxProcessing: wait})
	aFirst := firstAssignment(t, a)
	h.produceAll(event.Add)
	time.Sleep(time.Until(aFirst.at.Add(2 * time.Second)))
	b := h.startReplica("b", replicaOpts{maxProcessing: wait})
	firstAssignment(t, b)
	h.waitCommittedToEnd(30 * time.Second)
	first := map[int]time.Time{} // partition -> its first request
	for _, s := range h.rec.snapshot() {
		if s.at.Before(aFirst.at.Add(wait - 300*time.Millisecond)) {
			t.Errorf("%s sent %v %s after the group's first start, before MaxProcessingTime %s", s.replica, s.req.UIDs,
				s.at.Sub(aFirst.at), wait)
		}
		for p := range s.parts {
			if _, ok := first[p]; !ok {
				first[p] = s.at
			}
		}
	}
	for p, at := range first {
		if late := at.Sub(aFirst.at); late > wait+1500*time.Millisecond {
			t.Errorf("partition %d was first sent %s after the group's first start: the wait began again at the rebalance (want about %s)",
				p, late, wait)
		}
	}
	if len(first) != partitions {
		t.Errorf("requests carried partitions %v, want all %d", first, partitions)
	}
	h.rec.checkNoViolations(t)
}

// TestDrainCaughtByJoinHandsOverWithProof: a replica draining when another
// joins (a rolling update: the replacement starts at once) finishes its
// drain, then leaves the group itself (handover.go). It proves the clean
// hand-over before it leaves, so the joining replica does not wait
// MaxProcessingTime.
func TestDrainCaughtByJoinHandsOverWithProof(t *testing.T) {
	const wait = 6 * time.Second
	h := newHarness(t)
	a := h.startReplica("a", replicaOpts{maxProcessing: wait})
	h.produceAll(event.Add)
	h.waitCommittedToEnd(30 * time.Second)
	a.sink.setHold(holdAll)
	h.produceAll(event.Remove)
	waitFor(t, 10*time.Second, "a's held requests", func() bool { return h.rec.count("a", "held") > 0 })
	stopped := make(chan error, 1)
	go func() { stopped <- a.stop() }() // the drain waits for the held requests
	b := h.startReplica("b", replicaOpts{maxProcessing: wait})
	time.Sleep(2 * time.Second) // the join has begun a rebalance: a's drain is caught by it
	a.sink.setHold(nil)
	if err := <-stopped; err != nil {
		t.Fatalf("a: %v", err)
	}
	bFirst := firstAssignment(t, b)
	h.produce(valid(change{part: 0, action: event.Add, cohort: "c2", uid: "v0"}))
	waitFor(t, 30*time.Second, "b's first request", func() bool { return len(h.rec.sentBy("b")) > 0 })
	if took := h.rec.sentBy("b")[0].at.Sub(bFirst.at); took >= wait/2 {
		t.Errorf("b's first request went %s after it took partitions %v over from a drain: it waited for MaxProcessingTime %s without need",
			took, keys(bFirst.parts), wait)
	}
	h.waitCommittedToEnd(30 * time.Second)
	checkFold(t, h.rec.foldAccepted(nil), foldLog(h.readTopic(topic, partitions), nil))
	h.rec.checkNoViolations(t)
}
