package batcher

import "container/heap"

// This file keeps the slots of the Core: at most MaxInFlight batches of one
// workspace out (taken by Next, not yet settled), and at most MaxOut of all
// workspaces. A batch out may wait in the sink for its workspace's permit
// (a budget per workspace): were the slots shared by every workspace, the
// workspaces with small budgets (or a slow API) would end up holding them
// and every other workspace would send at their rate. Per workspace, a
// workspace's batches wait only behind its own permits. The sink bounds the
// requests on the wire (MAX_IN_FLIGHT HTTP attempts at once, each taken
// after its permit), so that more batches out do not mean more requests.
//
// A due cohort whose workspace has MaxInFlight batches out is held: moved
// from ready to its workspace's held heap, keeping its due time, and moved
// back, earliest first, as the workspace's batches settle. So a
// workspace's cohorts still go in their due order among themselves, and
// one workspace's batches never wait for another's to settle (MaxOut
// aside). The order within a cohort is untouched: a cohort still has at
// most one batch out, its queue's head.

// defaultMaxOut is Limits.MaxOut's default: every workspace's MaxInFlight
// (default 4) for 256 workspaces with work at once. It bounds the send
// goroutines and their bodies beyond what MaxPending bounds (each batch out
// holds at least one member counted there): a stream naming more
// workspaces than that shares the MaxOut slots again.
const defaultMaxOut = 1024

// wsSlots is what the Core keeps of a workspace with batches out.
type wsSlots struct {
	out  int        // batches of the workspace taken by Next and not yet settled
	held cohortHeap // its due cohorts set aside while out is MaxInFlight, by due time
}

// heapOf returns the heap co is in (or goes in): its workspace's held heap
// when held, else ready.
func (c *Core) heapOf(co *cohort) *cohortHeap {
	if co.held {
		return &c.ws[co.key.workspace].held
	}
	return &c.ready
}

// unqueue removes co from the heap it is in, if any. A cohort leaving
// ready may have been the one a free slot of its workspace brought back
// (released): the slot goes to the next held cohort.
func (c *Core) unqueue(co *cohort) {
	if co.heapIdx < 0 {
		return
	}
	wasHeld := co.held
	heap.Remove(c.heapOf(co), co.heapIdx)
	co.held = false
	if !wasHeld {
		c.unhold(co.key.workspace)
	}
}

// holdCapped moves the cohorts at the head of ready whose workspace has
// MaxInFlight batches out to that workspace's held heap, so that ready's
// head is a cohort Next may take.
func (c *Core) holdCapped() {
	for c.ready.Len() > 0 {
		co := c.ready[0]
		s := c.ws[co.key.workspace]
		if s == nil || s.out < c.lim.MaxInFlight {
			return
		}
		heap.Pop(&c.ready)
		co.held = true
		heap.Push(&s.held, co)
	}
}

// taken counts a batch of workspace ws handed out.
func (c *Core) taken(ws string) {
	s := c.ws[ws]
	if s == nil {
		s = &wsSlots{}
		c.ws[ws] = s
	}
	s.out++
	c.inFlight++
}

// released counts a batch of workspace ws settled: the slot it frees goes
// to the workspace's held cohort due the longest, which returns to ready.
func (c *Core) released(ws string) {
	c.ws[ws].out--
	c.unhold(ws)
}

// unhold moves workspace ws's held cohort due the longest back to ready if
// the workspace has a slot free, and forgets the workspace when it has
// neither batches out nor cohorts held.
func (c *Core) unhold(ws string) {
	s := c.ws[ws]
	if s == nil {
		return
	}
	if s.held.Len() > 0 && s.out < c.lim.MaxInFlight {
		co := heap.Pop(&s.held).(*cohort)
		co.held = false
		heap.Push(&c.ready, co)
	}
	if s.out == 0 && s.held.Len() == 0 {
		delete(c.ws, ws)
	}
}
