package sink

import (
	"context"
	"sync"
	"time"
)

// Limiter hands out request permits evenly spaced at 60s/rpm: no two
// permits are closer than that, so no 60-second window holds more than rpm
// of them. rpm <= 0 means unlimited. A 429 pauses it (PauseUntil). It is
// safe for concurrent use and runs no goroutine of its own.
type Limiter struct {
	mu       sync.Mutex
	rpm      float64
	interval time.Duration
	next     time.Time // earliest time of the next permit
	pause    time.Time // no permit before this
}

// NewLimiter returns a Limiter for rpm requests per minute.
func NewLimiter(rpm float64) *Limiter {
	l := &Limiter{}
	l.SetRPM(rpm)
	return l
}

// SetRPM changes the rate; it applies from the next permit on.
func (l *Limiter) SetRPM(rpm float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rpm = rpm
	if rpm <= 0 {
		l.interval = 0
		return
	}
	l.interval = time.Duration(float64(time.Minute) / rpm)
}

// RPM returns the current rate (<= 0: unlimited).
func (l *Limiter) RPM() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rpm
}

// PauseUntil grants no permit before t. It extends, never shortens, a pause.
func (l *Limiter) PauseUntil(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.After(l.pause) {
		l.pause = t
	}
}

// Wait blocks until a permit is granted, or returns ctx.Err() (consuming
// nothing) when ctx ends first.
func (l *Limiter) Wait(ctx context.Context) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		l.mu.Lock()
		now := time.Now()
		at := l.pause
		if l.interval > 0 && l.next.After(at) {
			at = l.next
		}
		if !at.After(now) {
			if l.interval > 0 {
				l.next = now.Add(l.interval)
			}
			l.mu.Unlock()
			return nil
		}
		d := at.Sub(now)
		l.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
