package consumer

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestLagReadEveryLagInterval (issue 20 §6): a generation reads the high
// watermarks every Config.LagInterval of its own Consumer (a package
// variable turned by one test would pace every Consumer of the process).
func TestLagReadEveryLagInterval(t *testing.T) {
	t.Parallel()
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	var reads atomic.Int32
	cl.ControlKey(int16(kmsg.ListOffsets), func(kmsg.Request) (kmsg.Response, error, bool) {
		cl.KeepControl()
		reads.Add(1)
		return nil, nil, false // kfake answers
	})
	c, err := New(Config{Brokers: cl.ListenAddrs(), Topics: []string{"in"}, GroupID: "g",
		Batcher: nopBatcher{}, DLQ: &deadletter.DLQ{}, LagInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer time.AfterFunc(time.Second, cancel).Stop()
	parts := []*partitionState{{topic: "in", partition: 0, start: 0, committed: -1}}
	c.watchLag(ctx, parts, c.log) // returns when ctx ends
	// 20 reads in the second at 50ms; one at the 15s default.
	if n := reads.Load(); n < 5 {
		t.Fatalf("%d reads of the high watermarks in 1s with LagInterval 50ms", n)
	}
}
