package consumer

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// commitEvery commits parts every CommitInterval until gctx ends.
func (c *Consumer) commitEvery(gctx context.Context, gen *kafka.Generation, parts []*partitionState, log *slog.Logger) {
	t := time.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	hb := c.m.Loops.Start("commit") // /healthz: busy from a tick to the next wait
	defer hb.Stop()
	for {
		hb.Idle()
		select {
		case <-gctx.Done():
			return
		case <-t.C:
			hb.Busy()
			c.commit(gen, parts, log, hb)
		}
	}
}

// commit commits every partition whose watermark moved.
func (c *Consumer) commit(gen *kafka.Generation, parts []*partitionState, log *slog.Logger, hb *metrics.Loop) {
	if c.cfg.Parking != nil {
		_ = c.commitParking(gen, parts, log, hb, false) // logged; the next tick retries
		return
	}
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	offsets := map[string]map[int]int64{}
	var moved []*partitionState
	for _, p := range parts {
		tr := p.tr.Load()
		if tr == nil || p.sealed {
			continue
		}
		w := tr.watermark()
		if w <= p.committed {
			continue
		}
		if offsets[p.topic] == nil {
			offsets[p.topic] = map[int]int64{}
		}
		offsets[p.topic][p.partition] = w
		moved = append(moved, p)
	}
	if len(moved) == 0 {
		return
	}
	hb.Idle() // a network call: a broker outage is not a wedge
	err := gen.CommitOffsets(offsets)
	hb.Busy()
	if err != nil {
		c.m.Commits.WithLabelValues("error").Inc()
		log.Warn("offset commit failed", "err", err)
		return
	}
	c.m.Commits.WithLabelValues("ok").Inc()
	for _, p := range moved {
		p.committed = offsets[p.topic][p.partition]
		pl := strconv.Itoa(p.partition)
		c.m.CommittedOffset.WithLabelValues(p.topic, pl).Set(float64(p.committed))
	}
}
