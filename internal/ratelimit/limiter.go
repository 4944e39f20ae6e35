package ratelimit

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"
)

// maxSpacing bounds the spacing of a tiny rate so that it stays a valid
// time.Duration (about 146 years: in practice "never").
const maxSpacing = time.Duration(math.MaxInt64 / 2)

// Limiter hands out request permits at a rate of rpm per minute, like a
// token bucket that holds at most one token: a permit is due one spacing
// (60s/rpm, rounded up to the nanosecond) after the previous one, so at a
// constant rate no two permits are closer than the spacing and no 60-second
// window holds more than rpm of them (for a whole rpm; a fractional rpm may
// give ceil(rpm)). rpm <= 0 (or NaN, or +Inf) means unlimited.
//
// The rate may change (SetRPM, and grants lent by other replicas, Lend,
// which end on their own at their expiry). A change accrues like a token:
// the part of the interval already elapsed counts at the old rate, the rest
// at the new one. So over any span of time the permits are at most one
// more than the integral of the rate over it, whatever the changes: the
// bound the fleet's budget rests on (see fleet.go).
//
// A 429 pauses it (PauseUntil): no permit at all is granted before the pause
// ends, whatever the rate, and unlimited limiters pause too.
//
// The first permit, and the first one after a long idle time, is granted at
// once: there is no burst budget, only spacing.
//
// A Limiter is safe for concurrent use. It starts no goroutine: waiters sleep
// on their own timers (time.Now, time.NewTimer), so it works inside
// testing/synctest bubbles when it is created and used inside the bubble. Its
// zero value is an unlimited Limiter.
type Limiter struct {
	mu      sync.Mutex
	rpm     float64   // the rate of its own (SetRPM)
	grants  []Grant   // lent rates, each until its expiry; kept in order of Until
	next    time.Time // when the next permit is due at the current rate; zero: at once
	pause   time.Time // no permit before this: the API's window is spent (PauseUntil)
	hold    time.Time // no permit before this: another replica's pause, read from the board (HoldUntil)
	start   time.Time // no permit before this: a new share's late start (Rebalance); not a pause
	waiters map[chan struct{}]struct{}
	paused  chan struct{} // cap 1: signalled when PauseUntil extends the pause
	granted uint64        // permits granted so far
	blocked bool          // a Wait had to sleep since the last Demand
}

// Grant is a rate lent to this replica by another one, until a time.
type Grant struct {
	RPM   float64
	Until time.Time
}

// NewLimiter returns a Limiter for rpm requests per minute (rpm <= 0:
// unlimited).
func NewLimiter(rpm float64) *Limiter {
	l := &Limiter{}
	l.SetRPM(rpm)
	return l
}

// Spacing returns the smallest gap between two permits for rpm: 60s/rpm
// rounded up to the nanosecond, or 0 (unlimited) when rpm <= 0, NaN or +Inf.
func Spacing(rpm float64) time.Duration {
	if !(rpm > 0) || math.IsInf(rpm, 1) { // !(rpm > 0) is also true for NaN
		return 0
	}
	ns := math.Ceil(float64(time.Minute) / rpm)
	if ns >= float64(maxSpacing) {
		return maxSpacing
	}
	return time.Duration(ns)
}

// SetRPM changes the rate of its own. The elapsed part of the current
// interval keeps the old rate (token accrual, see Limiter); waiters already
// asleep wake up and re-check, so a faster rate is not held back by a slow
// one's timer.
func (l *Limiter) SetRPM(rpm float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.change(func() { l.rpm = rpm })
}

// Lend replaces the rates lent to this limiter: each adds its RPM until its
// Until, and ends on its own then, even if nobody calls Lend again (a
// replica paused past a grant's end does not use it when it resumes).
// Lent rates count only while the limiter's own rate is limited.
func (l *Limiter) Lend(grants []Grant) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.change(func() {
		l.grants = append(l.grants[:0], grants...)
		slices.SortFunc(l.grants, func(a, b Grant) int { return a.Until.Compare(b.Until) })
	})
}

// change applies set to the rates at now, rescaling the interval under way,
// and wakes the waiters. Called with mu held.
func (l *Limiter) change(set func()) {
	now := time.Now()
	l.expire(now)
	old := Spacing(l.rateAt(now))
	set()
	l.expire(now)
	if l.next.After(now) {
		l.next = rescale(now, l.next, old, Spacing(l.rateAt(now)))
	}
	for ch := range l.waiters {
		close(ch)
		delete(l.waiters, ch)
	}
}

// rateAt is the rate in force at t: its own plus every grant not yet ended.
// Called with mu held.
func (l *Limiter) rateAt(t time.Time) float64 {
	if !(l.rpm > 0) || math.IsInf(l.rpm, 1) {
		return l.rpm // unlimited
	}
	r := l.rpm
	for _, g := range l.grants {
		if t.Before(g.Until) && g.RPM > 0 {
			r += g.RPM
		}
	}
	return r
}

// expire drops the grants ended by now, rescaling the interval under way
// at each end. Called with mu held.
func (l *Limiter) expire(now time.Time) {
	for len(l.grants) > 0 && !l.grants[0].Until.After(now) {
		end := l.grants[0].Until
		old := Spacing(l.rateAt(end.Add(-1)))
		l.grants = l.grants[1:]
		if l.next.After(end) {
			l.next = rescale(end, l.next, old, Spacing(l.rateAt(end)))
		}
	}
}

// dueAt returns when the next permit is due, counting the grants that end
// before it. Called with mu held, after expire(now).
func (l *Limiter) dueAt() time.Time {
	due := l.next
	for _, g := range l.grants {
		if !g.Until.Before(due) {
			break
		}
		due = rescale(g.Until, due, Spacing(l.rateAt(g.Until.Add(-1))), Spacing(l.rateAt(g.Until)))
	}
	if l.pause.After(due) {
		due = l.pause
	}
	if l.hold.After(due) {
		due = l.hold
	}
	if l.start.After(due) {
		due = l.start
	}
	return due
}

// rescale moves a permit due at due, counted at spacing old, to the new
// spacing from time c on: the part of the interval left after c is stretched
// or shrunk by new/old. An unlimited new rate makes it due at c.
func rescale(c, due time.Time, old, new time.Duration) time.Time {
	if !due.After(c) {
		return due
	}
	if new == 0 || old == 0 {
		return c
	}
	left := float64(due.Sub(c)) * float64(new) / float64(old)
	if left >= float64(maxSpacing) {
		return c.Add(maxSpacing)
	}
	return c.Add(time.Duration(math.Ceil(left)))
}

// RPM returns the rate of its own (<= 0: unlimited).
func (l *Limiter) RPM() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rpm
}

// Rate returns the rate in force now, lent rates included.
func (l *Limiter) Rate() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rateAt(time.Now())
}

// PauseUntil grants no permit before t. Called after a 429, it stops the whole
// replica (every user of the Limiter), not just the request that got it. It
// extends an existing pause and never shortens one.
func (l *Limiter) PauseUntil(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.After(l.pause) {
		l.pause = t
		if l.paused != nil {
			select {
			case l.paused <- struct{}{}:
			default:
			}
		}
	}
}

// Drain forgets what accrued of the current interval: the next permit is
// due one whole interval (at the rate now in force) from now, or later. A
// replica that lends its whole rate drains its Limiter, so that it holds
// no permit it could give at once (see fleet.go).
func (l *Limiter) Drain() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.expire(now)
	if next := now.Add(Spacing(l.rateAt(now))); next.After(l.next) {
		l.next = next
	}
}

// HoldUntil grants no permit before t, like PauseUntil, for a pause another
// replica published: it extends an existing hold and never shortens one,
// but it is neither reported by Paused nor signalled, so that a replica
// republishes only the pauses the API gave it, and a pause read from the
// board never wakes the loop that reads the board.
func (l *Limiter) HoldUntil(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.After(l.hold) {
		l.hold = t // a waiter asleep re-checks when its timer fires
	}
}

// Paused returns when the current pause (PauseUntil: the API's, not a
// HoldUntil) ends (zero or past: none), and a channel signalled whenever
// PauseUntil extends it.
func (l *Limiter) Paused() (time.Time, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.paused == nil {
		l.paused = make(chan struct{}, 1)
	}
	return l.pause, l.paused
}

// Demand returns the permits granted so far and whether a Wait had to
// sleep since the last call or is asleep now (the replica wants more than
// its rate). A waiter asleep across several calls counts at each of them:
// a replica whose permits are further apart than the calls is still
// starved between them.
func (l *Limiter) Demand() (granted uint64, blocked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	asleep := len(l.waiters) > 0 // it will have slept since this call, too
	blocked, l.blocked = l.blocked || asleep, asleep
	return l.granted, blocked
}

// Wait blocks until a permit is granted and returns nil, or returns ctx.Err()
// when ctx ends first (also when it has already ended); a Wait that returns
// an error consumes nothing. Waiters are not served in FIFO order.
func (l *Limiter) Wait(ctx context.Context) error {
	_, err := l.wait(ctx, -1)
	return err
}

// WaitWithin is Wait for a caller that would rather not wait long: it
// returns false at once, consuming nothing, when the next permit is not due
// within d (by the rates in force; a later change may push a permit it
// waits for past d, and it then gives up too). The sink uses it for a
// request that holds an HTTP slot: it may wait a little with the slot, not
// a whole spacing.
func (l *Limiter) WaitWithin(ctx context.Context, d time.Duration) (bool, error) {
	return l.wait(ctx, d)
}

// wait is Wait, bounded by within when within >= 0 (WaitWithin).
func (l *Limiter) wait(ctx context.Context, within time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var deadline time.Time
	if within >= 0 {
		deadline = time.Now().Add(within)
	}
	var (
		timer *time.Timer
		wake  chan struct{}
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if wake != nil {
			l.mu.Lock()
			delete(l.waiters, wake)
			l.mu.Unlock()
		}
	}()
	for {
		l.mu.Lock()
		now := time.Now()
		l.expire(now)
		at := l.dueAt()
		if !at.After(now) {
			l.next = now.Add(Spacing(l.rateAt(now)))
			l.granted++
			l.mu.Unlock()
			return true, nil
		}
		l.blocked = true // a refusal by WaitWithin counts as demand too: its caller waits next
		if !deadline.IsZero() && at.After(deadline) {
			l.mu.Unlock()
			return false, nil
		}
		// Register for a SetRPM wake-up. The channel is made here, by the
		// waiter, so that it belongs to the waiter's synctest bubble. One
		// that is no longer registered was closed by SetRPM (even if the
		// timer woke us first): it must not be registered again.
		if l.waiters == nil {
			l.waiters = make(map[chan struct{}]struct{})
		}
		if _, registered := l.waiters[wake]; wake == nil || !registered {
			wake = make(chan struct{})
			l.waiters[wake] = struct{}{}
		}
		l.mu.Unlock()

		d := at.Sub(now)
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-timer.C:
		case <-wake: // closed and unregistered by SetRPM: re-check
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}
