package board_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync-worker/internal/board"
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

	publish := func(bd *board.Board, r ratelimit.Record) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for { // the topic may not exist yet
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
	find := func(bd *board.Board, name string) (ratelimit.Record, bool) {
		recs, _ := bd.Records()
		for _, r := range recs {
			if r.Replica == name {
				return r, true
			}
		}
		return ratelimit.Record{}, false
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
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
