package consumer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
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

// TestKafkaGoReaderIgnoresTransactions pins the premise of committedReader
// (segmentio/kafka-go#1332): kafka-go's Reader, even with IsolationLevel
// ReadCommitted, delivers the records of an aborted transaction and the
// transaction markers as records. When this fails, kafka-go reads
// transactional input itself: committedReader may give way to its Reader.
func TestKafkaGoReaderIgnoresTransactions(t *testing.T) {
	h := newHarness(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.brokers...), kgo.TransactionalID("txn-"+t.Name()),
		kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, end := range []kgo.TransactionEndTry{kgo.TryAbort, kgo.TryCommit} {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: []byte(fmt.Sprint("commit=", bool(end)))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, end); err != nil {
			t.Fatal(err)
		}
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: h.brokers, Topic: topic, Partition: 0,
		MaxWait: 100 * time.Millisecond, IsolationLevel: kafka.ReadCommitted})
	defer r.Close()
	var got []string
	for range 4 { // aborted record, ABORT marker, committed record, COMMIT marker
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("kafka-go's Reader returned %d records (%q), then %v: it may now hide transaction markers (and aborted records)", len(got), got, err)
		}
		got = append(got, string(m.Value))
	}
	if got[0] != "commit=false" {
		t.Fatalf("kafka-go's Reader returned %q: it may now drop aborted records", got)
	}
}
