package consumer

import (
	"context"
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// maxAdd bounds the changes handed to the batcher in one call.
const maxAdd = 2048

// process decodes and tracks the records of one partition in read order
// and adds their changes to the batcher, joining the records already
// waiting into one call. It returns when msgs is closed, or when an Add
// fails because the generation is over (what is left is read again later).
func (c *Consumer) process(ctx context.Context, p *partitionState, msgs <-chan kafka.Message, budget *fetchBudget) {
	dec := event.NewDecoder(c.cfg.DefaultPartner)
	buf := make([]batcher.Change, 0, maxAdd)
	var tr *tracker
	var err error
	// /healthz: busy while decoding; waiting for records, for room in the
	// batcher and for the dead-letter queue is not a wedge.
	hb := c.m.Loops.Start(fmt.Sprintf("decode %s/%d", p.topic, p.partition))
	defer hb.Stop()
	ctx = metrics.WithLoop(ctx, hb)
	for m := range msgs {
		hb.Busy()
		buf = buf[:0]
		var taken int64 // bytes of the records handled in this round
		for {
			taken += recordBytes(m)
			if tr == nil {
				// The tracker starts at the first offset actually read: with
				// no commit yet, the assignment says "first offset", not a
				// number.
				start := p.start
				if start < 0 {
					start = m.Offset
				}
				tr = newTracker(p.topic, p.partition, start)
				tr.done, p.carried = p.carried, nil
				p.tr.Store(tr)
			}
			if buf, err = c.handleIn(ctx, p.src, tr, dec, m, buf); err != nil {
				break
			}
			if len(buf) >= maxAdd {
				break
			}
			var ok bool
			select {
			case m, ok = <-msgs:
			default:
			}
			if !ok {
				break
			}
		}
		// The records are decoded: their bytes are garbage now (the
		// changes hold copies), whether or not Add has to wait.
		budget.release(taken)
		hb.Idle()
		if err == nil && len(buf) > 0 {
			err = c.cfg.Batcher.Add(ctx, buf)
		}
		if err != nil {
			for range msgs {
			}
			return
		}
	}
}

// handle tracks one record, dead-letters it if it is invalid or names a
// workspace this worker does not send to (misrouted), and appends
// its changes to buf otherwise. A record with members too large for any
// request is dead-lettered as too_large, and its other members appended
// (deadLetterTooLarge). It fails only when ctx ended while a dead-letter
// write was being queued.
func (c *Consumer) handle(ctx context.Context, tr *tracker, dec *event.Decoder, m kafka.Message, buf []batcher.Change) ([]batcher.Change, error) {
	return c.handleIn(ctx, nil, tr, dec, m, buf)
}

// handleIn is handle for a partition whose parking state is sp (nil:
// none): a record of a detoured workspace is parked, one of a blocked
// workspace asks for a replan (errReplan, parking.go).
func (c *Consumer) handleIn(ctx context.Context, sp *sourcePark, tr *tracker, dec *event.Decoder, m kafka.Message, buf []batcher.Change) ([]batcher.Change, error) {
	seq, ok := tr.track(m.Offset)
	if !ok {
		return buf, nil // delivered twice after a reader restart: already tracked
	}
	if tr.settledDone(m.Offset) { // settled before a replan: sent, parked or dead-lettered already
		tr.release(seq)
		return buf, nil
	}
	if isHidden(&m) { // control or aborted records (txn.go): settled, never delivered
		tr.release(seq)
		return buf, nil
	}
	c.m.EventsConsumed.Inc()
	ev, err := dec.Decode(m.Value)
	if errors.Is(err, event.ErrTombstone) {
		c.m.EventsSkipped.Inc()
		tr.release(seq)
		return buf, nil
	}
	var inv *event.InvalidError
	if err == nil {
		inv = c.misrouted(&ev) // decoded, but not for this worker to send
		if c.parkUnknown(inv, sp, ev.Workspace) {
			inv = nil // the sink stops its line (no_key): parked until the registry serves it
		}
	} else {
		errors.As(err, &inv)
	}
	if inv != nil {
		c.m.EventsInvalid.WithLabelValues(string(inv.Reason)).Inc()
		c.log.Debug("invalid event; dead-lettering", "reason", inv.Reason, "err", inv.Detail,
			"topic", m.Topic, "partition", m.Partition, "offset", m.Offset)
		return buf, c.cfg.DLQ.Invalid(ctx, m, inv, newRecordAck(tr, seq, m.Key, nil, 1))
	}
	h := wire.Header{Workspace: c.workspaceOf(&ev), Action: ev.Action, Partner: ev.Partner, CohortID: ev.CohortID,
		CohortName: ev.CohortName, CohortDescription: ev.CohortDescription}
	if sp != nil {
		if parked, err := sp.route(ctx, tr, seq, &m, h); parked || err != nil {
			return buf, err
		}
	}
	if fit, big := splitFit(c.cfg.Fits, h, ev.UIDs); big != nil {
		return c.deadLetterTooLarge(ctx, tr, seq, m, &ev, h, fit, big, buf)
	}
	ack := newRecordAck(tr, seq, m.Key, &ev, len(ev.UIDs))
	for _, u := range ev.UIDs {
		buf = append(buf, batcher.Change{Header: h, UID: u, Ack: ack})
	}
	return buf, nil
}

// parkUnknown reports whether an event of workspace w that misrouted
// refused as unknown_workspace is to be parked instead: with Parking, a
// workspace outside the registry is a workspace without a key, whose
// changes flow by themselves once it is added (issue 21 item 4). Not when
// its source partition (sp; nil for a parked record) could not detour it
// (the commit metadata is full): dead-lettered then, as without parking,
// rather than holding the partition for a workspace nobody may ever add.
func (c *Consumer) parkUnknown(inv *event.InvalidError, sp *sourcePark, w string) bool {
	if inv == nil || inv.Reason != event.ReasonUnknownWorkspace || c.cfg.Parking == nil {
		return false
	}
	return sp == nil || !sp.isFull(w)
}

// label is workspace w's metric label (Config.WorkspaceLabel).
func (c *Consumer) label(w string) string {
	if c.cfg.WorkspaceLabel == nil {
		return w
	}
	return c.cfg.WorkspaceLabel(w)
}

// workspaceOf is the workspace an accepted event's changes go to: the one
// it names, else the default. One workspace is always named the same way,
// so that an event naming the default and one naming none share batches
// (and their order).
func (c *Consumer) workspaceOf(ev *event.Event) string {
	if ev.Workspace != "" {
		return ev.Workspace
	}
	return c.cfg.Workspace
}

// misrouted returns the reason an event must not be sent from here, or nil:
// it names a workspace this worker does not send to (neither the default,
// Config.Workspace, nor one Config.Serves accepts), or it names none while
// there is no default to send it to (a registry without
// MOENGAGE_WORKSPACE_ID). Sending it would put one MoEngage customer's
// members into another's workspace; dead-lettered, it can be replayed to a
// worker that serves it.
func (c *Consumer) misrouted(ev *event.Event) *event.InvalidError {
	def := c.cfg.Workspace
	switch {
	case ev.Workspace == "" && (def != "" || c.cfg.Serves == nil):
		return nil
	case ev.Workspace == "":
		return &event.InvalidError{Reason: event.ReasonInvalidField,
			Detail: "the event names no workspace (workspace_id) and there is no default workspace (MOENGAGE_WORKSPACE_ID)"}
	case ev.Workspace == def || c.cfg.Serves != nil && c.cfg.Serves(ev.Workspace):
		return nil
	}
	serves := "no workspace is configured"
	switch {
	case c.cfg.Serves != nil && def != "":
		serves = "not in MOENGAGE_WORKSPACES_DIR nor the default " + event.Quote(def) + ", MOENGAGE_WORKSPACE_ID"
	case c.cfg.Serves != nil:
		serves = "not in MOENGAGE_WORKSPACES_DIR"
	case def != "":
		serves = "this worker serves " + event.Quote(def) + ", MOENGAGE_WORKSPACE_ID"
	default:
		serves += ", MOENGAGE_WORKSPACE_ID"
	}
	return &event.InvalidError{Reason: event.ReasonUnknownWorkspace,
		Detail: "workspace_id " + event.Quote(ev.Workspace) + " is not served here (" + serves + ")"}
}
