package integration

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestHandOffMarkPremises pins, on the real broker, what the proof of a
// clean hand-over (consumer/handoff.go, DESIGN.md Non-obvious 11) relies on:
//   - an OffsetCommit with the generation's id and member id, sent by a
//     member whose generation has ended but the group is still preparing
//     the rebalance (the fence's moment), is accepted, with its metadata;
//   - the next generation's id is the previous one's plus one, and its
//     members read that metadata back (OffsetFetch);
//   - once the next generation has started, a commit with the old
//     generation's id is refused: an owner too late to settle cannot write
//     a proof after the partitions moved on.
func TestHandOffMarkPremises(t *testing.T) {
	topic, _ := newTopic(t, 2)
	group := "it-handoff-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	newGroup := func() *kafka.ConsumerGroup {
		g, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{ID: group, Brokers: []string{brokerAddr}, Topics: []string{topic},
			HeartbeatInterval: 500 * time.Millisecond, SessionTimeout: 6 * time.Second, RebalanceTimeout: 10 * time.Second,
			JoinGroupBackoff: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Close() })
		return g
	}
	cl := &kafka.Client{Addr: kafka.TCP(brokerAddr)}
	commit := func(gen *kafka.Generation, meta string) error {
		res, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: group, GenerationID: int(gen.ID), MemberID: gen.MemberID,
			Topics: map[string][]kafka.OffsetCommit{topic: {{Partition: 0, Offset: 0, Metadata: meta}, {Partition: 1, Offset: 0, Metadata: meta}}}})
		if err != nil {
			return err
		}
		for _, p := range res.Topics[topic] {
			err = errors.Join(err, p.Error)
		}
		return err
	}

	x := newGroup()
	gen1, err := x.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mark := "clean:" + strconv.Itoa(int(gen1.ID))
	fenceCommit := make(chan error, 1)
	gen1.Start(func(gctx context.Context) {
		<-gctx.Done() // the rebalance began: the fence's moment
		fenceCommit <- commit(gen1, mark)
	})

	y := newGroup()
	yGen := make(chan *kafka.Generation, 1)
	go func() {
		g, err := y.Next(ctx)
		if err != nil {
			t.Error(err)
		}
		yGen <- g
	}()
	if err := <-fenceCommit; err != nil {
		t.Fatalf("commit with the ended generation %d while the group prepares the rebalance: %v (the fence's proof would never be written)", gen1.ID, err)
	}
	if _, err := x.Next(ctx); err != nil {
		t.Fatal(err)
	}
	var gen2 *kafka.Generation
	select {
	case gen2 = <-yGen:
	case <-ctx.Done():
		t.Fatal("the second member never joined")
	}
	if gen2 == nil {
		t.FailNow()
	}
	if gen2.ID != gen1.ID+1 {
		t.Fatalf("the next generation is %d after %d: a proof by the previous generation would be misread", gen2.ID, gen1.ID)
	}
	res, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0, 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Topics[topic]) != 2 {
		t.Fatalf("offset fetch: %+v", res)
	}
	for _, p := range res.Topics[topic] {
		if p.Error != nil || p.Metadata != mark {
			t.Errorf("partition %d: metadata %q (err %v) in the next generation, want %q", p.Partition, p.Metadata, p.Error, mark)
		}
	}
	if err := commit(gen1, mark); err == nil {
		t.Fatalf("a commit with generation %d was accepted after generation %d started: a late owner could prove a hand-over it did not make", gen1.ID, gen2.ID)
	} else {
		t.Logf("a commit with the old generation %d is refused in generation %d: %v", gen1.ID, gen2.ID, err)
	}
}
