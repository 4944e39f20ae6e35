package replay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
)

// partition replays one dead-letter partition, from the later of the
// group's committed offset, the first retained offset and the floor, up to
// the end offset taken at start. commit commits the partition's progress
// and live reports whether the claim still holds; both are nil in a dry run.
func (r *Replayer) partition(ctx context.Context, p int, committed int64, commit func(map[int]int64) error, live func() error) error {
	topic, sp := r.cfg.Topic, r.spans[p]
	start := committed
	if start < 0 {
		start = sp.first
		if sp.floor < 0 && sp.first < sp.end {
			r.statusf("%s/%d: group %s has no committed offset: starting at the first retained offset %d", topic, p, r.cfg.Group, sp.first)
		}
	}
	start = max(start, sp.first, sp.floor)
	if start >= sp.end {
		r.statusf("%s/%d: nothing to replay (next offset %d, end %d)", topic, p, start, sp.end)
		return nil
	}
	r.statusf("%s/%d: reading offsets %d to %d", topic, p, start, sp.end-1)
	rd, err := r.cfg.Topics.Reader(topic, p, start)
	if err != nil {
		return fmt.Errorf("reading %s/%d: %w", topic, p, err)
	}
	defer rd.Close()

	next := start // the offset after the last record examined
	committedTo := max(committed, start)
	var batch []kafka.Message
	flush := func() error {
		// Interrupted, or the claim was lost: what was read but not written
		// is read again by the next run or owner.
		if err := ctx.Err(); err != nil {
			return err
		}
		if live != nil {
			if err := live(); err != nil {
				return err
			}
		}
		if len(batch) > 0 {
			if !r.cfg.DryRun {
				if err := r.write(ctx, batch); err != nil {
					return err
				}
			}
			r.replayed.Add(int64(len(batch)))
			batch = batch[:0]
		}
		if commit == nil || next <= committedTo {
			return nil
		}
		if err := commit(map[int]int64{p: next}); err != nil {
			return fmt.Errorf("committing offset %d of %s/%d for group %s (what was written before it may be replayed again by the next run): %w",
				next, topic, p, r.cfg.Group, err)
		}
		committedTo = next
		return nil
	}
	examined := 0
	for next < sp.end && !r.limitReached(len(batch)) {
		m, eof, err := r.fetch(ctx, rd, p, next, sp.end)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			return errors.Join(err, flush()) // keep what was read before the failure
		}
		if eof || m.Offset >= sp.end {
			next = sp.end
			break
		}
		if m.Offset < next { // delivered again after a reader retry
			continue
		}
		r.read.Add(1)
		if !r.selected(m) {
			r.skipped.Add(1)
			next = m.Offset + 1
		} else if size, ok := headers(m.Headers)[deadletter.HeaderOriginalSize]; ok {
			// Written without its value (too large for the dead-letter
			// topic): writing it back would publish an empty record, a
			// tombstone on a compacted topic. The source offset in its
			// headers says where the original is.
			h := headers(m.Headers)
			fmt.Fprintf(r.cfg.Status, "not replayable: %s/%d/%d was dead-lettered without its value (%s bytes); the original is %s/%s/%s\n",
				topic, p, m.Offset, size, h[deadletter.HeaderSourceTopic], h[deadletter.HeaderSourcePartition], h[deadletter.HeaderSourceOffset])
			r.skipped.Add(1)
			next = m.Offset + 1
		} else {
			out, err := r.rewrite(ctx, m)
			if err != nil {
				next = m.Offset // not examined: the next run stops here again
				return errors.Join(err, flush())
			}
			if r.cfg.DryRun {
				h := headers(m.Headers)
				fmt.Fprintf(r.cfg.Out, "would replay %s/%d/%d to %s/%d key=%q reason=%s error=%q\n",
					topic, p, m.Offset, out.Topic, out.Partition, m.Key, h[deadletter.HeaderReason], h[deadletter.HeaderError])
			}
			batch = append(batch, out)
			next = m.Offset + 1
		}
		if examined++; examined >= r.cfg.BatchSize {
			if err := flush(); err != nil {
				return err
			}
			examined = 0
		}
	}
	return flush()
}

// fetch returns the next record of partition p, or eof when the records
// below end are gone (deleted by retention since the run started).
func (r *Replayer) fetch(ctx context.Context, rd Reader, p int, next, end int64) (m kafka.Message, eof bool, err error) {
	for idle := 1; ; idle++ {
		fctx, cancel := context.WithTimeout(ctx, r.cfg.IdleTimeout)
		m, err := rd.FetchMessage(fctx)
		cancel()
		if err == nil {
			return m, false, nil
		}
		if ctx.Err() != nil {
			return m, false, ctx.Err()
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			return m, false, fmt.Errorf("reading %s/%d at offset %d: %w", r.cfg.Topic, p, next, err)
		}
		firsts, err := r.cfg.Topics.Offsets(ctx, r.cfg.Topic, []int{p}, kafka.FirstOffset)
		if err != nil {
			return m, false, fmt.Errorf("reading %s/%d at offset %d: %w", r.cfg.Topic, p, next, err)
		}
		if firsts[p] >= end {
			r.statusf("%s/%d: the records up to offset %d were deleted (retention) while the replay ran", r.cfg.Topic, p, end-1)
			return m, true, nil
		}
		if idle >= 3 {
			return m, false, fmt.Errorf("reading %s/%d: no record at or after offset %d for %s, although the partition ended at %d when the replay started",
				r.cfg.Topic, p, next, 3*r.cfg.IdleTimeout, end)
		}
	}
}

func (r *Replayer) selected(m kafka.Message) bool {
	if r.reasons == nil {
		return true
	}
	return r.reasons[headers(m.Headers)[deadletter.HeaderReason]]
}

// rewrite returns the record to write for dead letter m: its key and
// value, its headers without the cohortsync-* ones, plus
// cohortsync-replayed-from; Topic and Partition name the destination.
func (r *Replayer) rewrite(ctx context.Context, m kafka.Message) (kafka.Message, error) {
	from := fmt.Sprintf("%s/%d/%d", r.cfg.Topic, m.Partition, m.Offset)
	h := headers(m.Headers)
	topic, samePlace := r.cfg.ToTopic, r.cfg.ToTopic == ""
	if samePlace {
		topic = h[deadletter.HeaderSourceTopic]
		if topic == "" {
			return kafka.Message{}, fmt.Errorf("dead letter %s has no %s header: pass --to-topic", from, deadletter.HeaderSourceTopic)
		}
		if topic == r.cfg.Topic {
			return kafka.Message{}, fmt.Errorf("dead letter %s names the dead-letter topic as its source: pass --to-topic", from)
		}
	}
	n, ok := r.partitions[topic]
	if !ok {
		parts, err := r.cfg.Topics.Partitions(ctx, topic)
		if err != nil {
			return kafka.Message{}, fmt.Errorf("destination topic %s of dead letter %s: %w", topic, from, err)
		}
		n = len(parts)
		r.partitions[topic] = n
	}
	if n == 0 {
		return kafka.Message{}, fmt.Errorf("destination topic %s of dead letter %s has no partitions", topic, from)
	}
	partition := -1
	if samePlace {
		// Back into the partition it was read from: it keeps its place in
		// the order of its key even if the producers' partitioner differs
		// from ours.
		if sp, err := strconv.Atoi(h[deadletter.HeaderSourcePartition]); err == nil && sp >= 0 && sp < n {
			partition = sp
		}
	}
	if partition < 0 {
		ids := make([]int, n)
		for i := range ids {
			ids[i] = i
		}
		partition = r.hash.Balance(kafka.Message{Key: m.Key}, ids...)
	}
	out := make([]kafka.Header, 0, len(m.Headers)+1)
	for _, x := range m.Headers {
		if !strings.HasPrefix(x.Key, headerPrefix) {
			out = append(out, x)
		}
	}
	out = append(out, kafka.Header{Key: HeaderReplayedFrom, Value: []byte(from)})
	return kafka.Message{Topic: topic, Partition: partition, Key: m.Key, Value: m.Value, Headers: out}, nil
}

// write writes batch, one request per destination partition, keeping the
// order within each.
func (r *Replayer) write(ctx context.Context, batch []kafka.Message) error {
	type dest struct {
		topic     string
		partition int
	}
	var order []dest
	groups := map[dest][]kafka.Message{}
	for _, m := range batch {
		d := dest{m.Topic, m.Partition}
		if _, ok := groups[d]; !ok {
			order = append(order, d)
		}
		groups[d] = append(groups[d], m)
	}
	for _, d := range order {
		if err := r.cfg.Writer.Write(ctx, d.topic, d.partition, groups[d]); err != nil {
			return fmt.Errorf("writing %d records to %s/%d: %w", len(groups[d]), d.topic, d.partition, err)
		}
	}
	return nil
}

// limitReached reports whether the replayed records plus pending ones
// reach the limit.
func (r *Replayer) limitReached(pending int) bool {
	return r.cfg.Limit > 0 && r.replayed.Load()+int64(pending) >= int64(r.cfg.Limit)
}

// headers maps header keys to values; the last of repeated keys wins (the
// worker appends its headers after the original ones).
func headers(hs []kafka.Header) map[string]string {
	out := make(map[string]string, len(hs))
	for _, h := range hs {
		out[h.Key] = string(h.Value)
	}
	return out
}
