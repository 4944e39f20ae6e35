package batcher

import (
	"context"
	"fmt"
	"time"
)

// Run owns the Core until ctx ends or a send fails for good: it takes the
// changes Add hands it, dispatches due batches (one goroutine per batch in
// flight, which sends it and releases its acks), settles their results,
// and answers Revoke and Flush. On return it cancels the sends in progress
// and waits for them. It returns ctx.Err(), or an error when a send failed
// for good (the sink gave up): the process cannot make progress without
// losing data and should restart. Run must be called once.
func (b *Batcher) Run(ctx context.Context) error {
	l := &loop{b: b, core: b.core, timer: time.NewTimer(time.Hour), compacted: b.core.Compacted()}
	l.sendCtx, l.cancel = context.WithCancel(context.Background())
	defer close(b.stopped)
	defer l.stop()
	// The heartbeat behind /healthz: busy from a request to the next wait,
	// which must never take long (Run answers everyone at once).
	hb := b.m.StartLoop("batcher")
	defer hb.Stop()
	for {
		if l.fatal != nil {
			return l.fatal
		}
		l.dispatch(time.Now())
		l.arm(time.Now())
		hb.Idle()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-b.adds:
			hb.Busy()
			l.add(r)
		case r := <-b.results:
			hb.Busy()
			l.settle(r)
		case reply := <-b.revokes:
			hb.Busy()
			l.revoke(reply)
		case drained := <-b.flushes:
			hb.Busy()
			l.core.Flush(time.Now())
			l.drained = append(l.drained, drained)
		case <-l.timer.C:
			hb.Busy()
		}
		l.publish()
	}
}

// loop is the state of Run's goroutine besides the Core.
type loop struct {
	b       *Batcher
	core    *Core
	timer   *time.Timer
	sendCtx context.Context // the context of the sends; Revoke replaces it
	cancel  context.CancelFunc
	fatal   error

	space     chan struct{}   // closed when the Core has room again; nil: nobody waits
	idle      chan struct{}   // closed when nothing is in flight; nil: nobody waits
	drained   []chan struct{} // Flush calls waiting for nothing pending or in flight
	compacted int64           // Core.Compacted at the last publish
}

type sendResult struct {
	batch *Batch
	err   error // nil: delivered (accepted or dead-lettered) and acknowledged
	fatal bool  // err is the sink giving up, not the send being cancelled
}

// arm sets the timer for the next due batch, if any can be sent.
func (l *loop) arm(now time.Time) {
	if at, ok := l.core.NextDue(); ok {
		l.timer.Reset(at.Sub(now))
	} else {
		l.timer.Stop()
	}
}

// add gives the Core as many of r's changes as it has room for, and tells
// the caller how many, and what to wait on for the rest.
func (l *loop) add(r addRequest) {
	now := time.Now()
	n := 0
	for ; n < len(r.changes) && l.core.Room() > 0; n++ {
		l.core.Add(r.changes[n], now)
	}
	if n < len(r.changes) && l.space == nil {
		l.space = make(chan struct{})
	}
	l.publish() // before the answer: the caller may read Pending next
	r.reply <- addReply{added: n, space: l.space}
}

// dispatch starts sending every batch the Core has due.
func (l *loop) dispatch(now time.Time) {
	for bt := l.core.Next(now); bt != nil; bt = l.core.Next(now) {
		l.b.m.BatchFlushed(string(bt.Header.Action), string(bt.Trigger), bt.Members, bt.BodyBytes)
		go l.b.send(l.sendCtx, bt)
	}
	l.publish()
}

// send runs one batch through the sink, releases its acks if it was
// delivered, and hands the result to Run. It alone owns the batch until then.
func (b *Batcher) send(ctx context.Context, bt *Batch) {
	req := bt.Request()
	rejections, err := b.cfg.Sink.Send(ctx, req)
	if err == nil && len(rejections) > 0 {
		err = b.cfg.DeadLetter(ctx, bt.Rejected(rejections))
	}
	fatal := err != nil && ctx.Err() == nil
	if err == nil {
		bt.Acknowledge(rejections)
	} else if fatal {
		b.log.Error("batch abandoned: the sink gave up; restarting is needed to deliver it",
			"err", err, "cohort_id", req.CohortID, "action", req.Action, "members", len(req.UIDs))
	}
	b.results <- sendResult{batch: bt, err: err, fatal: fatal} // Run receives until nothing is in flight
}

// settle gives a finished batch back to the Core.
func (l *loop) settle(r sendResult) {
	l.core.Settle(r.batch)
	if r.fatal && l.fatal == nil {
		l.fatal = fmt.Errorf("batcher: send cohort %s: %w", r.batch.Header.CohortID, r.err)
	}
}

// revoke drops what is pending, cancels the sends under way, and answers
// with a channel closed once nothing is in flight.
func (l *loop) revoke(reply chan<- (<-chan struct{})) {
	if dropped := l.core.Revoke(); dropped > 0 {
		l.b.log.Info("revoked: dropped pending changes", "members", dropped)
	}
	l.cancel()
	l.sendCtx, l.cancel = context.WithCancel(context.Background())
	if l.idle == nil {
		l.idle = make(chan struct{})
	}
	idle := l.idle
	l.publish() // closes idle at once when nothing is in flight
	reply <- idle
}

// publish mirrors the Core's counts into the metrics and the Batcher, and
// wakes the callers waiting for room, for no send in flight, or for the
// end of a drain.
func (l *loop) publish() {
	c, m := l.core, l.b.m
	pending, inFlight := c.Pending(), c.InFlight()
	l.b.pending.Store(int64(pending))
	l.b.inFlight.Store(int64(inFlight))
	m.SetBacklog(pending, inFlight)
	if n := c.Compacted(); n != l.compacted {
		m.AddCompacted(n - l.compacted)
		l.compacted = n
	}
	if l.space != nil && c.Room() > 0 {
		close(l.space)
		l.space = nil
	}
	if l.idle != nil && inFlight == 0 {
		close(l.idle)
		l.idle = nil
	}
	if len(l.drained) > 0 && pending == 0 && inFlight == 0 {
		for _, d := range l.drained {
			close(d)
		}
		l.drained = nil
	}
}

// stop cancels the sends under way and waits for their results.
func (l *loop) stop() {
	l.timer.Stop()
	l.cancel()
	for l.core.InFlight() > 0 {
		l.core.Settle((<-l.b.results).batch)
	}
	l.publish()
}
