package replay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
)

// Kafka implements Topics, Writer and Groups with kafka-go. Its methods may
// be called from one goroutine at a time.
type Kafka struct {
	brokers []string
	dialer  *kafka.Dialer // consumer group and readers
	client  *kafka.Client // metadata, offsets and produce requests
}

var (
	_ Topics = (*Kafka)(nil)
	_ Writer = (*Kafka)(nil)
	_ Groups = (*Kafka)(nil)
)

// NewKafka returns the adapter for the cluster at brokers. dialer and
// transport carry TLS and SASL (kafkaconn.New); nil means plain TCP.
func NewKafka(brokers []string, dialer *kafka.Dialer, transport kafka.RoundTripper) *Kafka {
	if dialer == nil {
		dialer = &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true}
	}
	if transport == nil {
		transport = kafka.DefaultTransport
	}
	return &Kafka{brokers: brokers, dialer: dialer,
		client: &kafka.Client{Addr: kafka.TCP(brokers...), Transport: transport, Timeout: 10 * time.Second}}
}

// Partitions implements Topics. It never creates the topic.
func (k *Kafka) Partitions(ctx context.Context, topic string) ([]int, error) {
	md, err := k.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, err
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
			return nil, errors.New("the topic does not exist")
		}
		if t.Error != nil {
			return nil, t.Error
		}
		ids := make([]int, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			ids = append(ids, p.ID)
		}
		slices.Sort(ids)
		return ids, nil
	}
	return nil, errors.New("the topic does not exist")
}

// Offsets implements Topics.
func (k *Kafka) Offsets(ctx context.Context, topic string, partitions []int, at int64) (map[int]int64, error) {
	reqs := make([]kafka.OffsetRequest, len(partitions))
	for i, p := range partitions {
		reqs[i] = kafka.OffsetRequest{Partition: p, Timestamp: at}
	}
	res, err := k.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	out := make(map[int]int64, len(partitions))
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("partition %d: %w", po.Partition, po.Error)
		}
		// kafka-go files an answer by the timestamp the broker sends back,
		// and brokers answer "earliest" and "latest" alike with timestamp -1
		// (kafka-go's LastOffset). A time lookup answers with the record's
		// timestamp (in Offsets), or -1/-1 when no record is that recent.
		switch {
		case len(po.Offsets) > 0:
			for off := range po.Offsets {
				out[po.Partition] = off
			}
		case po.LastOffset >= 0:
			out[po.Partition] = po.LastOffset
		case at == kafka.FirstOffset:
			out[po.Partition] = po.FirstOffset
		default:
			out[po.Partition] = -1
		}
	}
	for _, p := range partitions {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("partition %d: no offset in the broker's answer", p)
		}
	}
	return out, nil
}

// Reader implements Topics. A record deleted by retention before it is
// read makes FetchMessage fail (kafka-go would otherwise retry forever).
func (k *Kafka) Reader(topic string, partition int, offset int64) (Reader, error) {
	cfg := kafka.ReaderConfig{
		Brokers:               k.brokers,
		Topic:                 topic,
		Partition:             partition,
		Dialer:                k.dialer,
		MinBytes:              1,
		MaxBytes:              10 << 20,
		MaxWait:               500 * time.Millisecond, // also bounds Close
		OffsetOutOfRangeError: true,
	}
	if err := cfg.Validate(); err != nil { // NewReader panics on an invalid config
		return nil, err
	}
	r := kafka.NewReader(cfg)
	if err := r.SetOffset(offset); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Write implements Writer: one produce request, acknowledged by all
// in-sync replicas, retried a few times on failure. A retry after a lost
// answer can write the records twice.
func (k *Kafka) Write(ctx context.Context, topic string, partition int, msgs []kafka.Message) error {
	now := time.Now()
	var err error
	delay := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		recs := make([]kafka.Record, len(msgs))
		for i, m := range msgs {
			recs[i] = kafka.Record{Time: now, Key: bytesOrNil(m.Key), Value: bytesOrNil(m.Value), Headers: m.Headers}
		}
		var res *kafka.ProduceResponse
		res, err = k.client.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: partition,
			RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(recs...)})
		if err == nil && res != nil {
			err = res.Error
			for i, rerr := range res.RecordErrors {
				err = errors.Join(err, fmt.Errorf("record %d: %w", i, rerr))
			}
		}
		if err == nil || attempt == 5 || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(delay):
			delay *= 2
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		}
	}
}

func bytesOrNil(b []byte) kafka.Bytes {
	if b == nil {
		return nil
	}
	return kafka.NewBytes(b)
}

// Committed implements Groups.
func (k *Kafka) Committed(ctx context.Context, group, topic string, partitions []int) (map[int]int64, error) {
	res, err := k.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: partitions}})
	if err != nil {
		return nil, err
	}
	if res.Error != nil {
		return nil, res.Error
	}
	out := make(map[int]int64, len(partitions))
	for _, p := range partitions {
		out[p] = -1
	}
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("partition %d: %w", po.Partition, po.Error)
		}
		out[po.Partition] = max(po.CommittedOffset, -1)
	}
	return out, nil
}

// Join implements Groups with a kafka-go ConsumerGroup. The group's offsets
// are kept for the broker's offsets.retention.minutes after the last
// member left.
func (k *Kafka) Join(_ context.Context, group, topic string) (Membership, error) {
	cfg := kafka.ConsumerGroupConfig{
		ID:                group,
		Brokers:           k.brokers,
		Dialer:            k.dialer,
		Topics:            []string{topic},
		HeartbeatInterval: 3 * time.Second,
		SessionTimeout:    10 * time.Second, // brokers reject less than 6s
		RebalanceTimeout:  30 * time.Second,
		JoinGroupBackoff:  time.Second,
		StartOffset:       kafka.FirstOffset,
		Timeout:           10 * time.Second,
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g, err := kafka.NewConsumerGroup(cfg)
	if err != nil {
		return nil, err
	}
	return &membership{g: g, topic: topic}, nil
}

type membership struct {
	g     *kafka.ConsumerGroup
	topic string
}

// Next returns the next generation. Join errors (the coordinator not yet
// known, a rebalance in progress) are retried until ctx ends; the last one
// is returned then.
func (m *membership) Next(ctx context.Context) (Claim, error) {
	var last error
	for {
		gen, err := m.g.Next(ctx)
		if err == nil {
			return &claim{gen: gen, topic: m.topic}, nil
		}
		if ctx.Err() != nil {
			if last != nil {
				return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return nil, ctx.Err()
		}
		if errors.Is(err, kafka.ErrGroupClosed) {
			return nil, err
		}
		last = err
	}
}

func (m *membership) Close() error { return m.g.Close() }

type claim struct {
	gen   *kafka.Generation
	topic string
}

func (c *claim) Partitions() map[int]int64 {
	out := map[int]int64{}
	for _, a := range c.gen.Assignments[c.topic] {
		out[a.ID] = max(a.Offset, -1) // kafka.FirstOffset when the group has no offset
	}
	return out
}

func (c *claim) Do(fn func(ctx context.Context) error) error {
	errc := make(chan error, 1)
	c.gen.Start(func(ctx context.Context) { errc <- fn(ctx) })
	return <-errc
}

func (c *claim) Commit(offsets map[int]int64) error {
	return c.gen.CommitOffsets(map[string]map[int]int64{c.topic: offsets})
}
