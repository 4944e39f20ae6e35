package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// metadata reads the metadata of topics from the brokers, through a
// transport of its own, fresh each time: kafka-go's Transport answers
// metadata requests from a cache that may be seconds old, and a stale
// partition count is what the callers must not get. It never asks the
// brokers to create a topic.
func (c *Consumer) metadata(ctx context.Context, topics []string) (*kafka.MetadataResponse, error) {
	tr := c.cfg.Transport
	if t, ok := tr.(*kafka.Transport); ok {
		fresh := &kafka.Transport{Dial: t.Dial, DialTimeout: t.DialTimeout, IdleTimeout: t.IdleTimeout,
			MetadataTTL: t.MetadataTTL, MetadataTopics: topics, ClientID: t.ClientID,
			TLS: t.TLS, SASL: t.SASL, Resolver: t.Resolver, Context: t.Context}
		defer fresh.CloseIdleConnections()
		tr = fresh
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Transport: tr}
	return client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
}

// partitionCounts reads the partition count of every topic of Topics; a
// topic that does not exist counts 0.
func (c *Consumer) partitionCounts(ctx context.Context) (map[string]int, error) {
	md, err := c.metadata(ctx, c.cfg.Topics)
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int, len(c.cfg.Topics))
	for _, t := range c.cfg.Topics {
		counts[t] = 0
	}
	for _, t := range md.Topics {
		if _, ok := counts[t.Name]; !ok {
			continue
		}
		if t.Error != nil && !errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
			return nil, fmt.Errorf("metadata of topic %s: %w", t.Name, t.Error)
		}
		counts[t.Name] = len(t.Partitions)
	}
	return counts, nil
}

// generationCounts returns the partition counts of the topics at the start
// of a generation (nil when they could not be read) and the baseline its
// partition watch compares against: the counts this member assigned from
// when it led the join, else the counts just read. The leader's counts are
// what the whole group's assignment was made from, so a partition added
// between that assignment and this read still ends the generation. (A
// member that led a join whose sync then failed keeps that join's counts:
// if they differ from the next generation's, the watch ends that one
// generation early, which costs a rebalance and loses nothing.)
func (c *Consumer) generationCounts(ctx context.Context, log *slog.Logger) (counts, baseline map[string]int) {
	counts, err := c.partitionCounts(ctx)
	if err != nil {
		log.Warn("reading the partition counts failed; the partition total is unknown this generation", "err", err)
	}
	baseline = counts
	if lc := c.leaderCounts.Swap(nil); lc != nil {
		baseline = *lc
		if counts == nil {
			counts = baseline
		}
	}
	return counts, baseline
}

// sawPartitions records the partitions a join led by this member assigned.
func (c *Consumer) sawPartitions(parts []kafka.Partition) {
	counts := make(map[string]int, len(c.cfg.Topics))
	for _, t := range c.cfg.Topics {
		counts[t] = 0
	}
	for _, p := range parts {
		if _, ok := counts[p.Topic]; ok {
			counts[p.Topic]++
		}
	}
	c.leaderCounts.Store(&counts)
}

// completePartitions returns parts plus the partitions of the members'
// topics that parts lacks. kafka-go's leader reads the partitions of all
// the group's topics in one request and, when one of them does not exist,
// gets an error and no partition at all: it then assigns nothing, not even
// the topics that exist, and a watch that ends the generation when they
// appear would end every generation. Reading the missing topics again, one
// by one, fills in those that exist.
func (c *Consumer) completePartitions(members []kafka.GroupMember, parts []kafka.Partition) []kafka.Partition {
	have := map[string]bool{}
	for _, p := range parts {
		have[p.Topic] = true
	}
	var missing []string
	for _, m := range members {
		for _, t := range m.Topics {
			if !have[t] {
				have[t] = true
				missing = append(missing, t)
			}
		}
	}
	if len(missing) == 0 {
		return parts
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	md, err := c.metadata(ctx, missing)
	if err != nil {
		c.log.Warn("reading the partitions of the group's topics failed; assigning those kafka-go found", "err", err, "topics", strings.Join(missing, ","))
		return parts
	}
	for _, t := range md.Topics {
		if t.Error == nil && slices.Contains(missing, t.Name) {
			parts = append(parts, t.Partitions...)
		}
	}
	return parts
}

// countingBalancer is a GroupBalancer that completes the partitions it is
// asked to assign (completePartitions) and records them (sawPartitions)
// before it assigns them. kafka-go calls AssignGroups on the leader only, in
// its join, before Next returns the generation.
type countingBalancer struct {
	kafka.GroupBalancer
	c *Consumer
}

func (b countingBalancer) AssignGroups(members []kafka.GroupMember, parts []kafka.Partition) kafka.GroupMemberAssignments {
	parts = b.c.completePartitions(members, parts)
	b.c.sawPartitions(parts)
	return b.GroupBalancer.AssignGroups(members, parts)
}

// watchPartitions reads the partition counts of the topics every
// PartitionWatchInterval and returns, ending the generation, when one
// differs from baseline: partitions were added, or a topic that did not
// exist at the join was created (or one was deleted). The group then
// rebalances, and the next generation assigns every partition that exists.
// A nil baseline (unknown) ends the generation at the first successful
// read. Read errors are logged and the watch goes on. It returns when gctx
// ends; with a negative interval it only waits for that.
func (c *Consumer) watchPartitions(gctx context.Context, baseline map[string]int, log *slog.Logger) {
	if c.cfg.PartitionWatchInterval < 0 {
		<-gctx.Done()
		return
	}
	t := time.NewTicker(c.cfg.PartitionWatchInterval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-gctx.Done():
			return
		case <-t.C:
		}
		counts, err := c.partitionCounts(gctx)
		if err != nil {
			if gctx.Err() == nil && err.Error() != lastErr {
				log.Warn("reading the partition counts failed; retrying", "err", err)
				lastErr = err.Error()
			}
			continue
		}
		lastErr = ""
		if !maps.Equal(counts, baseline) {
			log.Info("the topics' partitions changed; ending the generation so that the group assigns them",
				"partitions", fmtCounts(counts), "assigned_from", fmtCounts(baseline))
			return
		}
	}
}

func fmtCounts(m map[string]int) string {
	if m == nil {
		return "unknown"
	}
	parts := make([]string, 0, len(m))
	for t, n := range m {
		parts = append(parts, t+":"+strconv.Itoa(n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}
