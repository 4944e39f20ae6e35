package consumer

import (
	"context"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
)

type nopBatcher struct{}

func (nopBatcher) Add(context.Context, []batcher.Change) error { return nil }
func (nopBatcher) Revoke(context.Context) error                { return nil }
func (nopBatcher) Flush(context.Context) error                 { return nil }

// TestLagIntervalDefault (issue 20 §6): how often the lag is read is a
// Config field of each Consumer, not a package variable that tests turn:
// 15s when zero, else what was set.
func TestLagIntervalDefault(t *testing.T) {
	t.Parallel()
	for set, want := range map[time.Duration]time.Duration{0: 15 * time.Second, 100 * time.Millisecond: 100 * time.Millisecond} {
		c, err := New(Config{Brokers: []string{"kafka:9092"}, Topics: []string{"in"}, GroupID: "g",
			Batcher: nopBatcher{}, DLQ: &deadletter.DLQ{}, LagInterval: set})
		if err != nil {
			t.Fatal(err)
		}
		if c.cfg.LagInterval != want {
			t.Errorf("LagInterval %v: the consumer reads the lag every %v, want %v", set, c.cfg.LagInterval, want)
		}
	}
}
