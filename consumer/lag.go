package consumer

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// watchLag publishes, for every partition of the generation, the records
// between the group's position and the partition's high watermark, read
// from the brokers every LagInterval (ListOffsets): it keeps moving while nothing
// is fetched or committed -- during an API outage, exactly when lag grows.
// The position is the last committed offset, else the generation's start
// offset, else the start of the log (a new group starts at the earliest
// offset). When the generation ends (a rebalance or a stop) the series of
// its partitions are deleted: their next owner reports them, and a revoked
// partition must not keep a stale value here.
func (c *Consumer) watchLag(gctx context.Context, parts []*partitionState, log *slog.Logger) {
	defer c.forgetLag(parts)
	if len(parts) == 0 {
		<-gctx.Done() // returning earlier would end the generation at once
		return
	}
	client := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Transport: c.cfg.Transport, Timeout: 10 * time.Second}
	t := time.NewTicker(c.cfg.LagInterval)
	defer t.Stop()
	failing := false
	for {
		err := c.updateLag(gctx, client, parts)
		switch {
		case err != nil && gctx.Err() == nil && !failing:
			log.Warn("reading high watermarks for the lag failed; retrying", "err", err)
			failing = true
		case err == nil && failing:
			log.Info("reading high watermarks for the lag works again")
			failing = false
		}
		select {
		case <-gctx.Done():
			return
		case <-t.C:
		}
	}
}

// updateLag reads the high watermarks (and, where the group has no position
// yet, the log start offsets) of parts and sets their lag.
func (c *Consumer) updateLag(ctx context.Context, client *kafka.Client, parts []*partitionState) error {
	last := map[string][]kafka.OffsetRequest{}
	for _, p := range parts {
		last[p.topic] = append(last[p.topic], kafka.LastOffsetOf(p.partition))
	}
	ends, err := listOffsets(ctx, client, last)
	if err != nil {
		return err
	}
	// The positions, read under commitMu (it guards committed).
	pos := make([]int64, len(parts))
	c.commitMu.Lock()
	for i, p := range parts {
		pos[i] = p.committed
		if pos[i] < 0 {
			pos[i] = p.start
		}
	}
	c.commitMu.Unlock()
	first := map[string][]kafka.OffsetRequest{}
	for i, p := range parts {
		if pos[i] < 0 {
			first[p.topic] = append(first[p.topic], kafka.FirstOffsetOf(p.partition))
		}
	}
	var starts map[tp]int64
	if len(first) > 0 {
		if starts, err = listOffsets(ctx, client, first); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil // revoked meanwhile: forgetLag runs, set nothing
	}
	for i, p := range parts {
		k := tp{p.topic, p.partition}
		end, ok := ends[k]
		if !ok {
			continue
		}
		at := pos[i]
		if at < 0 {
			if at, ok = starts[k]; !ok {
				continue
			}
		}
		c.m.Lag.WithLabelValues(p.topic, strconv.Itoa(p.partition)).Set(float64(max(end-at, 0)))
	}
	return nil
}

type tp struct {
	topic     string
	partition int
}

func listOffsets(ctx context.Context, client *kafka.Client, reqs map[string][]kafka.OffsetRequest) (map[tp]int64, error) {
	res, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: reqs})
	if err != nil {
		return nil, err
	}
	out := map[tp]int64{}
	for topic, pos := range res.Topics {
		for _, po := range pos {
			if po.Error != nil {
				return nil, po.Error
			}
			// A LastOffsetOf request answers in LastOffset, a
			// FirstOffsetOf one in FirstOffset.
			v := po.LastOffset
			if v < 0 {
				v = po.FirstOffset
			}
			out[tp{topic, po.Partition}] = v
		}
	}
	return out, nil
}

// forgetLag deletes the lag and committed-offset series of parts.
func (c *Consumer) forgetLag(parts []*partitionState) {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	for _, p := range parts {
		pl := strconv.Itoa(p.partition)
		c.m.Lag.DeleteLabelValues(p.topic, pl)
		c.m.CommittedOffset.DeleteLabelValues(p.topic, pl)
	}
}
