package consumer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/parking"
	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// The parking side (protocol 3, 4): one owned parking partition k.
//
// Each run of the loops (an epoch, replan.go) reads k with ONE reader that
// plays both the main cursor and the resume cursors: it starts at the
// lowest o_V of the held workspaces that are not blocked when the epoch
// starts (the resuming set R), else at m. Below m0 (m at the epoch's
// start) it delivers only the records of a V ∈ R at or past o_V (a resume
// cursor: stale per V's own generation); from m0 on it is the main cursor
// (stale per the highest generation read), delivering every workspace that
// is not held, or held and resuming, and holding a blocked one at its first
// record (Partition.Hold). A workspace that becomes blocked or unblocked
// meanwhile is a replan: the loops restart from the settled state.
//
// The reader's outcomes reach the Partition in offset order: every record
// read is tracked (tracker) and listed with its generation (gens); apply
// pops the settled prefix and reports it (Advance for each resuming V
// whose o_V it is, Done when it is the main cursor's next), then releases a
// resuming V whose o_V reached m (Partition.Resume).

// offGen is a record read from k: its offset and writer generation, and
// whether it was delivered (to the batcher) in this epoch or an earlier one.
type offGen struct {
	off, gen  int64
	delivered bool
}

// parkedPart is one owned parking partition in a generation.
type parkedPart struct {
	pl *plumb
	ps *partitionState

	mu sync.Mutex
	p  *parking.Partition
	// Per epoch (begin): the reader's tracker, the records read and not yet
	// applied, m at the start, the highest generation the main cursor read,
	// the resuming workspaces with their o_V at the start and the highest
	// generation each resume cursor read.
	tr       *tracker
	gens     []offGen
	m0       int64
	mainGen  int64
	resStart map[string]int64
	resGen   map[string]int64
	// oldest: per workspace held or resuming here, the write time of its
	// oldest record not delivered, as far as the reader has seen it
	// (cohortsync_parked_oldest_age_seconds).
	oldest map[string]time.Time
}

func newParkedPart(pl *plumb, ps *partitionState, p *parking.Partition) *parkedPart {
	return &parkedPart{pl: pl, ps: ps, p: p, oldest: map[string]time.Time{}}
}

// begin starts an epoch once the previous one's loops stopped (and the
// batcher was revoked): it returns the offset the reader starts at.
func (pk *parkedPart) begin() int64 {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	var carried []int64
	if pk.tr != nil {
		pk.apply()
		carried = pk.carry()
	}
	cm := pk.p.Commit(0)
	pk.m0, pk.mainGen = pk.p.Next(), cm.Gen
	pk.resStart, pk.resGen = map[string]int64{}, map[string]int64{}
	start := pk.m0
	for x, o := range cm.Held {
		if !pk.pl.blocked(x) {
			pk.resStart[x], pk.resGen[x] = o, cm.HeldGen[x]
			start = min(start, o)
		}
	}
	pk.tr, pk.gens = newTracker(pk.ps.topic, pk.ps.partition, start), nil
	pk.tr.done = carried
	for x := range pk.oldest {
		if _, held := cm.Held[x]; !held {
			delete(pk.oldest, x)
		}
	}
	return start
}

// carry returns the offsets of the records delivered and settled (accepted
// or dead-lettered) and not yet applied: the next epoch's reader settles
// them at once where it would deliver them again. Not the records settled
// otherwise (passed over, held): a workspace passed over now may resume
// next. Call it under mu.
func (pk *parkedPart) carry() []int64 {
	delivered := map[int64]bool{}
	for _, e := range pk.gens {
		if e.delivered {
			delivered[e.off] = true
		}
	}
	return pk.tr.carry(func(off int64) bool { return delivered[off] })
}

// apply reports the settled prefix of the records read to the Partition,
// in offset order (see the file comment). Offsets the reader never saw
// (the log start moved, or no record there) count as settled, generation 0.
// Call it under mu.
func (pk *parkedPart) apply() {
	w := pk.tr.watermark()
	n := 0
	for ; n < len(pk.gens) && pk.gens[n].off < w; n++ {
		e := pk.gens[n]
		for x := range pk.resStart {
			o, ok := pk.p.Held(x)
			if !ok || o > e.off {
				continue
			}
			for ; o < e.off; o++ {
				pk.p.Advance(x, o, 0)
			}
			pk.p.Advance(x, e.off, e.gen)
		}
		if e.off >= pk.p.Next() {
			for o := pk.p.Next(); o < e.off; o++ {
				pk.p.Done(o, 0)
			}
			pk.p.Done(e.off, e.gen)
		}
		for x := range pk.resStart {
			if _, held := pk.p.Held(x); held {
				if _, still := pk.p.Resume(x); !still { // released: o_x reached m
					delete(pk.oldest, x)
				}
			}
		}
	}
	pk.gens = append(pk.gens[:0], pk.gens[n:]...)
}

// commit applies what settled and returns the state to commit.
func (pk *parkedPart) commit(hold time.Duration) parking.Commit {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	if pk.tr != nil {
		pk.apply()
	}
	return pk.p.Commit(hold)
}

// decision is what the reader does with a record.
type decision int

const (
	skip    decision = iota // settled at once: another's, passed over, stale, a marker
	deliver                 // to the batcher
	hold                    // its workspace is blocked: hold it here
)

// classify decides on the record at off of workspace x (none for a marker)
// written in generation g, and notes its generation. Call it under mu.
func (pk *parkedPart) classify(off int64, x string, g int64) decision {
	if off < pk.m0 {
		o, res := pk.resStart[x]
		stale := res && g < pk.resGen[x]
		for r, ro := range pk.resStart {
			if off >= ro {
				pk.resGen[r] = max(pk.resGen[r], g)
			}
		}
		if x == "" || !res || off < o || stale {
			return skip
		}
		return deliver
	}
	stale := g < pk.mainGen
	pk.mainGen = max(pk.mainGen, g)
	if x == "" || stale {
		return skip
	}
	if _, held := pk.p.Held(x); held {
		if _, res := pk.resStart[x]; res {
			return deliver
		}
		return skip
	}
	if pk.pl.blocked(x) {
		return hold
	}
	return deliver
}

// errHoldFull stops the reader: one more held workspace does not fit in
// the commit metadata (Partition.Hold).
var errHoldFull = errors.New("consumer: parking partition's metadata full")

// holdAt holds x at off once every record before off is settled and
// applied (so that o_x's generation is that of the records before it).
func (pk *parkedPart) holdAt(ctx context.Context, x string, off int64, at time.Time) error {
	for {
		pk.mu.Lock()
		pk.apply()
		if len(pk.gens) > 0 && pk.gens[0].off == off {
			for o := pk.p.Next(); o < off; o++ {
				pk.p.Done(o, 0)
			}
			ok := pk.p.Hold(x, off)
			if _, seen := pk.oldest[x]; ok && !seen {
				pk.oldest[x] = at
			}
			pk.mu.Unlock()
			if !ok {
				return errHoldFull
			}
			return nil
		}
		pk.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// run reads k from start and hands its records on until stop or gctx. It
// returns an error only when the reader could not start.
func (pk *parkedPart) run(gctx context.Context, stop <-chan struct{}, start int64, log *slog.Logger) error {
	c := pk.pl.c
	log = log.With("topic", pk.ps.topic, "partition", pk.ps.partition)
	r, err := c.openReader(c.cfg.readerConfig(pk.ps.topic, pk.ps.partition), start)
	if err != nil {
		pk.ps.startErr = err
		log.Error("the parking partition's reader could not start; ending the generation", "err", err)
		return err
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(gctx)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	dec := event.NewDecoder(c.cfg.DefaultPartner)
	for {
		m, err := r.FetchMessage(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			log.Warn("fetch failed; retrying", "err", err)
			sleepCtx(ctx, time.Second)
			continue
		}
		if err := pk.handle(ctx, dec, m, time.Now()); err != nil {
			if errors.Is(err, errHoldFull) {
				c.m.ParkingFull.WithLabelValues("parking").Inc()
				log.Error("a parking partition's commit metadata cannot hold one more blocked workspace: its main cursor stops here until the next replan",
					"offset", m.Offset)
				<-ctx.Done()
			}
			return nil
		}
	}
}

// handle tracks one record read from k and settles, holds or delivers it.
func (pk *parkedPart) handle(ctx context.Context, dec *event.Decoder, m kafka.Message, readAt time.Time) error {
	c := pk.pl.c
	tr := pk.tr
	seq, ok := tr.track(m.Offset)
	if !ok {
		return nil
	}
	rec, derr := parkio.Decode(m)
	pk.mu.Lock()
	pk.gens = append(pk.gens, offGen{off: m.Offset, gen: rec.Generation})
	d := skip
	if derr == nil {
		x := rec.Workspace
		if rec.Marker {
			x = ""
		}
		d = pk.classify(m.Offset, x, rec.Generation)
		pk.gens[len(pk.gens)-1].delivered = d == deliver
		if _, seen := pk.oldest[x]; d == deliver && !seen && m.Offset < pk.m0 {
			pk.oldest[x] = m.Time // a resuming workspace's first record
		}
	}
	pk.mu.Unlock()
	if derr != nil {
		inv := &event.InvalidError{Reason: event.ReasonInvalidField, Detail: "a record of the parking topic: " + derr.Error()}
		c.m.EventsInvalid.WithLabelValues(string(inv.Reason)).Inc()
		return c.cfg.DLQ.Invalid(ctx, m, inv, newRecordAck(tr, seq, m.Key, nil, 1))
	}
	switch {
	case d == skip:
		tr.release(seq)
		return nil
	case d == deliver && tr.settledDone(m.Offset): // delivered and settled before a replan
		tr.release(seq)
		return nil
	case d == hold:
		if err := pk.holdAt(ctx, rec.Workspace, m.Offset, m.Time); err != nil {
			return err
		}
		pk.pl.log.Info("parked records of a blocked workspace held", "workspace", rec.Workspace,
			"topic", m.Topic, "partition", m.Partition, "offset", m.Offset)
		tr.release(seq)
		return nil
	}
	pk.pl.see(rec.Workspace)
	buf, err := pk.changes(ctx, dec, tr, seq, m, &rec)
	if err == nil && len(buf) > 0 {
		if rec.NotBefore > 0 { // protocol 2, from our reading
			if hc := c.cfg.Parking.HoldCohort; hc != nil {
				hc(buf[0].Header, readAt.Add(rec.NotBefore))
			} else if !sleepCtx(ctx, time.Until(readAt.Add(rec.NotBefore))) {
				return ctx.Err()
			}
		}
		err = c.cfg.Batcher.Add(ctx, buf)
	}
	if err == nil {
		c.m.ParkedChanges.WithLabelValues(c.label(rec.Workspace)).Dec()
	}
	return err
}

// changes decodes a parked record's event as process does (same decoder;
// the workspace is the header's) and returns its changes.
func (pk *parkedPart) changes(ctx context.Context, dec *event.Decoder, tr *tracker, seq int64, m kafka.Message,
	rec *parkio.Parked) ([]batcher.Change, error) {
	c := pk.pl.c
	ev, err := dec.Decode(rec.Value)
	if errors.Is(err, event.ErrTombstone) {
		tr.release(seq)
		return nil, nil
	}
	if err != nil {
		var inv *event.InvalidError
		if !errors.As(err, &inv) {
			inv = &event.InvalidError{Reason: event.ReasonInvalidField, Detail: err.Error()}
		}
		return nil, c.cfg.DLQ.Invalid(ctx, m, inv, newRecordAck(tr, seq, m.Key, nil, 1))
	}
	h := wire.Header{Workspace: rec.Workspace, Action: ev.Action, Partner: ev.Partner, CohortID: ev.CohortID,
		CohortName: ev.CohortName, CohortDescription: ev.CohortDescription}
	if fit, big := splitFit(c.cfg.Fits, h, ev.UIDs); big != nil {
		return c.deadLetterTooLarge(ctx, tr, seq, m, &ev, h, fit, big, nil)
	}
	ack := newRecordAck(tr, seq, m.Key, &ev, len(ev.UIDs))
	buf := make([]batcher.Change, 0, len(ev.UIDs))
	for _, u := range ev.UIDs {
		buf = append(buf, batcher.Change{Header: h, UID: u, Ack: ack})
	}
	return buf, nil
}

// sleepCtx waits d (nothing when d ≤ 0); false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ages adds, to oldest, the write time of the oldest record not delivered
// of every workspace held or resuming here.
func (pk *parkedPart) ages(oldest map[string]time.Time) {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	for x, t := range pk.oldest {
		if o, ok := oldest[x]; !ok || t.Before(o) {
			oldest[x] = t
		}
	}
}
