package consumer

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
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
// proof and hands it on before the bound proves only part of it: its mark
// carries the rest of its wait, measured before the commit was sent
// (cleanMark + ";wait=<ms>"), and the next owner, which joins after that
// commit, waits that long from its own reading. So the wait is not started
// again at every rebalance (rebalances more often than the bound would
// otherwise keep the partition unread).

// cleanMark is the offset metadata that proves a clean hand-over by the
// fence of generation gen.
func cleanMark(gen int) string { return "clean:" + strconv.Itoa(gen) }

// proveHandOff sets, for each of parts, the time before which it must not be
// fetched: zero when its committed metadata proves a clean hand-over by the
// generation before gen, joined plus the rest of a wait the mark carries, or
// joined+MaxProcessingTime without a mark of that generation. joined must
// be a reading taken after this member received gen's assignment.
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
		d := handOffWait(marks[p.topic][p.partition], want, c.cfg.MaxProcessingTime)
		if d <= 0 {
			continue
		}
		p.holdUntil = joined.Add(d)
		held = append(held, p.topic+"/"+strconv.Itoa(p.partition)+" "+d.String())
	}
	if len(held) > 0 {
		log.Info("no proof that the previous owner handed these partitions over cleanly: a request it left with an unknown outcome may still be processed, so they are read only after a wait (at most MOENGAGE_MAX_PROCESSING_TIME)",
			"partitions", held, "max_processing_time", c.cfg.MaxProcessingTime, "want_metadata", want)
	}
}

// proveDrain writes the proof after a complete drain, while this member is
// still in gen: a drain caught by a rebalance leaves the group itself
// (handover.go) before the fence could write it. Revoke (nothing is pending
// or in flight any more) settles the unknown outcomes first, as at the
// fence; the fence's own proof then finds every partition sealed.
func (c *Consumer) proveDrain(ctx context.Context, gen *kafka.Generation, parts []*partitionState, log *slog.Logger) {
	if c.cfg.MaxProcessingTime <= 0 {
		return
	}
	if err := c.cfg.Batcher.Revoke(ctx); err != nil {
		log.Warn("requests whose outcome is unknown outlived the drain: the next owner waits MOENGAGE_MAX_PROCESSING_TIME", "err", err)
		return
	}
	c.commitClean(gen, parts, log)
}

// handOffWait is how long a partition whose committed metadata is meta must
// wait, when want is the mark that proves a clean hand-over: 0 for want, the
// wait it carries for want;wait=<ms> (at most max), max for anything else.
func handOffWait(meta, want string, max time.Duration) time.Duration {
	meta = handOffTokens(meta)
	if meta == want {
		return 0
	}
	rest, ok := strings.CutPrefix(meta, want+waitSuffix)
	if !ok {
		return max
	}
	ms, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || ms < 0 || time.Duration(ms) > max/time.Millisecond {
		return max
	}
	return time.Duration(ms) * time.Millisecond
}

// handOffTokens returns the hand-off mark's tokens of a commit's metadata
// (clean:<gen> and wait=<ms>), without the parking tokens beside them.
func handOffTokens(meta string) string {
	var keep []string
	for _, t := range strings.Split(meta, ";") {
		if strings.HasPrefix(t, "clean:") || strings.HasPrefix(t, "wait=") {
			keep = append(keep, t)
		}
	}
	return strings.Join(keep, ";")
}

// waitSuffix introduces, in a mark, the rest of the partition's own wait.
const waitSuffix = ";wait="

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

// commitClean commits every partition of gen with cleanMark(int(gen.ID)),
// once the fence has revoked and settled everything this replica sent, and
// seals the generation's commits (a later one without metadata would erase
// the mark). A partition whose own wait is not over carries the rest of it
// in the mark. A partition with no offset yet (nothing committed, nothing
// read) is committed at its log start, where the group's StartOffset would
// begin; if that cannot be read it gets no mark and its next owner waits the
// bound.
func (c *Consumer) commitClean(gen *kafka.Generation, parts []*partitionState, log *slog.Logger) {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Transport: c.cfg.Transport}
	offs := handOffOffsets(ctx, cl, parts, log)
	now := time.Now() // before the commit is sent: the rest of a wait is measured from here
	commits := map[string][]kafka.OffsetCommit{}
	for p, off := range offs {
		meta := cleanMark(int(gen.ID))
		if rest := p.holdUntil.Sub(now); rest > 0 {
			meta += waitSuffix + strconv.FormatInt(int64((rest+time.Millisecond-1)/time.Millisecond), 10)
		}
		if c.cfg.Parking != nil { // parking.go: d= or the parking partition's state beside the mark
			var pmeta string
			if off, pmeta = c.parkMeta(p, off); off < 0 {
				delete(offs, p) // not set up: its commit stays as it is
				continue
			}
			offs[p], meta = off, joinMeta(meta, pmeta)
		}
		commits[p.topic] = append(commits[p.topic], kafka.OffsetCommit{Partition: p.partition, Offset: off, Metadata: meta})
	}
	if len(commits) == 0 {
		return
	}
	res, failed, err := offsetCommit(ctx, cl, gen, commits)
	if err != nil {
		c.m.Commits.WithLabelValues("error").Inc()
		log.Warn("could not prove a clean hand-over (offset commit with metadata failed): the next owner of these partitions waits MOENGAGE_MAX_PROCESSING_TIME",
			"err", err)
	} else {
		c.m.Commits.WithLabelValues("ok").Inc()
		log.Info("handed over cleanly: offsets committed with the proof", "metadata", cleanMark(int(gen.ID)), "partitions", len(offs))
	}
	for p, off := range offs {
		if res != nil && !failed[TopicPartition{p.topic, p.partition}] {
			p.committed = off
			c.m.CommittedOffset.WithLabelValues(p.topic, strconv.Itoa(p.partition)).Set(float64(off))
		}
	}
}

// handOffOffsets seals parts and returns the offset to commit with the
// proof for each one not sealed before: what was committed or is done,
// else its log start (ListOffsets; left out when that cannot be read).
func handOffOffsets(ctx context.Context, cl *kafka.Client, parts []*partitionState, log *slog.Logger) map[*partitionState]int64 {
	offs := map[*partitionState]int64{}
	unknown := map[string][]kafka.OffsetRequest{}
	pending := map[TopicPartition]*partitionState{}
	for _, p := range parts {
		sealed := p.sealed
		p.sealed = true
		off := max(p.committed, p.start)
		if tr := p.tr.Load(); tr != nil {
			off = max(off, tr.watermark())
		}
		switch {
		case sealed:
		case off >= 0:
			offs[p] = off
		default:
			unknown[p.topic] = append(unknown[p.topic], kafka.FirstOffsetOf(p.partition))
			pending[TopicPartition{p.topic, p.partition}] = p
		}
	}
	if len(unknown) == 0 {
		return offs
	}
	res, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: unknown})
	if err != nil {
		log.Warn("cannot read the log start of partitions with no offset: their next owner waits MOENGAGE_MAX_PROCESSING_TIME", "err", err)
		return offs
	}
	for t, ps := range res.Topics {
		for _, po := range ps {
			if p := pending[TopicPartition{t, po.Partition}]; p != nil && po.Error == nil && po.FirstOffset >= 0 {
				offs[p] = po.FirstOffset
			}
		}
	}
	return offs
}
