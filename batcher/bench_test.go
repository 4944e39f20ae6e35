package batcher_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

type nopAck struct{}

func (nopAck) Done() {}

type nopSink struct{}

func (nopSink) Send(context.Context, wire.Request) ([]wire.Rejection, error) { return nil, nil }

// BenchmarkAdd measures Add of one change at a time (70% adds), with full
// batches sent to a sink that accepts at once: "distinct" spreads 100,000
// users over 1,000 cohorts (each cohort sees ~100 of them, so most changes
// supersede or repeat one), "compacting" repeats 50 users, and "fresh"
// gives every change a new uid in one of 20 cohorts (a backlog: batches
// fill and are sent full).
func BenchmarkAdd(b *testing.B) {
	fresh := make([]string, 1<<20)
	for i := range fresh {
		fresh[i] = fmt.Sprintf("f%09d", i)
	}
	for _, tc := range []struct {
		name  string
		batch int
	}{{"distinct", 1}, {"compacting", 1}, {"fresh", 1}, {"distinct", 256}, {"compacting", 256}, {"fresh", 256}} {
		name := tc.name
		b.Run(fmt.Sprintf("%s/batch=%d", name, tc.batch), func(b *testing.B) {
			bt, err := batcher.New(batcher.Config{Limits: batcher.Limits{Window: time.Hour, MaxInFlight: 64}, Sink: nopSink{},
				DeadLetter: func(context.Context, []batcher.Rejected) error { return nil }})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go bt.Run(ctx)
			const cohorts, users = 1000, 100000
			hdrs := make([]wire.Header, 2*cohorts)
			for i := range cohorts {
				hdrs[2*i] = wire.Header{Action: event.Add, Partner: "p", CohortID: fmt.Sprintf("c%04d", i), CohortName: "name"}
				hdrs[2*i+1] = hdrs[2*i]
				hdrs[2*i+1].Action = event.Remove
			}
			uids := make([]string, users)
			for i := range uids {
				uids[i] = fmt.Sprintf("u%09d", i)
			}
			ch := make([]batcher.Change, 0, tc.batch)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				h := hdrs[2*(i%cohorts)+btoi(i%10 >= 7)]
				u := uids[(i*7919)%users]
				switch name {
				case "compacting":
					u = uids[i%50]
				case "fresh":
					h = hdrs[2*(i%20)+btoi(i%10 >= 7)]
					u = fresh[i&(len(fresh)-1)]
				}
				if ch = append(ch, batcher.Change{Header: h, UID: u, Ack: nopAck{}}); len(ch) < tc.batch {
					continue
				}
				if err := bt.Add(ctx, ch); err != nil {
					b.Fatal(err)
				}
				ch = ch[:0]
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
