package ratelimit

import (
	"context"
	"math"
	"sync"
	"time"
)

// maxSpacing bounds the spacing of a tiny rate so that it stays a valid
// time.Duration (about 146 years: in practice "never").
const maxSpacing = time.Duration(math.MaxInt64 / 2)

// Limiter hands out request permits evenly spaced at 60s/rpm: no two permits
// are ever granted closer together than that spacing, so no 60-second window
// holds more than rpm of them (for a whole rpm; a fractional rpm is a long-run
// average, and a window may then hold ceil(rpm)). The spacing is rounded up
// to the nanosecond, never down. rpm <= 0 (or NaN, or +Inf) means unlimited.
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
	rpm     float64
	spacing time.Duration // 0: unlimited
	last    time.Time     // when the last permit was granted; zero: none yet
	pause   time.Time     // no permit before this
	waiters map[chan struct{}]struct{}
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

// SetRPM changes the rate. The caller recomputes it at every rebalance. It
// takes effect for the next permit, which comes no sooner than the new spacing
// after the previous permit; waiters already asleep wake up and re-check, so a
// faster rate is not held back by a slow one's timer.
func (l *Limiter) SetRPM(rpm float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rpm = rpm
	l.spacing = Spacing(rpm)
	for ch := range l.waiters {
		close(ch)
		delete(l.waiters, ch)
	}
}

// RPM returns the current rate (<= 0: unlimited).
func (l *Limiter) RPM() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rpm
}

// PauseUntil grants no permit before t. Called after a 429, it stops the whole
// replica (every user of the Limiter), not just the request that got it. It
// extends an existing pause and never shortens one.
func (l *Limiter) PauseUntil(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.After(l.pause) {
		l.pause = t
	}
}

// Wait blocks until a permit is granted and returns nil, or returns ctx.Err()
// when ctx ends first (also when it has already ended); a Wait that returns
// an error consumes nothing. Waiters are not served in FIFO order.
func (l *Limiter) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
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
		at := l.pause
		if l.spacing > 0 && !l.last.IsZero() {
			if next := l.last.Add(l.spacing); next.After(at) {
				at = next
			}
		}
		if !at.After(now) {
			l.last = now
			l.mu.Unlock()
			return nil
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
			return ctx.Err()
		}
	}
}
