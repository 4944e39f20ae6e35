package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/parking"
	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Isolation by parking (DESIGN.md invariant 8, "Workspaces and parking"):
// the plumbing of the state machines of internal/parking into the
// generation. parking.go: the configuration, the set-up at a generation's
// start and the source side (detoured records to the parking topic);
// parked.go: the parking partitions' cursor; replan.go: the supervisor of
// the loops and the replan; undetour.go: when a detour may end.

// ParkWriter is what the consumer uses of the parking topic's writer
// (*parkio.Writer).
type ParkWriter interface {
	Write(ctx context.Context, recs []parkio.Record) ([]parkio.Position, error)
	MarkAndEnds(ctx context.Context, gen int64) ([]int64, error)
	Idle() <-chan struct{}
}

var _ ParkWriter = (*parkio.Writer)(nil)

// Parking configures parking (Config.Parking): the parking topic, and
// either IO (the first generation's set-up creates the topic if missing,
// parkio.Ensure, retrying until it succeeds, and opens a parkio.Writer on
// it: nothing of it at start-up, DESIGN.md invariant 10) or the topic's
// partition count, Writer and Committed given (NewParking, tests).
type Parking struct {
	Topic string // the parking topic (parkio.TopicName of the group)
	IO    *parkio.Config
	// Partitions is the topic's partition count K (parkio.Ensure), Writer
	// its writer, Committed reads the group's commits of its partitions
	// (parkio.Committed), for the un-detour check. Without IO.
	Partitions int
	Writer     ParkWriter
	Committed  func(ctx context.Context) ([]parking.Commit, error)
	// HoldOf is how long the cohort of h is still held in this replica by
	// requests whose outcome is unknown (the not-before of a record parked
	// now, protocol 2). nil: 0.
	HoldOf func(h wire.Header) time.Duration
	// HoldCohort holds the cohort of h in this replica until the time
	// given: the not-before of a parked record, from its reading (protocol
	// 2). Its requests wait, while the partition's other records and
	// cohorts flow. nil: the parking reader itself waits out each record's
	// not-before before handing it on (every record after it waits too).
	HoldCohort func(h wire.Header, until time.Time)
	// Hold is this replica's longest unknown-outcome hold (the hold= of a
	// parking partition's commit, protocol 3). nil: 0.
	Hold func() time.Duration
	// Revoke is what a replan revokes the batcher with: the batcher's own
	// Revoke (drop what is pending, wait for the attempts under way), not
	// one that also waits for unknown outcomes to settle (the app's
	// settlingBatcher): the sink holds those cohorts within the replica,
	// and a parked record carries its cohort's hold (HoldOf). nil:
	// Config.Batcher.Revoke.
	Revoke func(ctx context.Context) error
	// UndetourInterval is how often a detour of a workspace that is no
	// longer blocked is checked (protocol 5). Default 2s.
	UndetourInterval time.Duration
}

// NewParking returns the Parking of group on the topic io.Topic with k
// partitions, writing and reading through parkio.
func NewParking(io parkio.Config, group string, k int) *Parking {
	return &Parking{Topic: io.Topic, Partitions: k, Writer: parkio.NewWriter(io, k),
		Committed: func(ctx context.Context) ([]parking.Commit, error) { return parkio.Committed(ctx, io, group, k) }}
}

func (p *Parking) setDefaults(topics []string) error {
	if p == nil {
		return nil
	}
	if p.UndetourInterval == 0 {
		p.UndetourInterval = 2 * time.Second
	}
	switch {
	case p.Topic == "" || slices.Contains(topics, p.Topic):
		return fmt.Errorf("consumer: parking topic %q is empty or an input topic", p.Topic)
	case p.IO == nil && (p.Partitions <= 0 || p.Writer == nil || p.Committed == nil):
		return errors.New("consumer: Parking needs IO, or Partitions, Writer and Committed")
	case p.IO != nil && p.IO.Topic != p.Topic:
		return fmt.Errorf("consumer: Parking.IO's topic %q is not Parking.Topic %q", p.IO.Topic, p.Topic)
	}
	return nil
}

// parkIO is the parking topic's I/O in use: Parking's own, or what the
// set-up opened from Parking.IO (Consumer.park, kept across generations).
type parkIO struct {
	k         int
	writer    ParkWriter
	committed func(ctx context.Context) ([]parking.Commit, error)
}

// openPark returns the parking topic's I/O, opening it at the first call
// with Parking.IO (create the topic if missing, count its partitions).
func (c *Consumer) openPark(ctx context.Context, group string) (*parkIO, error) {
	if io := c.park.Load(); io != nil {
		return io, nil
	}
	pk := c.cfg.Parking
	if pk.IO == nil {
		io := &parkIO{k: pk.Partitions, writer: pk.Writer, committed: pk.Committed}
		c.park.Store(io)
		return io, nil
	}
	k, err := parkio.Ensure(ctx, *pk.IO)
	if err != nil {
		return nil, fmt.Errorf("creating or reading the parking topic %s: %w", pk.Topic, err)
	}
	cfg := *pk.IO
	io := &parkIO{k: k, writer: parkio.NewWriter(cfg, k),
		committed: func(ctx context.Context) ([]parking.Commit, error) { return parkio.Committed(ctx, cfg, group, k) }}
	c.park.Store(io)
	return io, nil
}

// parkIdle is the parking writer's Idle, or a closed channel before it was
// opened (nothing was written).
func (c *Consumer) parkIdle() <-chan struct{} {
	if io := c.park.Load(); io != nil {
		return io.writer.Idle()
	}
	done := make(chan struct{})
	close(done)
	return done
}

func (p *Parking) holdOf(h wire.Header) time.Duration {
	if p.HoldOf == nil {
		return 0
	}
	return p.HoldOf(h)
}

func (p *Parking) hold() time.Duration {
	if p.Hold == nil {
		return 0
	}
	return p.Hold()
}

// sourcePark is the parking state of one source partition in a generation:
// the protocol's Source (under mu: the process loop, the park queue, the
// replan and the commits use it) and, while its loops run, the queue of
// records to park (q; nil otherwise).
type sourcePark struct {
	pl  *plumb
	mu  sync.Mutex
	src *parking.Source
	q   chan parkItem
	// full: blocked workspaces that did not fit in the metadata (ErrFull);
	// their records go on to the batcher, as without parking.
	full map[string]bool
}

func (sp *sourcePark) isFull(w string) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.full[w]
}

// parkItem is one record to park, and its place in its tracker.
type parkItem struct {
	rec parkio.Record
	tr  *tracker
	seq int64
}

// parkQueue bounds the records waiting to be parked per source partition.
const parkQueue = 1024

// errReplan stops a process loop that met a record of a blocked workspace
// not yet detoured: it hands nothing more on until the replan ran.
var errReplan = errors.New("consumer: replanning")

// route decides a decoded record's way (protocol 1): a record of a
// detoured workspace is queued for the parking topic (parked: true); one of
// a blocked workspace not detoured here asks for a replan and stops the
// loop (errReplan); any other goes on to the batcher.
func (sp *sourcePark) route(ctx context.Context, tr *tracker, seq int64, m *kafka.Message, h wire.Header) (parked bool, err error) {
	w := h.Workspace
	sp.pl.see(w)
	sp.mu.Lock()
	det := sp.src.Detoured(w)
	sp.mu.Unlock()
	switch {
	case det:
	case sp.pl.blocked(w) && !sp.isFull(w):
		sp.pl.requestReplan("blocked")
		return true, errReplan
	default:
		return false, nil
	}
	it := parkItem{tr: tr, seq: seq, rec: parkio.Record{Workspace: w, Cohort: h.CohortID, Key: m.Key, Value: m.Value,
		SourceTopic: m.Topic, SourcePartition: m.Partition, SourceOffset: m.Offset,
		NotBefore: sp.pl.c.cfg.Parking.holdOf(h), Generation: int64(sp.pl.gen.ID)}}
	select {
	case sp.q <- it:
		return true, nil
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// runParkQueue writes the queued records of one source partition to the
// parking topic, in queue order, as many per Write as are waiting, until
// the queue is closed (its process loop returned) and empty. Writes use
// the generation's context, not the loop's: a replan waits for them to be
// acknowledged rather than leave one in flight. Each acknowledged record is
// settled (protocol "Settled (e)") after Source.Parked.
func (sp *sourcePark) runParkQueue(gctx context.Context, q <-chan parkItem, log *slog.Logger) {
	w := sp.pl.io.writer
	batch := make([]parkItem, 0, 256)
	recs := make([]parkio.Record, 0, 256)
	for it := range q {
		batch, recs = append(batch[:0], it), append(recs[:0], it.rec)
	more:
		for len(batch) < cap(batch) {
			select {
			case it, ok := <-q:
				if !ok {
					break more
				}
				batch, recs = append(batch, it), append(recs, it.rec)
			default:
				break more
			}
		}
		pos, err := w.Write(gctx, recs)
		if err != nil {
			if gctx.Err() == nil {
				log.Error("parking write failed for good: these records stay unsettled in their source partition, whose commit stops there",
					"err", err, "records", len(recs))
			}
			for range q { // the rest is dropped, unsettled: read again after the next replan or rebalance
			}
			return
		}
		sp.mu.Lock()
		for i, it := range batch {
			sp.src.Parked(it.rec.Workspace, pos[i].Partition, pos[i].Offset)
		}
		sp.mu.Unlock()
		m := sp.pl.c.m
		m.ParkingWrites.Add(float64(len(batch)))
		for _, it := range batch {
			m.ParkedChanges.WithLabelValues(sp.pl.c.label(it.rec.Workspace)).Inc()
			it.tr.release(it.seq)
		}
	}
}

// plumb is one generation's parking state: every owned partition's
// (partitionState.src, .pk), the workspaces met and whether each was
// blocked when last looked at, and the replan requests.
type plumb struct {
	c     *Consumer
	gen   *kafka.Generation
	parts []*partitionState
	log   *slog.Logger

	replan chan string // a reason; capacity 1: one request pending is enough
	io     *parkIO     // set by setup

	mu   sync.Mutex
	seen map[string]bool // workspace → blocked when last looked at

	aged map[string]bool // the workspaces of cohortsync_parked_oldest_age_seconds (supervisor only)
}

func newPlumb(c *Consumer, gen *kafka.Generation, parts []*partitionState, log *slog.Logger) *plumb {
	return &plumb{c: c, gen: gen, parts: parts, log: log, replan: make(chan string, 1), seen: map[string]bool{},
		aged: map[string]bool{}}
}

func (pl *plumb) isParking(p *partitionState) bool { return p.topic == pl.c.cfg.Parking.Topic }

// blocked asks Config.Blocked.
func (pl *plumb) blocked(w string) bool {
	return pl.c.cfg.Blocked != nil && pl.c.cfg.Blocked(w)
}

// see notes a workspace met in a record, so that a change of its blocked
// state is noticed (blockedChanged).
func (pl *plumb) see(w string) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if _, ok := pl.seen[w]; !ok {
		pl.seen[w] = pl.blocked(w)
	}
}

// workspaces returns the workspaces met, and which of them are blocked now.
func (pl *plumb) workspaces() (all []string, blocked map[string]bool) {
	pl.mu.Lock()
	all = make([]string, 0, len(pl.seen))
	for w := range pl.seen {
		all = append(all, w)
	}
	pl.mu.Unlock()
	blocked = map[string]bool{}
	for _, w := range all {
		if pl.blocked(w) {
			blocked[w] = true
		}
	}
	return all, blocked
}

// blockedChanged re-reads the blocked state of every workspace met and
// reports whether one changed.
func (pl *plumb) blockedChanged() bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	changed := false
	for w, was := range pl.seen {
		if b := pl.blocked(w); b != was {
			pl.seen[w], changed = b, true
		}
	}
	return changed
}

// requestReplan asks the supervisor for a replan (replan.go).
func (pl *plumb) requestReplan(reason string) {
	select {
	case pl.replan <- reason:
	default:
	}
}

// setup is protocol 6 (b) and the takeover of every owned partition: it
// writes this generation's marker to every parking partition and reads
// their ends, then rebuilds each source partition's Source from its
// committed metadata and those ends, and each parking partition's
// Partition from its commit.
func (pl *plumb) setup(ctx context.Context) error {
	io, err := pl.c.openPark(ctx, pl.gen.GroupID)
	if err != nil {
		return err
	}
	pl.io = io
	ends, err := io.writer.MarkAndEnds(ctx, int64(pl.gen.ID))
	if err != nil {
		return fmt.Errorf("writing the generation's markers: %w", err)
	}
	marks, err := pl.c.fetchMarks(ctx, pl.gen.GroupID, pl.parts)
	if err != nil {
		return fmt.Errorf("reading the committed metadata: %w", err)
	}
	starts, err := pl.logStarts(ctx)
	if err != nil {
		return err
	}
	for _, p := range pl.parts {
		meta := marks[p.topic][p.partition]
		if !pl.isParking(p) {
			src, err := parking.NewSource(meta, ends)
			if err != nil {
				return fmt.Errorf("%s/%d: %w", p.topic, p.partition, err)
			}
			pl.c.commitMu.Lock() // the commits read it
			p.src = &sourcePark{pl: pl, src: src}
			pl.c.commitMu.Unlock()
			for _, w := range src.Workspaces() {
				pl.see(w)
			}
			continue
		}
		off := p.start
		if off < 0 {
			off, meta = starts[p.partition], ""
		}
		cm, err := parking.ParseCommit(off, meta)
		if err != nil {
			return fmt.Errorf("%s/%d: %w", p.topic, p.partition, err)
		}
		pl.c.commitMu.Lock()
		p.pk = newParkedPart(pl, p, parking.NewPartition(cm))
		pl.c.commitMu.Unlock()
		for w := range cm.Held {
			pl.see(w)
		}
	}
	return nil
}

// logStarts reads the log start of the owned parking partitions that have
// no commit yet: the main cursor starts there.
func (pl *plumb) logStarts(ctx context.Context) (map[int]int64, error) {
	var reqs []kafka.OffsetRequest
	for _, p := range pl.parts {
		if pl.isParking(p) && p.start < 0 {
			reqs = append(reqs, kafka.FirstOffsetOf(p.partition))
		}
	}
	out := map[int]int64{}
	if len(reqs) == 0 {
		return out, nil
	}
	cl := &kafka.Client{Addr: kafka.TCP(pl.c.cfg.Brokers...), Transport: pl.c.cfg.Transport}
	topic := pl.c.cfg.Parking.Topic
	res, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("reading the parking partitions' log start: %w", err)
	}
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("log start of %s/%d: %w", topic, po.Partition, po.Error)
		}
		out[po.Partition] = po.FirstOffset
	}
	return out, nil
}

// sourceOffset is the offset a source partition's next commit (and its next
// loop) starts from: its tracker's watermark, else where it started (<0:
// unknown, nothing read and nothing committed). Call it under commitMu.
func sourceOffset(p *partitionState) int64 {
	if tr := p.tr.Load(); tr != nil {
		return tr.watermark()
	}
	return p.start
}

// parkMeta returns the parking tokens of p's commit metadata and the offset
// to commit with them (for a parking partition, its Partition's commit
// offset; for a source partition, off). Before the set-up (neither src nor
// pk) it returns -1: nothing may be committed then, a commit without d=
// would erase the detours. Call it under commitMu.
func (c *Consumer) parkMeta(p *partitionState, off int64) (int64, string) {
	switch {
	case p.src != nil:
		p.src.mu.Lock()
		defer p.src.mu.Unlock()
		return off, p.src.src.Metadata()
	case p.pk != nil:
		cm := p.pk.commit(c.cfg.Parking.hold())
		return cm.Offset, cm.Encode()
	}
	return -1, ""
}

// joinMeta joins metadata tokens with ';', leaving out empty ones.
func joinMeta(toks ...string) string {
	out := ""
	for _, t := range toks {
		if t == "" {
			continue
		}
		if out != "" {
			out += ";"
		}
		out += t
	}
	return out
}

func partName(p *partitionState) string { return p.topic + "/" + strconv.Itoa(p.partition) }
