package replay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// fakeCluster is an in-memory cluster: topics of partitions of records,
// consumer-group offsets, and hooks to inject failures. It implements
// Topics, Writer and Groups. Safe for concurrent use.
type fakeCluster struct {
	mu        sync.Mutex
	logs      map[string][]*fakeLog
	committed map[string]map[int]int64 // group → partition of the DLQ → offset
	commits   int
	joins     int

	writeErr  error                         // every Write fails with it
	onWrite   func(topic string, n int)     // called (unlocked) after a write
	loseClaim func(commits int) bool        // after a commit: end the claim?
	assign    func(parts []int) []int       // the partitions a claim gets; default all
	onFetch   func(topic string, off int64) // called (unlocked) before a record is returned
}

type fakeLog struct {
	first int64 // offset of recs[0]
	recs  []kafka.Message
}

func (l *fakeLog) end() int64 { return l.first + int64(len(l.recs)) }

func newFakeCluster() *fakeCluster {
	return &fakeCluster{logs: map[string][]*fakeLog{}, committed: map[string]map[int]int64{}}
}

func (c *fakeCluster) createTopic(name string, partitions int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for range partitions {
		c.logs[name] = append(c.logs[name], &fakeLog{})
	}
}

// add appends records to topic/partition and returns their offsets.
func (c *fakeCluster) add(topic string, partition int, msgs ...kafka.Message) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.logs[topic][partition]
	var offs []int64
	for _, m := range msgs {
		m.Topic, m.Partition, m.Offset = topic, partition, l.end()
		if m.Time.IsZero() {
			m.Time = time.Now()
		}
		l.recs = append(l.recs, m)
		offs = append(offs, m.Offset)
	}
	return offs
}

// records returns a copy of topic/partition's records.
func (c *fakeCluster) records(topic string, partition int) []kafka.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.logs[topic][partition].recs)
}

// deleteBefore drops the records of topic/partition below offset (retention).
func (c *fakeCluster) deleteBefore(topic string, partition int, offset int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.logs[topic][partition]
	n := min(max(offset-l.first, 0), int64(len(l.recs)))
	l.recs = l.recs[n:]
	l.first += n
}

func (c *fakeCluster) commitOf(group string, partition int) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if off, ok := c.committed[group][partition]; ok {
		return off
	}
	return -1
}

func (c *fakeCluster) Partitions(_ context.Context, topic string) ([]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ls, ok := c.logs[topic]
	if !ok {
		return nil, errors.New("the topic does not exist")
	}
	ids := make([]int, len(ls))
	for i := range ids {
		ids[i] = i
	}
	return ids, nil
}

func (c *fakeCluster) Offsets(_ context.Context, topic string, partitions []int, at int64) (map[int]int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[int]int64{}
	for _, p := range partitions {
		l := c.logs[topic][p]
		switch at {
		case kafka.FirstOffset:
			out[p] = l.first
		case kafka.LastOffset:
			out[p] = l.end()
		default:
			out[p] = -1
			for _, m := range l.recs {
				if m.Time.UnixMilli() >= at {
					out[p] = m.Offset
					break
				}
			}
		}
	}
	return out, nil
}

func (c *fakeCluster) Reader(topic string, partition int, offset int64) (Reader, error) {
	return &fakeReader{c: c, topic: topic, partition: partition, next: offset}, nil
}

type fakeReader struct {
	c         *fakeCluster
	topic     string
	partition int
	next      int64
	closed    bool
}

func (r *fakeReader) FetchMessage(ctx context.Context) (kafka.Message, error) {
	for {
		r.c.mu.Lock()
		l := r.c.logs[r.topic][r.partition]
		r.next = max(r.next, l.first)
		var m kafka.Message
		ok := r.next < l.end()
		if ok {
			m = l.recs[r.next-l.first]
			r.next++
		}
		hook := r.c.onFetch
		r.c.mu.Unlock()
		if ok {
			if hook != nil {
				hook(r.topic, m.Offset)
			}
			return m, nil
		}
		select {
		case <-ctx.Done():
			return kafka.Message{}, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func (r *fakeReader) Close() error { r.closed = true; return nil }

func (c *fakeCluster) Write(_ context.Context, topic string, partition int, msgs []kafka.Message) error {
	c.mu.Lock()
	err, hook := c.writeErr, c.onWrite
	if err == nil {
		if _, ok := c.logs[topic]; !ok || partition >= len(c.logs[topic]) {
			err = fmt.Errorf("no partition %s/%d", topic, partition)
		}
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Topic != topic || m.Partition != partition {
			return fmt.Errorf("message for %s/%d written to %s/%d", m.Topic, m.Partition, topic, partition)
		}
	}
	c.add(topic, partition, msgs...)
	if hook != nil {
		hook(topic, len(msgs))
	}
	return nil
}

func (c *fakeCluster) Committed(_ context.Context, group, _ string, partitions []int) (map[int]int64, error) {
	out := map[int]int64{}
	for _, p := range partitions {
		out[p] = c.commitOf(group, p)
	}
	return out, nil
}

func (c *fakeCluster) Join(_ context.Context, group, topic string) (Membership, error) {
	c.mu.Lock()
	c.joins++
	c.mu.Unlock()
	return &fakeMembership{c: c, group: group, topic: topic}, nil
}

type fakeMembership struct {
	c            *fakeCluster
	group, topic string
	generations  int
	closed       bool
}

func (m *fakeMembership) Next(context.Context) (Claim, error) {
	m.generations++
	parts, err := m.c.Partitions(context.Background(), m.topic)
	if err != nil {
		return nil, err
	}
	if m.c.assign != nil {
		parts = m.c.assign(parts)
	}
	assigned := map[int]int64{}
	for _, p := range parts {
		assigned[p] = m.c.commitOf(m.group, p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &fakeClaim{m: m, assigned: assigned, ctx: ctx, cancel: cancel}, nil
}

func (m *fakeMembership) Close() error { m.closed = true; return nil }

type fakeClaim struct {
	m        *fakeMembership
	assigned map[int]int64
	ctx      context.Context
	cancel   context.CancelFunc
}

func (cl *fakeClaim) Partitions() map[int]int64 { return cl.assigned }

func (cl *fakeClaim) Do(fn func(ctx context.Context) error) error {
	errc := make(chan error, 1)
	go func() { errc <- fn(cl.ctx) }()
	return <-errc
}

func (cl *fakeClaim) Commit(offsets map[int]int64) error {
	if cl.ctx.Err() != nil {
		return errors.New("use of closed network connection")
	}
	c := cl.m.c
	c.mu.Lock()
	if c.committed[cl.m.group] == nil {
		c.committed[cl.m.group] = map[int]int64{}
	}
	for p, off := range offsets {
		c.committed[cl.m.group][p] = off
	}
	c.commits++
	lose := c.loseClaim != nil && c.loseClaim(c.commits)
	c.mu.Unlock()
	if lose {
		cl.cancel()
	}
	return nil
}
