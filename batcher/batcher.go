package batcher

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Ack is the handle of the log record a change came from. Done is called
// exactly once per change, when the change was accepted by the API,
// superseded by a later change whose batch was accepted, or dead-lettered.
// It is never called for changes dropped by Revoke or abandoned by a failed
// send. Done must not call back into the Batcher.
type Ack interface{ Done() }

// Change is one member change read from the log.
type Change struct {
	Header wire.Header // action, partner and cohort of the change
	UID    string
	Ack    Ack
}

// Sink sends one batch. It is called with a rate-limit permit already taken
// for the first attempt. It returns nil once every member was accepted or
// returned as a Rejection. An error means the batch was not (entirely)
// delivered: nothing of it is acknowledged.
type Sink interface {
	Send(ctx context.Context, req wire.Request) ([]wire.Rejection, error)
}

// Limiter hands out request permits.
type Limiter interface {
	Wait(ctx context.Context) error
}

// Rejected is a change the API (or the sink) refused on its own, with every
// Ack it carries (its own and those it superseded).
type Rejected struct {
	Header wire.Header
	UID    string
	Reason string
	Acks   []Ack
}

// DeadLetterFunc writes rejected changes to the dead-letter topic and only
// then calls Done on their Acks. It returns an error only when ctx ended
// before the write succeeded; the changes are then left unacknowledged.
type DeadLetterFunc func(ctx context.Context, rejected []Rejected) error

// Config configures a Batcher. Zero values take the documented defaults.
type Config struct {
	MaxBytes    int           // request body cap; default 128000
	MaxMembers  int           // members per request; 0 = only MaxBytes limits
	Window      time.Duration // longest an open batch waits before it is due; default 5s
	MaxInFlight int           // concurrent requests; default 4
	MaxPending  int           // member changes read but not acknowledged before Add blocks; default 1000000

	Sink       Sink           // required
	Limiter    Limiter        // nil = no rate limit
	DeadLetter DeadLetterFunc // required
	Logger     *slog.Logger
	Metrics    *metrics.Metrics
}

// minMember is the smallest possible encoded member, {"uid":"x"}: once
// fewer bytes are left (after the separating comma), no member can fit.
var minMember = wire.MemberSize("x")

func (c *Config) setDefaults() error {
	if c.MaxBytes == 0 {
		c.MaxBytes = 128000
	}
	if c.Window == 0 {
		c.Window = 5 * time.Second
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 4
	}
	if c.MaxPending == 0 {
		c.MaxPending = 1000000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewMetrics(nil)
	}
	switch {
	case c.Sink == nil:
		return errors.New("batcher: Sink is required")
	case c.DeadLetter == nil:
		return errors.New("batcher: DeadLetter is required")
	case c.MaxBytes < 64:
		return fmt.Errorf("batcher: MaxBytes %d is too small", c.MaxBytes)
	case c.MaxMembers < 0, c.Window < 0, c.MaxInFlight < 0, c.MaxPending < 0:
		return errors.New("batcher: negative limit")
	}
	return nil
}

// Batcher is the per-cohort batching and flush scheduler. See the package
// doc for its concurrency contract.
type Batcher struct {
	cfg Config
	log *slog.Logger
	m   *metrics.Metrics

	mu       sync.Mutex
	cohorts  map[cohortKey]*cohort
	ready    cohortHeap // cohorts with pending batches and nothing in flight
	pending  int        // live members in pending and in-flight batches
	inFlight int
	permit   bool // a limiter permit is held, not yet used
	waiting  bool // a goroutine is waiting for a permit
	flushAll bool // shutdown: everything is due now
	sendCtx  context.Context
	cancel   context.CancelFunc
	fatal    error
	space    chan struct{} // closed and replaced when pending drops below MaxPending
	idle     chan struct{} // closed and replaced when inFlight drops to zero
	wake     chan struct{} // buffered(1): the Run loop should look again
	sends    sync.WaitGroup
}

// New returns a Batcher. Run must be running for batches to be sent.
func New(cfg Config) (*Batcher, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	b := &Batcher{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "batcher"),
		m:       cfg.Metrics,
		cohorts: make(map[cohortKey]*cohort),
		space:   make(chan struct{}),
		idle:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
	}
	b.sendCtx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// Fits reports whether a request with header h and the single member uid
// fits within MaxBytes. A change that does not fit can never be sent: the
// caller must not Add it, and dead-letters its record instead (the consumer
// does, with the reason too_large).
func (b *Batcher) Fits(h wire.Header, uid string) bool {
	if wire.SingleBodyBound(h, uid) <= b.cfg.MaxBytes {
		return true // the common case, without quoting five strings per change
	}
	return wire.BodySize(wire.EnvelopeSize(h), 1, wire.MemberSize(uid)) <= b.cfg.MaxBytes
}

// Add adds changes in log order. It blocks while MaxPending member changes
// are pending (backpressure), and returns ctx.Err() if ctx ends first; the
// changes not added by then are not acknowledged.
//
// Every change must Fit. One that does not anyway (a caller's bug) is put
// in a batch of its own, never with others, so that no body with other
// members exceeds MaxBytes; the Sink refuses it (the HTTP sink rejects a
// member too large on its own without sending it).
func (b *Batcher) Add(ctx context.Context, changes []Change) error {
	now := time.Now()
	b.mu.Lock()
	for i := 0; i < len(changes); {
		if b.pending >= b.cfg.MaxPending {
			b.m.PendingMembers.Set(float64(b.pending)) // visible while we wait
			space := b.space
			b.mu.Unlock()
			select {
			case <-space:
			case <-ctx.Done():
				return ctx.Err()
			}
			b.mu.Lock()
			continue
		}
		b.add(changes[i], now)
		i++
	}
	b.m.PendingMembers.Set(float64(b.pending))
	b.mu.Unlock()
	return nil
}

// add places one change. Called with mu held.
func (b *Batcher) add(ch Change, now time.Time) {
	key := cohortKey{ch.Header.Partner, ch.Header.CohortID}
	c := b.cohorts[key]
	if c == nil {
		c = &cohort{key: key, heapIdx: -1}
		b.cohorts[key] = c
	}
	h := hashUID(ch.UID)
	ms := wire.MemberSize(ch.UID)
	var carried []Ack
	if old, i := c.find(ch.UID, h); old != nil {
		b.m.EventsCompacted.Inc()
		if old == c.open[actionIndex(ch.Header.Action)] && old.hdr == ch.Header {
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
		b.dropMember(c, old, ms)
	} else {
		b.pending++
	}
	bt := b.openBatch(c, ch.Header, ms, now)
	bt.m.carry(bt.m.add(ch.UID, h, ch.Ack), carried)
	bt.live++
	bt.memberBytes += ms
	if tr := b.whyFull(bt); tr != "" {
		b.seal(c, bt, tr, now)
	}
}

// whyFull returns why bt can take no more members, or "" if it can.
func (b *Batcher) whyFull(bt *batch) metrics.Trigger {
	switch {
	case b.cfg.MaxMembers > 0 && bt.live >= b.cfg.MaxMembers:
		return metrics.TriggerMembers
	case bt.remaining(b.cfg.MaxBytes) < minMember:
		return metrics.TriggerBytes
	case bt.m.full():
		return metrics.TriggerSlots
	}
	return ""
}

// openBatch returns the open batch of c that takes a member of size ms with
// header h, sealing a full one and starting a new one as needed.
func (b *Batcher) openBatch(c *cohort, h wire.Header, ms int, now time.Time) *batch {
	ai := actionIndex(h.Action)
	bt := c.open[ai]
	switch {
	case bt == nil:
	case bt.hdr != h:
		b.seal(c, bt, metrics.TriggerHeaderChange, now)
		bt = nil
	case wire.BodySize(bt.env, bt.live+1, bt.memberBytes+ms) > b.cfg.MaxBytes:
		b.seal(c, bt, metrics.TriggerBytes, now)
		bt = nil
	}
	if bt == nil {
		bt = &batch{hdr: h, env: wire.EnvelopeSize(h), createdAt: now, dueAt: now.Add(b.cfg.Window)}
		if b.flushAll {
			bt.dueAt = now
		}
		c.open[ai] = bt
		c.queue = append(c.queue, bt)
		b.updateDue(c, bt.dueAt)
	}
	return bt
}

// seal closes bt to new members and makes it due now; trigger is why.
func (b *Batcher) seal(c *cohort, bt *batch, trigger metrics.Trigger, now time.Time) {
	bt.trigger = trigger
	if now.Before(bt.dueAt) {
		bt.dueAt = now
	}
	if c.open[actionIndex(bt.hdr.Action)] == bt {
		c.open[actionIndex(bt.hdr.Action)] = nil
	}
	b.updateDue(c, bt.dueAt)
}

// dropMember accounts for a superseded member of size ms in bt and drops
// bt when no live member is left.
func (b *Batcher) dropMember(c *cohort, bt *batch, ms int) {
	bt.memberBytes -= ms
	bt.live--
	if bt.live > 0 {
		return
	}
	for i, q := range c.queue {
		if q == bt {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			break
		}
	}
	if c.open[actionIndex(bt.hdr.Action)] == bt {
		c.open[actionIndex(bt.hdr.Action)] = nil
	}
	b.recomputeDue(c)
}

// updateDue lowers c's due time to t if earlier and keeps the heap in order.
func (b *Batcher) updateDue(c *cohort, t time.Time) {
	if c.inFlight != nil {
		return
	}
	if c.heapIdx < 0 {
		c.dueAt = t
		heap.Push(&b.ready, c)
		b.signal()
		return
	}
	if t.Before(c.dueAt) {
		c.dueAt = t
		heap.Fix(&b.ready, c.heapIdx)
		b.signal()
	}
}

// recomputeDue sets c's due time from its queue and its place in the heap.
func (b *Batcher) recomputeDue(c *cohort) {
	if c.inFlight != nil || len(c.queue) == 0 {
		if c.heapIdx >= 0 {
			heap.Remove(&b.ready, c.heapIdx)
		}
		return
	}
	due := c.queue[0].dueAt
	for _, q := range c.queue[1:] {
		if q.dueAt.Before(due) {
			due = q.dueAt
		}
	}
	c.dueAt = due
	if c.heapIdx < 0 {
		heap.Push(&b.ready, c)
	} else {
		heap.Fix(&b.ready, c.heapIdx)
	}
	b.signal()
}

func (b *Batcher) forgetIfIdle(c *cohort) {
	if c.inFlight == nil && len(c.queue) == 0 {
		delete(b.cohorts, c.key)
	}
}

func (b *Batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Run dispatches due batches until ctx ends, then cancels the sends in
// progress, waits for them and returns ctx.Err(). It returns early with an
// error if a send failed for good (the sink gave up): the process cannot
// make progress without losing data and should restart.
func (b *Batcher) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		b.mu.Lock()
		if b.fatal != nil {
			err := b.fatal
			b.mu.Unlock()
			b.stopSends()
			return err
		}
		now := time.Now()
		for b.permit && b.inFlight < b.cfg.MaxInFlight {
			c := b.popDue(now)
			if c == nil {
				break
			}
			b.permit = false
			b.dispatch(c, now)
		}
		next := time.Duration(-1)
		if b.ready.Len() > 0 && b.inFlight < b.cfg.MaxInFlight {
			if d := b.ready[0].dueAt.Sub(now); d > 0 {
				next = d
			} else if !b.permit && !b.waiting {
				b.waiting = true
				go b.waitPermit(ctx)
			}
		}
		b.mu.Unlock()

		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if next >= 0 {
			timer.Reset(next)
		}
		select {
		case <-ctx.Done():
			b.stopSends()
			return ctx.Err()
		case <-b.wake:
		case <-timer.C:
		}
	}
}

func (b *Batcher) stopSends() {
	b.mu.Lock()
	b.cancel()
	b.mu.Unlock()
	b.sends.Wait()
}

// waitPermit takes one limiter permit and hands it to the Run loop.
func (b *Batcher) waitPermit(ctx context.Context) {
	var err error
	if b.cfg.Limiter != nil {
		start := time.Now()
		err = b.cfg.Limiter.Wait(ctx)
		b.m.RateLimitWait.Add(time.Since(start).Seconds())
	}
	b.mu.Lock()
	b.waiting = false
	if err == nil {
		b.permit = true
	}
	b.mu.Unlock()
	b.signal()
}

// popDue takes the cohort that has been due the longest, if any is due.
func (b *Batcher) popDue(now time.Time) *cohort {
	if b.ready.Len() == 0 || b.ready[0].dueAt.After(now) {
		return nil
	}
	return heap.Pop(&b.ready).(*cohort)
}

// dispatch starts sending the head batch of c. Called with mu held.
func (b *Batcher) dispatch(c *cohort, now time.Time) {
	bt := c.queue[0]
	c.queue[0] = nil
	c.queue = c.queue[1:]
	ai := actionIndex(bt.hdr.Action)
	if c.open[ai] == bt {
		c.open[ai] = nil
	}
	c.inFlight = bt
	trigger := bt.trigger // set when sealed
	switch {
	case trigger != "":
	case b.flushAll:
		trigger = metrics.TriggerShutdown
	case !bt.createdAt.Add(b.cfg.Window).After(now):
		trigger = metrics.TriggerWindow
	default:
		// The cohort is due because of a later batch, sealed, and its
		// batches are sent in order: this one goes first.
		trigger = metrics.TriggerAhead
	}
	req := wire.Request{Header: bt.hdr, UIDs: make([]string, 0, bt.live)}
	for i := range bt.m.slots {
		if bt.m.slots[i].ack != nil {
			req.UIDs = append(req.UIDs, bt.m.uid(int32(i)))
		}
	}
	bt.m.table = nil // no longer looked up
	b.inFlight++
	b.m.InFlight.Set(float64(b.inFlight))
	b.m.BatchesFlushed.WithLabelValues(string(bt.hdr.Action), string(trigger)).Inc()
	b.m.BatchMembers.Observe(float64(len(req.UIDs)))
	b.m.BatchBytes.Observe(float64(wire.BodySize(bt.env, bt.live, bt.memberBytes)))
	ctx := b.sendCtx
	b.sends.Add(1)
	go b.send(ctx, c, bt, req)
}

// send runs one batch through the sink and settles it.
func (b *Batcher) send(ctx context.Context, c *cohort, bt *batch, req wire.Request) {
	defer b.sends.Done()
	rejections, err := b.cfg.Sink.Send(ctx, req)
	if err == nil && len(rejections) > 0 {
		err = b.deadLetterRejections(ctx, bt, rejections)
	}
	if err != nil && ctx.Err() == nil {
		b.log.Error("batch abandoned: the sink gave up; restarting is needed to deliver it",
			"err", err, "cohort_id", req.CohortID, "action", req.Action, "members", len(req.UIDs))
	}
	if err == nil {
		// An in-flight batch is owned by this goroutine alone: its acks are
		// released without the lock.
		var rejected map[string]bool
		if len(rejections) > 0 {
			rejected = make(map[string]bool, len(rejections))
			for _, r := range rejections {
				rejected[r.UID] = true
			}
		}
		for i := range bt.m.slots {
			s := &bt.m.slots[i]
			if s.ack == nil || rejected[bt.m.uid(int32(i))] {
				continue
			}
			s.ack.Done()
			for _, a := range bt.m.more[int32(i)] {
				a.Done()
			}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil && ctx.Err() == nil && b.fatal == nil {
		b.fatal = fmt.Errorf("batcher: send cohort %s: %w", req.CohortID, err)
		b.signal()
	}
	bt.m = members{}
	b.settle(c, bt.live)
}

// settle ends c's in-flight batch of n members. Called with mu held.
func (b *Batcher) settle(c *cohort, n int) {
	c.inFlight = nil
	b.inFlight--
	b.m.InFlight.Set(float64(b.inFlight))
	b.release(n)
	if b.inFlight == 0 {
		close(b.idle)
		b.idle = make(chan struct{})
	}
	b.recomputeDue(c)
	b.forgetIfIdle(c)
	b.signal() // a slot is free
}

// release lowers the pending count by n and wakes blocked Adds.
func (b *Batcher) release(n int) {
	wasFull := b.pending >= b.cfg.MaxPending
	b.pending -= n
	b.m.PendingMembers.Set(float64(b.pending))
	if wasFull && b.pending < b.cfg.MaxPending {
		close(b.space)
		b.space = make(chan struct{})
	}
}

func (b *Batcher) deadLetterRejections(ctx context.Context, bt *batch, rejections []wire.Rejection) error {
	byUID := make(map[string]int32, bt.live)
	for i := range bt.m.slots {
		if bt.m.slots[i].ack != nil {
			byUID[bt.m.uid(int32(i))] = int32(i)
		}
	}
	out := make([]Rejected, 0, len(rejections))
	for _, r := range rejections {
		i, ok := byUID[r.UID]
		if !ok {
			continue // the sink named a member we did not send: nothing to settle
		}
		acks := append([]Ack{bt.m.slots[i].ack}, bt.m.more[i]...)
		out = append(out, Rejected{Header: bt.hdr, UID: r.UID, Reason: r.Reason, Acks: acks})
	}
	return b.cfg.DeadLetter(ctx, out)
}

// Revoke drops every pending change (the new owner of the partitions will
// read them again from the last commit), stops the retries of in-flight
// batches and waits until the attempts under way have finished. Nothing
// dropped or abandoned is acknowledged. It returns ctx.Err() if ctx ends
// before the in-flight attempts finish.
func (b *Batcher) Revoke(ctx context.Context) error {
	b.mu.Lock()
	dropped := 0
	for _, c := range b.cohorts {
		for _, bt := range c.queue {
			dropped += bt.live
		}
		c.queue, c.open = nil, [2]*batch{}
		if c.heapIdx >= 0 {
			heap.Remove(&b.ready, c.heapIdx)
		}
		b.forgetIfIdle(c)
	}
	b.release(dropped)
	b.cancel()
	b.sendCtx, b.cancel = context.WithCancel(context.Background())
	b.flushAll = false
	b.permit = false // a permit taken under the old share must not bypass the new one
	idle := b.idle
	busy := b.inFlight > 0
	b.mu.Unlock()
	if dropped > 0 {
		b.log.Info("revoked: dropped pending changes", "members", dropped)
	}
	if !busy {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flush makes every batch due now, and every batch created later too, and
// waits until nothing is pending or in flight (shutdown drain). It returns
// ctx.Err() if ctx ends first.
func (b *Batcher) Flush(ctx context.Context) error {
	b.mu.Lock()
	b.flushAll = true
	now := time.Now()
	for _, c := range b.cohorts {
		for _, bt := range c.queue {
			bt.dueAt = now
		}
		if c.inFlight == nil && len(c.queue) > 0 {
			b.recomputeDue(c)
		}
	}
	b.mu.Unlock()
	for {
		b.mu.Lock()
		done := b.pending == 0 && b.inFlight == 0
		idle, space := b.idle, b.space
		b.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-idle:
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Pending returns the number of member changes read but not yet settled.
func (b *Batcher) Pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pending
}

// InFlight returns the number of batches being sent.
func (b *Batcher) InFlight() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inFlight
}

type cohortKey struct{ partner, cohortID string }

// cohort is the state of one (partner, cohort_id).
type cohort struct {
	key      cohortKey
	queue    []*batch  // pending batches, in creation order; sent head first
	open     [2]*batch // the batch taking new members, per action
	inFlight *batch
	dueAt    time.Time // earliest due time in queue
	heapIdx  int       // index in Batcher.ready, -1 when absent
}

type batch struct {
	hdr         wire.Header
	env         int
	m           members
	live        int
	memberBytes int
	trigger     metrics.Trigger // why it was sealed; "" while open
	createdAt   time.Time
	dueAt       time.Time
}

func (bt *batch) remaining(max int) int {
	return max - wire.BodySize(bt.env, bt.live, bt.memberBytes) - 1
}

// find returns the pending (not in-flight) batch holding a live change for
// uid, and its slot. h is hashUID(uid). A uid has at most one live change
// in the pending batches of a cohort.
func (c *cohort) find(uid string, h uint64) (*batch, int32) {
	for _, bt := range c.queue {
		if i := bt.m.find(uid, h); i >= 0 {
			return bt, i
		}
	}
	return nil, -1
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
