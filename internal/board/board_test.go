package board_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync-worker/internal/board"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

// TestBoardSharesRecords: two replicas' boards on one (in-process) Kafka
// cluster create the topic, see each other's latest record, report a fresh
// read, and a replica that stops deletes its record (a tombstone).
func TestBoardSharesRecords(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	log := slog.New(slog.DiscardHandler)
	a := board.New(board.Config{Brokers: brokers, Topic: "g.budget", Replica: "a", Logger: log})
	b := board.New(board.Config{Brokers: brokers, Topic: "g.budget", Replica: "b", Logger: log})
	actx, stopA := context.WithCancel(context.Background())
	bctx, stopB := context.WithCancel(context.Background())
	aDone, bDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(aDone); a.Run(actx) }()
	go func() { defer close(bDone); b.Run(bctx) }()
	defer func() { stopA(); stopB(); <-aDone; <-bDone }()

	publish := func(bd *board.Board, r ratelimit.Record) { t.Helper(); publishRetry(t, bd, r) }
	find := findRecord
	waitFor := func(what string, cond func() bool) { t.Helper(); waitFor(t, what, cond) }
	publish(a, ratelimit.Record{Replica: "a", Generation: 3, Share: 97, Demand: 300, At: 1})
	publish(b, ratelimit.Record{Replica: "b", Generation: 3, Share: 97, Demand: 1, Lent: map[string]float64{"a": 95.5}, Until: 9, At: 2})
	publish(b, ratelimit.Record{Replica: "b", Generation: 3, Share: 97, Demand: 1, Lent: map[string]float64{"a": 96}, Until: 10, At: 3})
	waitFor("a to see b's latest record", func() bool { r, ok := find(a, "b"); return ok && r.Lent["a"] == 96 && r.Until == 10 })
	waitFor("b to see a's record", func() bool { r, ok := find(b, "a"); return ok && r.Demand == 300 })
	if _, fresh := a.Records(); time.Since(fresh) > 10*time.Second {
		t.Fatalf("a last read the board up to its end at %v", fresh)
	}
	stopB()
	<-bDone
	waitFor("b's record to be deleted when it stopped", func() bool { _, ok := find(a, "b"); return !ok })
}

// publishRetry publishes r, retrying while the topic does not exist yet.
func publishRetry(t *testing.T, bd *board.Board, r ratelimit.Record) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := bd.Publish(ctx, r)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func findRecord(bd *board.Board, name string) (ratelimit.Record, bool) {
	recs, _ := bd.Records()
	for _, r := range recs {
		if r.Replica == name {
			return r, true
		}
	}
	return ratelimit.Record{}, false
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runBoard runs bd until the test ends.
func runBoard(t *testing.T, bd *board.Board) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); bd.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
}

// TestBoardSeesDuplicateReplica: two processes that publish under one
// replica name (what hostname+pid gave replicas of one image on the host
// network) each see the other's records under their own key, count them
// (the callback feeds a metric) and log an error naming the replica. A
// replica alone sees none, even with a former process's record under its
// key still on the board.
func TestBoardSeesDuplicateReplica(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "g.budget"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	var logs rig.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	// A former process under the name "solo" (of a version that did not
	// mark its messages) left a record: it was killed, no tombstone.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "g.budget", BatchTimeout: time.Millisecond}
	defer w.Close()
	waitFor(t, "the former process's record", func() bool {
		return w.WriteMessages(context.Background(), kafka.Message{Key: []byte("solo"), Value: []byte(`{"replica":"solo","at_ms":1}`)}) == nil
	})
	time.Sleep(10 * time.Millisecond) // the next Board starts after that record

	var soloDups, aDups, bDups atomic.Int64
	solo := board.New(board.Config{Brokers: brokers, Topic: "g.budget", Replica: "solo", Logger: log,
		OnDuplicate: func() { soloDups.Add(1) }})
	a := board.New(board.Config{Brokers: brokers, Topic: "g.budget", Replica: "vm-1", Logger: log,
		OnDuplicate: func() { aDups.Add(1) }})
	b := board.New(board.Config{Brokers: brokers, Topic: "g.budget", Replica: "vm-1", Logger: log,
		OnDuplicate: func() { bDups.Add(1) }})
	for _, bd := range []*board.Board{solo, a, b} {
		runBoard(t, bd)
	}
	for i := range 3 {
		publishRetry(t, solo, ratelimit.Record{Replica: "solo", Generation: 2, At: int64(10 + i)})
		publishRetry(t, a, ratelimit.Record{Replica: "vm-1", Generation: 2, Demand: 300, At: int64(10 + i)})
		publishRetry(t, b, ratelimit.Record{Replica: "vm-1", Generation: 2, Demand: 1, At: int64(10 + i)})
	}
	waitFor(t, "both vm-1 processes to see the other's records", func() bool {
		return a.Duplicates() >= 3 && b.Duplicates() >= 3
	})
	waitFor(t, "solo to read its own latest record", func() bool { r, ok := findRecord(solo, "solo"); return ok && r.At == 12 })
	if n := solo.Duplicates(); n != 0 || soloDups.Load() != 0 {
		t.Errorf("solo counted %d duplicates (callback %d): its own records and a former process's are not duplicates", n, soloDups.Load())
	}
	if aDups.Load() != a.Duplicates() || bDups.Load() != b.Duplicates() {
		t.Errorf("callbacks %d, %d; Duplicates %d, %d", aDups.Load(), bDups.Load(), a.Duplicates(), b.Duplicates())
	}
	if got := strings.Count(logs.String(), "publishes budget records under this replica's name"); got != 2 {
		t.Errorf("%d duplicate warnings, want one per vm-1 process (then at most one a minute):\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "replica=vm-1") {
		t.Errorf("the warning does not name the replica:\n%s", logs.String())
	}
}
