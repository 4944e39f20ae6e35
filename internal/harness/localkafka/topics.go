package localkafka

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// CreateTopic creates topic with the given number of partitions (0 means
// Options.Partitions) and replication factor 1, then waits until the
// topic's metadata shows every partition with a leader. An existing topic is
// an error matching kafka.TopicAlreadyExists.
func (b *Broker) CreateTopic(ctx context.Context, topic string, partitions int) error {
	if partitions <= 0 {
		partitions = b.o.Partitions
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	t := &kafka.Transport{DialTimeout: time.Second}
	c := &kafka.Client{Addr: kafka.TCP(b.Addr()), Transport: t}
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}},
	})
	t.CloseIdleConnections()
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil {
		return fmt.Errorf("localkafka: create topic %q: %w", topic, err)
	}
	return b.waitTopic(ctx, topic, partitions)
}

// waitTopic polls metadata until topic has n partitions, all with leaders.
func (b *Broker) waitTopic(ctx context.Context, topic string, n int) error {
	var last string
	for {
		md, err := b.metadata(ctx, []string{topic})
		switch {
		case err != nil:
			last = err.Error()
		case len(md.Topics) != 1:
			last = fmt.Sprintf("%d topics in metadata", len(md.Topics))
		case md.Topics[0].Error != nil:
			last = md.Topics[0].Error.Error()
		default:
			ready := 0
			for _, p := range md.Topics[0].Partitions {
				if p.Error == nil && p.Leader.Host != "" {
					ready++
				}
			}
			if ready == n && len(md.Topics[0].Partitions) == n {
				return nil
			}
			last = fmt.Sprintf("%d of %d partitions have a leader", ready, n)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("localkafka: topic %q not ready (%s): %w", topic, last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
