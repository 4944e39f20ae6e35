// Package kafkaadmin holds the few cluster-administration calls the demo,
// the benchmark and the integration tests share: creating topics, reading a
// topic's end offsets and a group's committed offsets, and the group's lag.
// The worker itself does not use it.
//
// Every answer is checked partition by partition. Kafka reports most
// failures per partition (a partition without a leader, a coordinator still
// loading its offsets) inside an otherwise successful response, and kafka-go
// passes them through as fields; read as numbers they look like offset -1,
// which made a failed partition count as lag 0. Here any such error, and any
// requested partition the answer leaves out, is returned as a
// [*PartitionError].
package kafkaadmin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
)

// Admin makes the calls against one cluster. It is safe for concurrent use.
type Admin struct {
	client *kafka.Client
}

// New returns an Admin for the cluster at brokers that sends its requests
// through transport; nil means kafka.DefaultTransport. A kafka-go transport
// caches the cluster's metadata and refreshes it only after a CreateTopics
// it sent itself or every MetadataTTL (6 s), so to see a topic created by
// another client at once, pass a fresh transport.
func New(brokers []string, transport kafka.RoundTripper) *Admin {
	return &Admin{client: &kafka.Client{Addr: kafka.TCP(brokers...), Transport: transport, Timeout: 30 * time.Second}}
}

// PartitionError is a failure Kafka reported for one partition, or a
// partition the answer left out (Err is then [ErrNoAnswer]).
type PartitionError struct {
	Op        string // "list offsets" or "offset fetch"
	Topic     string
	Partition int
	Err       error // a kafka.Error where Kafka sent one: errors.Is(err, kafka.NotLeaderForPartition)
}

// ErrNoAnswer is the Err of a [PartitionError] for a partition the
// response did not mention.
var ErrNoAnswer = errors.New("no answer for the partition")

func (e *PartitionError) Error() string {
	return fmt.Sprintf("%s %s/%d: %v", e.Op, e.Topic, e.Partition, e.Err)
}

func (e *PartitionError) Unwrap() error { return e.Err }

// CreateTopics creates topics with the given partition count and
// replication factor 1; a topic that exists already is not an error.
func (a *Admin) CreateTopics(ctx context.Context, partitions int, topics ...string) error {
	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: 1})
	}
	res, err := a.client.CreateTopics(ctx, req)
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

// Partitions returns the partition ids of topic in ascending order.
func (a *Admin) Partitions(ctx context.Context, topic string) ([]int, error) {
	md, err := a.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, err
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		var why error = errors.New("no metadata")
		if len(md.Topics) == 1 {
			why = md.Topics[0].Error
		}
		return nil, fmt.Errorf("topic %s: %w", topic, why)
	}
	var out []int
	for _, p := range md.Topics[0].Partitions {
		out = append(out, p.ID)
	}
	slices.Sort(out)
	return out, nil
}

// EndOffsets returns the end offset (the next offset to be written) of
// each of parts.
func (a *Admin) EndOffsets(ctx context.Context, topic string, parts []int) (map[int]int64, error) {
	var reqs []kafka.OffsetRequest
	for _, p := range parts {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	lo, err := a.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, po := range lo.Topics[topic] {
		// kafka-go answers a partition whose request failed on the way
		// with error code -1 (UNKNOWN) and offset -1.
		if po.Error != nil {
			return nil, &PartitionError{"list offsets", topic, po.Partition, po.Error}
		}
		if po.LastOffset < 0 {
			return nil, &PartitionError{"list offsets", topic, po.Partition, fmt.Errorf("end offset %d", po.LastOffset)}
		}
		out[po.Partition] = po.LastOffset
	}
	// kafka-go enters every requested partition (end offset 0) before it
	// reads the answer, so one the broker left out cannot be told from an
	// empty partition here; the check guards against kafka-go changing that.
	return out, missing("list offsets", topic, parts, out)
}

// Committed returns group's committed offset of each of parts; -1 means
// the group has committed none there.
func (a *Admin) Committed(ctx context.Context, topic, group string, parts []int) (map[int]int64, error) {
	of, err := a.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	switch {
	case errors.Is(of.Error, kafka.GroupIdNotFound):
		// Some brokers (kfake; newer group coordinators) answer so for a
		// group that never committed, where others answer -1 everywhere.
		for _, p := range parts {
			out[p] = -1
		}
		return out, nil
	case of.Error != nil: // e.g. COORDINATOR_LOAD_IN_PROGRESS: no partition is answered
		return nil, fmt.Errorf("offset fetch for group %s: %w", group, of.Error)
	}
	for _, po := range of.Topics[topic] {
		if po.Error != nil {
			return nil, &PartitionError{"offset fetch", topic, po.Partition, po.Error}
		}
		out[po.Partition] = po.CommittedOffset
	}
	return out, missing("offset fetch", topic, parts, out)
}

// missing returns a PartitionError for the first of parts got lacks.
func missing(op, topic string, parts []int, got map[int]int64) error {
	for _, p := range parts {
		if _, ok := got[p]; !ok {
			return &PartitionError{op, topic, p, ErrNoAnswer}
		}
	}
	return nil
}

// Offsets returns the end offset and group's committed offset (-1: none)
// of every partition of topic.
func (a *Admin) Offsets(ctx context.Context, topic, group string) (ends, committed map[int]int64, err error) {
	parts, err := a.Partitions(ctx, topic)
	if err != nil {
		return nil, nil, err
	}
	if ends, err = a.EndOffsets(ctx, topic, parts); err != nil {
		return nil, nil, err
	}
	if committed, err = a.Committed(ctx, topic, group, parts); err != nil {
		return nil, nil, err
	}
	return ends, committed, nil
}

// GroupLag returns the records between group's committed offsets (none
// counts as the start) and the end of every partition of topic. Zero means
// the group has committed everything written so far; any partition Kafka
// could not answer for is an error, never lag 0.
func (a *Admin) GroupLag(ctx context.Context, topic, group string) (int64, error) {
	ends, committed, err := a.Offsets(ctx, topic, group)
	if err != nil {
		return -1, err
	}
	var lag int64
	for p, end := range ends {
		lag += max(end-max(committed[p], 0), 0)
	}
	return lag, nil
}
