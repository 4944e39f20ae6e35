package metrics

import (
	"context"
	"time"
)

// ReadyInterval is how often TrackReady evaluates readiness.
const ReadyInterval = 5 * time.Second

// TrackReady sets cohortsync_ready from ready every interval (and at once)
// until ctx ends, then sets it to 0: the gauge then says what the process
// knows, not what the last probe happened to see (a pod nobody probes, or a
// scrape between probes, still reports the truth). Run it in a goroutine.
func (m *Metrics) TrackReady(ctx context.Context, ready func() bool, interval time.Duration) {
	if interval <= 0 {
		interval = ReadyInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if ready() {
			m.Ready.Set(1)
		} else {
			m.Ready.Set(0)
		}
		select {
		case <-ctx.Done():
			m.Ready.Set(0)
			return
		case <-t.C:
		}
	}
}
