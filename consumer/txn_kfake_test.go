package consumer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// TestTransactionalInputKfake (issue 18 §8) is TestTransactionalInput of
// integration/ on kfake, with franz-go's transactional producer: plain
// records interleaved with transactions that commit or abort. Only plain
// and committed changes are sent, nothing is dead-lettered (the markers
// included), and every partition is committed to its end, although each
// ends with an abort marker.
func TestTransactionalInputKfake(t *testing.T) {
	h := newHarness(t)
	h.startReplica("r1", replicaOpts{})
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.brokers...), kgo.TransactionalID("txn-"+t.Name()),
		kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want := map[string]bool{}    // uids that must be sent (added)
	aborted := map[string]bool{} // uids that must never be sent
	txn := func(round int, commit bool, parts ...int) {
		t.Helper()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i, p := range parts {
			uid := fmt.Sprintf("t%02d-%d", round, i)
			rec := &kgo.Record{Partition: int32(p), Key: []byte(uid),
				Value: encodeChange(change{part: p, action: event.Add, cohort: "c1", uid: uid})}
			if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if commit {
				want[uid] = true
			} else {
				aborted[uid] = true
			}
		}
		end := kgo.TryAbort
		if commit {
			end = kgo.TryCommit
		}
		if err := cl.EndTransaction(ctx, end); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 30 {
		uid := fmt.Sprintf("p%02d", round)
		h.produce(valid(change{part: round % partitions, action: event.Add, cohort: "c1", uid: uid}))
		want[uid] = true
		var parts []int
		for i := range 1 + round%3 {
			parts = append(parts, (round+i)%partitions)
		}
		txn(round, round%3 == 0, parts...)
	}
	txn(99, false, seq(partitions)...) // every partition ends with an abort marker
	h.waitCommittedToEnd(30 * time.Second)

	got := h.rec.foldAccepted(nil)
	for uid := range want {
		if got[memberKey{"c1", uid}] != event.Add {
			t.Errorf("%s: not sent", uid)
		}
	}
	for k := range got {
		if aborted[k.uid] {
			t.Errorf("%s of an aborted transaction was sent", k.uid)
		}
	}
	for p, end := range h.endOffsets(dlqTopic, dlqParts) {
		if end != 0 {
			t.Errorf("dead-letter partition %d holds %d letters", p, end)
		}
	}
}
