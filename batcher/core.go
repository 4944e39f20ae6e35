package batcher

import (
	"container/heap"
	"errors"
	"fmt"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// This file is the batcher's pure core: compaction, the windows, sealing,
// the due order, settling and revoking, as plain state changes. It has no
// goroutines, locks, clock or I/O: every method that needs the time is
// given it, and the only calls out are the Acks' Done (Batch.Acknowledge).
// The Batcher's Run goroutine owns one Core; tests drive one directly.

// Limits are the bounds a Core keeps. Zero values take the defaults.
type Limits struct {
	MaxBytes    int           // request body cap; default wire.DefaultMaxBodyBytes (128000)
	MaxMembers  int           // members per request; 0 = only MaxBytes limits
	Window      time.Duration // longest an open batch waits before it is due; default 5s
	MaxInFlight int           // batches of one workspace taken by Next and not yet settled; default 4
	MaxOut      int           // batches of all workspaces taken by Next and not yet settled; default 1024 (slots.go)
	MaxPending  int           // member changes held (pending or in flight) before Room is 0; default 1000000
	MaxSlots    int           // members a batch's table holds before it is sealed; default and most: the table's bound (tests lower it)
}

func (l *Limits) setDefaults() error {
	if l.MaxBytes == 0 {
		l.MaxBytes = wire.DefaultMaxBodyBytes
	}
	if l.Window == 0 {
		l.Window = 5 * time.Second
	}
	if l.MaxInFlight == 0 {
		l.MaxInFlight = 4
	}
	if l.MaxOut == 0 {
		l.MaxOut = defaultMaxOut
	}
	if l.MaxPending == 0 {
		l.MaxPending = 1000000
	}
	if l.MaxSlots == 0 || l.MaxSlots > maxSlots {
		l.MaxSlots = maxSlots
	}
	switch {
	case l.MaxBytes < 64:
		return fmt.Errorf("batcher: MaxBytes %d is too small", l.MaxBytes)
	case l.MaxMembers < 0, l.Window < 0, l.MaxInFlight < 0, l.MaxOut < 0, l.MaxPending < 0, l.MaxSlots < 0:
		return errors.New("batcher: negative limit")
	}
	return nil
}

// minMember is the smallest possible encoded member, {"uid":"x"}: once
// fewer bytes are left (after the separating comma), no member can fit.
var minMember = wire.MemberSize("x")

// Core is the batching state: the open and sealed batches of every cohort,
// the net effect of their changes per (workspace, partner, cohort, uid), and which
// cohort is due next. It is not safe for concurrent use: one goroutine owns
// it. A Batch taken by Next belongs to its taker until it is given back to
// Settle; meanwhile the Core does not touch its members.
type Core struct {
	lim       Limits
	cohorts   map[cohortKey]*cohort
	ready     cohortHeap          // cohorts with pending batches and nothing in flight, but for the held ones
	ws        map[string]*wsSlots // workspaces with batches out (slots.go)
	pending   int                 // live members in pending and in-flight batches
	inFlight  int
	flushAll  bool  // shutdown: everything is due now
	compacted int64 // changes that superseded or repeated a pending one
}

// NewCore returns an empty Core.
func NewCore(l Limits) (*Core, error) {
	if err := l.setDefaults(); err != nil {
		return nil, err
	}
	return &Core{lim: l, cohorts: make(map[cohortKey]*cohort), ws: make(map[string]*wsSlots)}, nil
}

// Pending returns the member changes held, pending or in flight.
func (c *Core) Pending() int { return c.pending }

// InFlight returns the batches taken by Next and not yet settled.
func (c *Core) InFlight() int { return c.inFlight }

// Compacted returns how many changes so far superseded or repeated a
// pending change of the same member.
func (c *Core) Compacted() int64 { return c.compacted }

// Room returns how many more changes Add may take before MaxPending is
// reached (backpressure). It is 0 or more.
func (c *Core) Room() int { return max(0, c.lim.MaxPending-c.pending) }

// Add places one change, at time now. A change for a member that has one
// pending in the cohort supersedes it (or rides on it when it is the same
// change in the batch that would take it); the superseded change's acks
// travel with the new one. Add does not look at Room: the caller does.
//
// A change should fit a request on its own (Batcher.Fits). One that does
// not is put in a batch of its own, never with others.
func (c *Core) Add(ch Change, now time.Time) {
	key := cohortKey{ch.Header.Workspace, ch.Header.Partner, ch.Header.CohortID}
	co := c.cohorts[key]
	if co == nil {
		co = &cohort{key: key, heapIdx: -1}
		c.cohorts[key] = co
	}
	h := hashUID(ch.UID)
	ms := wire.MemberSize(ch.UID)
	var carried []Ack
	if old, i := co.find(ch.UID, h); old != nil {
		c.compacted++
		if old == co.open[actionIndex(ch.Header.Action)] && old.hdr == ch.Header {
			// The same change again in the batch that would take it: the new
			// record rides on the slot already there.
			old.m.ride(i, ch.Ack)
			return
		}
		// A different change supersedes the pending one: the pending one is
		// removed from its batch and its acks travel with the new change.
		ack, more := old.m.kill(i)
		carried = make([]Ack, 0, 1+len(more))
		carried = append(append(carried, ack), more...)
		c.dropMember(co, old, ms)
	} else {
		c.pending++
	}
	bt := c.openBatch(co, ch.Header, ms, now)
	bt.m.carry(bt.m.add(ch.UID, h, ch.Ack), carried)
	bt.live++
	bt.memberBytes += ms
	if tr := c.whyFull(bt); tr != "" {
		c.seal(co, bt, tr, now)
	}
}

// whyFull returns why bt can take no more members, or "" if it can.
func (c *Core) whyFull(bt *batch) Trigger {
	switch {
	case c.lim.MaxMembers > 0 && bt.live >= c.lim.MaxMembers:
		return TriggerMembers
	case bt.remaining(c.lim.MaxBytes) < minMember:
		return TriggerBytes
	case bt.m.full(c.lim.MaxSlots):
		return TriggerSlots
	}
	return ""
}

// openBatch returns the open batch of co that takes a member of size ms
// with header h, sealing a full one and starting a new one as needed.
func (c *Core) openBatch(co *cohort, h wire.Header, ms int, now time.Time) *batch {
	ai := actionIndex(h.Action)
	bt := co.open[ai]
	switch {
	case bt == nil:
	case bt.hdr != h:
		c.seal(co, bt, TriggerHeaderChange, now)
		bt = nil
	case wire.BodySize(bt.env, bt.live+1, bt.memberBytes+ms) > c.lim.MaxBytes:
		c.seal(co, bt, TriggerBytes, now)
		bt = nil
	}
	if bt == nil {
		bt = &batch{hdr: h, env: wire.EnvelopeSize(h), createdAt: now, dueAt: now.Add(c.lim.Window)}
		if c.flushAll {
			bt.dueAt = now
		}
		co.open[ai] = bt
		co.queue = append(co.queue, bt)
		c.updateDue(co, bt.dueAt)
	}
	return bt
}

// seal closes bt to new members and makes it due now; trigger is why.
func (c *Core) seal(co *cohort, bt *batch, trigger Trigger, now time.Time) {
	bt.trigger = trigger
	if now.Before(bt.dueAt) {
		bt.dueAt = now
	}
	co.close(bt)
	c.updateDue(co, bt.dueAt)
}

// dropMember accounts for a superseded member of size ms in bt and drops
// bt when no live member is left.
func (c *Core) dropMember(co *cohort, bt *batch, ms int) {
	bt.memberBytes -= ms
	bt.live--
	if bt.live > 0 {
		return
	}
	for i, q := range co.queue {
		if q == bt {
			co.queue = append(co.queue[:i], co.queue[i+1:]...)
			break
		}
	}
	co.close(bt)
	c.recomputeDue(co)
}

// updateDue lowers co's due time to t if earlier and keeps the heap in order.
func (c *Core) updateDue(co *cohort, t time.Time) {
	if co.inFlight != nil {
		return
	}
	if co.heapIdx < 0 {
		co.dueAt = t
		heap.Push(&c.ready, co)
		return
	}
	if t.Before(co.dueAt) {
		co.dueAt = t
		heap.Fix(c.heapOf(co), co.heapIdx)
	}
}

// recomputeDue sets co's due time from its queue and its place in the heap.
func (c *Core) recomputeDue(co *cohort) {
	if co.inFlight != nil || len(co.queue) == 0 {
		c.unqueue(co)
		return
	}
	due := co.queue[0].dueAt
	for _, q := range co.queue[1:] {
		if q.dueAt.Before(due) {
			due = q.dueAt
		}
	}
	co.dueAt = due
	if co.heapIdx < 0 {
		heap.Push(&c.ready, co)
	} else {
		heap.Fix(c.heapOf(co), co.heapIdx)
	}
}

func (c *Core) forgetIfIdle(co *cohort) {
	if co.inFlight == nil && len(co.queue) == 0 {
		delete(c.cohorts, co.key)
	}
}

// NextDue returns when Next will next have a batch to give, if it can: ok
// is false when nothing is pending for a workspace with a slot free, or
// MaxOut batches are out. The time may be in the past (due now).
func (c *Core) NextDue() (at time.Time, ok bool) {
	c.holdCapped()
	if c.ready.Len() == 0 || c.inFlight >= c.lim.MaxOut {
		return time.Time{}, false
	}
	return c.ready[0].dueAt, true
}

// Next takes the head batch of the cohort due the longest whose workspace
// has fewer than MaxInFlight batches out, if one is due at now and fewer
// than MaxOut are out in all; else it returns nil. The cohort sends nothing
// else until the batch is settled. The caller owns the Batch until it gives
// it to Settle.
func (c *Core) Next(now time.Time) *Batch {
	c.holdCapped()
	if c.ready.Len() == 0 || c.inFlight >= c.lim.MaxOut || c.ready[0].dueAt.After(now) {
		return nil
	}
	co := heap.Pop(&c.ready).(*cohort)
	c.taken(co.key.workspace)
	bt := co.queue[0]
	co.queue[0] = nil
	co.queue = co.queue[1:]
	co.close(bt)
	co.inFlight = bt
	bt.m.table = nil // no longer looked up
	return &Batch{Header: bt.hdr, Members: bt.live, Trigger: c.trigger(bt, now),
		BodyBytes: wire.BodySize(bt.env, bt.live, bt.memberBytes), co: co, bt: bt}
}

// trigger says why bt is sent at now.
func (c *Core) trigger(bt *batch, now time.Time) Trigger {
	switch {
	case bt.trigger != "": // sealed
		return bt.trigger
	case c.flushAll:
		return TriggerShutdown
	case !bt.createdAt.Add(c.lim.Window).After(now):
		return TriggerWindow
	default:
		// The cohort is due because of a later batch, sealed, and its
		// batches are sent in order: this one goes first.
		return TriggerAhead
	}
}

// Settle ends the in-flight batch b, whatever its outcome: its members are
// no longer held, and its cohort may send again. Acknowledging is the
// taker's part (Batch.Acknowledge), before Settle.
func (c *Core) Settle(b *Batch) {
	co, bt := b.co, b.bt
	b.co, b.bt = nil, nil
	bt.m = members{}
	co.inFlight = nil
	c.inFlight--
	c.pending -= bt.live
	c.recomputeDue(co)
	c.released(co.key.workspace)
	c.forgetIfIdle(co)
}

// Revoke drops every pending change and returns how many it dropped (the
// new owner of the partitions reads them again from the last commit). The
// in-flight batches stay out until settled. It also ends a Flush.
func (c *Core) Revoke() (dropped int) {
	for _, co := range c.cohorts {
		for _, bt := range co.queue {
			dropped += bt.live
		}
		co.queue, co.open = nil, [2]*batch{}
		c.unqueue(co)
		c.forgetIfIdle(co)
	}
	c.pending -= dropped
	c.flushAll = false
	return dropped
}

// Flush makes every batch due at now, and every batch created later due at
// once too (shutdown drain), until Revoke.
func (c *Core) Flush(now time.Time) {
	c.flushAll = true
	for _, co := range c.cohorts {
		for _, bt := range co.queue {
			bt.dueAt = now
		}
		if co.inFlight == nil && len(co.queue) > 0 {
			c.recomputeDue(co)
		}
	}
}

// Batch is a batch taken for sending by Core.Next.
type Batch struct {
	Header    wire.Header
	Members   int     // live members
	Trigger   Trigger // why it was sent
	BodyBytes int     // the size of the request's body

	co  *cohort
	bt  *batch
	req wire.Request // built by Request
}

// Request returns the batch's request, its members in the order they came.
// It is built on first use, by the batch's taker (not the Core's owner).
func (b *Batch) Request() wire.Request {
	if b.req.UIDs == nil {
		m := &b.bt.m
		b.req = wire.Request{Header: b.Header, UIDs: make([]string, 0, b.Members)}
		for i := range m.slots {
			if m.slots[i].ack != nil {
				b.req.UIDs = append(b.req.UIDs, m.uid(int32(i)))
			}
		}
	}
	return b.req
}

// Rejected pairs the API's rejections with the changes they name, and every
// Ack each change carries, for the dead-letter topic. A rejection naming a
// member not in the batch is ignored.
func (b *Batch) Rejected(rejections []wire.Rejection) []Rejected {
	m := &b.bt.m
	byUID := make(map[string]int32, b.bt.live)
	for i := range m.slots {
		if m.slots[i].ack != nil {
			byUID[m.uid(int32(i))] = int32(i)
		}
	}
	out := make([]Rejected, 0, len(rejections))
	for _, r := range rejections {
		i, ok := byUID[r.UID]
		if !ok {
			continue // the sink named a member we did not send: nothing to settle
		}
		acks := append([]Ack{m.slots[i].ack}, m.more[i]...)
		out = append(out, Rejected{Header: b.bt.hdr, UID: r.UID, Reason: r.Reason, Acks: acks})
	}
	return out
}

// Acknowledge calls Done on the acks of every member of b, and of the
// changes each superseded, except the rejected ones (dead-lettering
// acknowledges those).
func (b *Batch) Acknowledge(rejections []wire.Rejection) {
	m := &b.bt.m
	var rejected map[string]bool
	if len(rejections) > 0 {
		rejected = make(map[string]bool, len(rejections))
		for _, r := range rejections {
			rejected[r.UID] = true
		}
	}
	for i := range m.slots {
		s := &m.slots[i]
		if s.ack == nil || rejected[m.uid(int32(i))] {
			continue
		}
		s.ack.Done()
		for _, a := range m.more[int32(i)] {
			a.Done()
		}
	}
}

// cohortKey names a cohort: the API's cohorts are per partner, and each
// workspace (MoEngage customer) has its own, so that two workspaces' cohorts
// of the same id never share a batch, a compaction or the one in flight.
type cohortKey struct{ workspace, partner, cohortID string }

// cohort is the state of one (workspace, partner, cohort_id).
type cohort struct {
	key      cohortKey
	queue    []*batch  // pending batches, in creation order; sent head first
	open     [2]*batch // the batch taking new members, per action
	inFlight *batch
	dueAt    time.Time // earliest due time in queue
	heapIdx  int       // index in Core.ready, or in its workspace's held when held; -1 when in neither
	held     bool      // set aside in its workspace's held: MaxInFlight of the workspace's batches are out
}

// close makes bt no longer the batch that takes new members, if it was.
func (co *cohort) close(bt *batch) {
	if ai := actionIndex(bt.hdr.Action); co.open[ai] == bt {
		co.open[ai] = nil
	}
}

// find returns the pending (not in-flight) batch holding a live change for
// uid, and its slot. h is hashUID(uid). A uid has at most one live change
// in the pending batches of a cohort.
func (co *cohort) find(uid string, h uint64) (*batch, int32) {
	for _, bt := range co.queue {
		if i := bt.m.find(uid, h); i >= 0 {
			return bt, i
		}
	}
	return nil, -1
}

type batch struct {
	hdr         wire.Header
	env         int
	m           members
	live        int
	memberBytes int
	trigger     Trigger // why it was sealed; "" while open
	createdAt   time.Time
	dueAt       time.Time
}

func (bt *batch) remaining(max int) int {
	return max - wire.BodySize(bt.env, bt.live, bt.memberBytes) - 1
}

func actionIndex(a event.Action) int {
	if a == event.Remove {
		return 1
	}
	return 0
}

// cohortHeap orders ready cohorts by due time, earliest first.
type cohortHeap []*cohort

func (h cohortHeap) Len() int           { return len(h) }
func (h cohortHeap) Less(i, j int) bool { return h[i].dueAt.Before(h[j].dueAt) }
func (h cohortHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}
func (h *cohortHeap) Push(x any) {
	c := x.(*cohort)
	c.heapIdx = len(*h)
	*h = append(*h, c)
}
func (h *cohortHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	c.heapIdx = -1
	*h = old[:len(old)-1]
	return c
}
