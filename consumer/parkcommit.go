package consumer

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// commitParking is commit with Config.Parking: every partition with its
// parking metadata (a source partition's d=, a parking partition's
// Partition commit), through an OffsetCommit carrying the generation and
// member id (kafka-go's Generation.CommitOffsets writes no metadata, and a
// commit without it would erase d=). It commits the partitions whose offset
// or metadata moved, or all with force (the replan's write-ahead commit),
// and returns an error unless every one was accepted.
func (c *Consumer) commitParking(gen *kafka.Generation, parts []*partitionState, log *slog.Logger, hb *metrics.Loop, force bool) error {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	type upd struct {
		off  int64
		meta string
	}
	moved := map[*partitionState]upd{}
	commits := map[string][]kafka.OffsetCommit{}
	for _, p := range parts {
		if p.sealed {
			continue
		}
		off, meta := c.parkMeta(p, sourceOffset(p))
		if off < 0 || !force && off == p.committed && meta == p.committedMeta {
			continue
		}
		moved[p] = upd{off, meta}
		commits[p.topic] = append(commits[p.topic], kafka.OffsetCommit{Partition: p.partition, Offset: off, Metadata: meta})
	}
	if len(moved) == 0 {
		return nil
	}
	hb.Idle() // a network call: a broker outage is not a wedge
	defer hb.Busy()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Transport: c.cfg.Transport}
	res, failed, err := offsetCommit(ctx, cl, gen, commits)
	if err != nil {
		c.m.Commits.WithLabelValues("error").Inc()
		log.Warn("offset commit failed", "err", err)
	} else {
		c.m.Commits.WithLabelValues("ok").Inc()
	}
	for p, u := range moved {
		if res == nil || failed[TopicPartition{p.topic, p.partition}] {
			continue
		}
		p.committed, p.committedMeta = u.off, u.meta
		c.m.CommittedOffset.WithLabelValues(p.topic, strconv.Itoa(p.partition)).Set(float64(u.off))
	}
	return err
}

// offsetCommit commits in gen and returns the response, the partitions the
// brokers refused (each one's error joined into err) and err (nil: every
// partition committed). res is nil when the request itself failed.
func offsetCommit(ctx context.Context, cl *kafka.Client, gen *kafka.Generation, commits map[string][]kafka.OffsetCommit) (res *kafka.OffsetCommitResponse, failed map[TopicPartition]bool, err error) {
	res, err = cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: gen.GroupID, GenerationID: int(gen.ID),
		MemberID: gen.MemberID, Topics: commits})
	failed = map[TopicPartition]bool{}
	if err != nil {
		return nil, failed, err
	}
	for t, ps := range res.Topics {
		for _, p := range ps {
			if p.Error != nil {
				failed[TopicPartition{t, p.Partition}] = true
				err = errors.Join(err, p.Error)
			}
		}
	}
	return res, failed, err
}
