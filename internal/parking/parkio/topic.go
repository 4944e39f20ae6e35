package parkio

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/parking"
)

// MaxMessageBytes is the max.message.bytes of a parking topic created by
// Ensure: the broker's default message.max.bytes (1 MiB + 12, the largest
// source record batch a default broker accepts) plus 64 KiB for the headers
// a parked record adds. The Writer sends batches of at most MaxBatchBytes.
const MaxMessageBytes = 1<<20 + 64<<10

// Ensure creates the topic (delete cleanup, cfg.Partitions,
// cfg.Replication, cfg.Retention, min.insync.replicas min(2, replication),
// max.message.bytes MaxMessageBytes) unless it exists, and returns its
// partition count (an existing topic's count wins). Never via
// auto-creation: the metadata request asks for all topics, because asking
// for the one topic would have a broker with auto.create.topics.enable
// create it with the broker's defaults. The replication is capped at the
// number of brokers (a single-broker test cluster works). A topic created
// meanwhile by another replica (TopicAlreadyExists) is success: its count
// is read back.
func Ensure(ctx context.Context, cfg Config) (partitions int, err error) {
	cfg = cfg.withDefaults()
	c := cfg.client()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return 0, fmt.Errorf("parkio: metadata: %w", err)
	}
	if n := topicPartitions(md, cfg.Topic); n > 0 {
		return n, nil
	}
	repl := min(cfg.Replication, max(1, len(md.Brokers)))
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: cfg.Topic, NumPartitions: cfg.Partitions, ReplicationFactor: repl,
		ConfigEntries: []kafka.ConfigEntry{
			{ConfigName: "cleanup.policy", ConfigValue: "delete"},
			{ConfigName: "retention.ms", ConfigValue: strconv.FormatInt(cfg.Retention.Milliseconds(), 10)},
			{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(min(2, repl))},
			{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(MaxMessageBytes)},
		},
	}}})
	if err != nil {
		return 0, fmt.Errorf("parkio: create %s: %w", cfg.Topic, err)
	}
	switch err := res.Errors[cfg.Topic]; {
	case err == nil:
		return cfg.Partitions, nil
	case !errors.Is(err, kafka.TopicAlreadyExists):
		return 0, fmt.Errorf("parkio: create %s: %w", cfg.Topic, err)
	}
	return existingCount(ctx, c, cfg.Topic)
}

// existingCount reads the partition count of a topic that another client
// has just created. Its metadata may lag: kafka-go's Transport answers a
// metadata request from its cache, refreshed every MetadataTTL (6 s by
// default), so this polls for up to 30 s.
func existingCount(ctx context.Context, c *kafka.Client, topic string) (int, error) {
	for range 120 {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
		if err == nil {
			if n := topicPartitions(md, topic); n > 0 {
				return n, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("parkio: %s exists but its metadata shows no partition (is Describe allowed?)", topic)
}

func topicPartitions(md *kafka.MetadataResponse, topic string) int {
	for _, t := range md.Topics {
		if t.Name == topic && t.Error == nil {
			return len(t.Partitions)
		}
	}
	return 0
}

// Committed reads the group's committed offsets and metadata of the parking
// partitions (OffsetFetch) and parses each with parking.ParseCommit. A
// partition with no commit yields parking.Commit{Offset: -1} (nothing
// settled). A retriable error (the group coordinator loading or moving, a
// broken connection) is retried with backoff until ctx ends.
func Committed(ctx context.Context, cfg Config, group string, partitions int) ([]parking.Commit, error) {
	cfg = cfg.withDefaults()
	c := cfg.client()
	ids := make([]int, partitions)
	for k := range ids {
		ids[k] = k
	}
	var res *kafka.OffsetFetchResponse
	err := retry(ctx, cfg.Logger, "offset fetch", func(actx context.Context) error {
		var err error
		res, err = c.OffsetFetch(actx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{cfg.Topic: ids}})
		if err == nil {
			err = res.Error
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("parkio: committed offsets of %s: %w", cfg.Topic, err)
	}
	out := make([]parking.Commit, partitions)
	for k := range out {
		out[k] = parking.Commit{Offset: -1}
	}
	for _, p := range res.Topics[cfg.Topic] {
		if p.Partition < 0 || p.Partition >= partitions {
			continue
		}
		if p.Error != nil {
			return nil, fmt.Errorf("parkio: committed offset of %s/%d: %w", cfg.Topic, p.Partition, p.Error)
		}
		if p.CommittedOffset < 0 {
			continue
		}
		cm, err := parking.ParseCommit(p.CommittedOffset, p.Metadata)
		if err != nil {
			return nil, fmt.Errorf("parkio: commit of %s/%d: %w", cfg.Topic, p.Partition, err)
		}
		out[p.Partition] = cm
	}
	return out, nil
}
