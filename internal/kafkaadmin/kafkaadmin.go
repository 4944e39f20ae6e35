// Package kafkaadmin holds the few cluster-administration calls the demo
// and the benchmark share: creating topics and measuring a group's lag.
// The worker itself does not use it.
package kafkaadmin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

func client(brokers []string) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
}

// CreateTopics creates topics with the given partition count and
// replication factor 1; a topic that exists already is not an error.
func CreateTopics(ctx context.Context, brokers []string, partitions int, topics ...string) error {
	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: 1})
	}
	res, err := client(brokers).CreateTopics(ctx, req)
	if err != nil {
		return err
	}
	for t, err := range res.Errors {
		if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	return nil
}

// Partitions returns the partition ids of topic.
func Partitions(ctx context.Context, brokers []string, topic string) ([]int, error) {
	md, err := client(brokers).Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, err
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return nil, fmt.Errorf("topic %s: no metadata", topic)
	}
	var out []int
	for _, p := range md.Topics[0].Partitions {
		out = append(out, p.ID)
	}
	return out, nil
}

// EndOffsets returns the end offset of each of parts.
func EndOffsets(ctx context.Context, brokers []string, topic string, parts []int) (map[int]int64, error) {
	var reqs []kafka.OffsetRequest
	for _, p := range parts {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	lo, err := client(brokers).ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, po := range lo.Topics[topic] {
		out[po.Partition] = po.LastOffset
	}
	return out, nil
}

// GroupLag returns the records between group's committed offsets (none
// counts as the start) and the end of every partition of topic.
func GroupLag(ctx context.Context, brokers []string, topic, group string) (int64, error) {
	parts, err := Partitions(ctx, brokers, topic)
	if err != nil {
		return -1, err
	}
	ends, err := EndOffsets(ctx, brokers, topic, parts)
	if err != nil {
		return -1, err
	}
	of, err := client(brokers).OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return -1, err
	}
	var lag int64
	for _, po := range of.Topics[topic] {
		lag += max(ends[po.Partition]-max(po.CommittedOffset, 0), 0)
	}
	return lag, nil
}
