package consumer

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// Proofs of a clean hand-over (DESIGN.md Non-obvious 11, "Unknown outcomes").
//
// A request whose outcome is unknown may be processed by the API up to
// MaxProcessingTime after it was sent. The sink holds this replica's own
// later requests that such a copy could overtake, and the fence waits, before
// the replica rejoins, until its unknown requests are past the bound
// (Batcher.Revoke, which the app makes settle). An owner that is expelled
// instead (crashed, stopped past the session timeout, still settling at the
// rebalance timeout) proves nothing: it may have written a request up to its
// lease's end, which is before the next generation starts (the lease's
// argument, internal/lease), and its late copy could overtake the next
// owner's opposite request.
//
// So a clean hand-over is proved in the offsets: the fence, once Revoke has
// returned (nothing in flight, the unknown requests settled, the lease
// ended), commits every partition with the metadata cleanMark(generation),
// through an OffsetCommit carrying the generation and member id, which the
// coordinator accepts only while that generation is the group's current one
// (it still is while the group prepares the rebalance). The next owner reads
// the metadata (OffsetFetch) at the start of its generation: a partition whose
// metadata is cleanMark of the immediately previous generation is fetched at
// once; any other (no mark, an older generation's, no committed offset, or
// the state cannot be read) is fetched only MaxProcessingTime after this
// replica received its assignment, which is after the generation started,
// hence after the last write of any earlier owner, hence after the last time
// any earlier request could be processed. A partition's mark is written only
// once its own hold is over: an owner that inherited a partition without
// proof and hands it on before the bound proves nothing either.

// cleanMark is the offset metadata that proves a clean hand-over by the
// fence of generation gen.
func cleanMark(gen int) string { return "clean:" + strconv.Itoa(gen) }

// proveHandOff sets, for each of parts, the time before which it must not be
// fetched: zero when its committed metadata proves a clean hand-over by the
// generation before gen, joined+MaxProcessingTime otherwise. joined must be
// a reading taken after this member received gen's assignment.
func (c *Consumer) proveHandOff(ctx context.Context, gen *kafka.Generation, parts []*partitionState, joined time.Time, log *slog.Logger) {
	if c.cfg.MaxProcessingTime <= 0 || len(parts) == 0 {
		return
	}
	marks, err := c.fetchMarks(ctx, gen.GroupID, parts)
	if err != nil {
		log.Warn("cannot read the offsets' metadata: no proof of a clean hand-over, every assigned partition waits",
			"err", err, "for", c.cfg.MaxProcessingTime)
	}
	want := cleanMark(int(gen.ID) - 1)
	var held []string
	for _, p := range parts {
		if marks[p.topic][p.partition] == want {
			continue
		}
		p.holdUntil = joined.Add(c.cfg.MaxProcessingTime)
		held = append(held, p.topic+"/"+strconv.Itoa(p.partition))
	}
	if len(held) > 0 {
		log.Info("no proof that the previous owner handed these partitions over cleanly: a request it left with an unknown outcome may still be processed, so they are read only after MOENGAGE_MAX_PROCESSING_TIME",
			"partitions", held, "for", c.cfg.MaxProcessingTime, "want_metadata", want)
	}
}

// fetchMarks reads the committed metadata of parts (topic → partition →
// metadata); a partition whose entry has an error has none.
func (c *Consumer) fetchMarks(ctx context.Context, group string, parts []*partitionState) (map[string]map[int]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	topics := map[string][]int{}
	for _, p := range parts {
		topics[p.topic] = append(topics[p.topic], p.partition)
	}
	cl := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Transport: c.cfg.Transport}
	res, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: topics})
	if err == nil {
		err = res.Error
	}
	if err != nil {
		return nil, err
	}
	marks := map[string]map[int]string{}
	for t, ps := range res.Topics {
		marks[t] = map[int]string{}
		for _, p := range ps {
			if p.Error == nil && p.CommittedOffset >= 0 {
				marks[t][p.Partition] = p.Metadata
			}
		}
	}
	return marks, nil
}

// awaitHandOff waits until p may be fetched (proveHandOff). It returns
// false when the generation ended or the drain began first.
func awaitHandOff(gctx context.Context, stop <-chan struct{}, p *partitionState) bool {
	d := time.Until(p.holdUntil)
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-gctx.Done():
	case <-stop:
	}
	return false
}

// commitClean commits every partition of gen with cleanMark(int(gen.ID)), once
// the fence has revoked and settled everything this replica sent, and seals
// the generation's commits (a later one without metadata would erase the
// mark). A partition whose own hold is not over, or whose offset is not
// known (nothing committed, nothing read), gets no mark: its next owner
// waits.
func (c *Consumer) commitClean(gen *kafka.Generation, parts []*partitionState, log *slog.Logger) {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	now := time.Now()
	var commits map[string][]kafka.OffsetCommit
	var marked []*partitionState
	for _, p := range parts {
		sealed := p.sealed
		p.sealed = true
		off := max(p.committed, p.start)
		if tr := p.tr.Load(); tr != nil {
			off = max(off, tr.watermark())
		}
		if sealed || off < 0 || now.Before(p.holdUntil) {
			continue
		}
		if commits == nil {
			commits = map[string][]kafka.OffsetCommit{}
		}
		commits[p.topic] = append(commits[p.topic], kafka.OffsetCommit{Partition: p.partition, Offset: off, Metadata: cleanMark(int(gen.ID))})
		marked = append(marked, p)
	}
	if len(marked) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Transport: c.cfg.Transport}
	res, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: gen.GroupID, GenerationID: int(gen.ID),
		MemberID: gen.MemberID, Topics: commits})
	failed := map[string]map[int]error{}
	if err == nil {
		for t, ps := range res.Topics {
			for _, p := range ps {
				if p.Error != nil {
					if failed[t] == nil {
						failed[t] = map[int]error{}
					}
					failed[t][p.Partition] = p.Error
					err = errors.Join(err, p.Error)
				}
			}
		}
	}
	if err != nil {
		c.m.Commits.WithLabelValues("error").Inc()
		log.Warn("could not prove a clean hand-over (offset commit with metadata failed): the next owner of these partitions waits MOENGAGE_MAX_PROCESSING_TIME",
			"err", err)
	} else {
		c.m.Commits.WithLabelValues("ok").Inc()
	}
	for _, p := range marked {
		if err != nil && (res == nil || failed[p.topic][p.partition] != nil) {
			continue
		}
		for _, oc := range commits[p.topic] {
			if oc.Partition == p.partition {
				p.committed = oc.Offset
				c.m.CommittedOffset.WithLabelValues(p.topic, strconv.Itoa(p.partition)).Set(float64(oc.Offset))
			}
		}
	}
	if err == nil {
		log.Info("handed over cleanly: offsets committed with the proof", "metadata", cleanMark(int(gen.ID)), "partitions", len(marked))
	}
}
