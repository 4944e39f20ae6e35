// Package lease holds a replica's proof that it is still a member of its
// consumer-group generation (DESIGN.md invariant 4, "a paused replica is
// fenced too").
//
// # Why a lease
//
// A replica that stops running for longer than the group's session timeout
// (SIGSTOP, a VM pause, a long stall) is expelled by the group coordinator,
// and the partitions it held are given to another replica, which reads them
// again from the last commit and sends newer changes. When the paused
// replica resumes, its timers fire at once: without a lease it would send
// the batches it held before its own heartbeat tells it that it was fenced,
// and an old "add" could land after the new owner's "remove".
//
// # The argument
//
// The consumer sends its own Heartbeat request for the generation, noting
// the monotonic time t0 just before sending it. A successful answer means
// the coordinator received the heartbeat at some instant at or after t0 and
// restarted the member's session timer then, so it cannot expel the member
// before t0 + session timeout; and a rebalance that started after that
// instant cannot hand the partitions on before the member rejoins (it then
// fences itself: the generation ends, and the consumer waits for in-flight
// requests before rejoining) or is expelled (rebalance timeout ≥ session
// timeout is enforced by the configuration). The lease therefore lasts until
// t0 + session timeout − heartbeat interval − margin: the subtracted part
// covers clock-rate differences between the hosts and the transit of a
// request to the API. Every attempt to send waits for a valid lease, and no
// request byte is written once it has expired.
//
// Monotonic time keeps running while a process is stopped, so a replica
// that resumes after a pause finds its lease expired and sends nothing until
// a new heartbeat proves it still a member (then it goes on) or shows that it
// was fenced (then the generation ends and everything pending is dropped, as
// at a rebalance).
//
// What this cannot cover: a stop that falls between the final check and the
// system call that writes the request (a window of microseconds), and a
// suspend of the whole host that stops its monotonic clock too.
package lease

import (
	"context"
	"sync"
	"time"
)

// Term identifies one generation's tenure of the lease. A renewal for a term
// that is no longer current (a heartbeat answered after its generation
// ended) is ignored.
type Term uint64

// Lease is a proof of membership with an expiry. The zero value is not
// usable; call New. Safe for concurrent use.
type Lease struct {
	mu      sync.Mutex // guards the fields below
	term    Term
	active  bool          // the term has not ended
	expiry  time.Time     // with a monotonic reading; zero = no proof yet
	changed chan struct{} // closed and replaced whenever expiry or term changes
}

// New returns a Lease with no term: Wait blocks until Begin and Renew.
func New() *Lease {
	return &Lease{changed: make(chan struct{})}
}

// Begin starts a new term (a new generation) with no proof yet, ending the
// previous one, and returns it.
func (l *Lease) Begin() Term {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.term++
	l.active = true
	l.expiry = time.Time{}
	l.notify()
	return l.term
}

// Renew extends term's lease to until (never shortens it). It reports
// whether term is still current; a renewal for an ended term does nothing.
func (l *Lease) Renew(term Term, until time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if term != l.term || !l.active {
		return false
	}
	if until.After(l.expiry) {
		l.expiry = until
		l.notify()
	}
	return true
}

// End ends term's lease at once, if term is current: nothing may be sent
// until the next Begin and Renew.
func (l *Lease) End(term Term) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if term != l.term || !l.active {
		return
	}
	l.active = false
	l.expiry = time.Time{}
	l.notify()
}

// Deadline returns the current expiry and whether the lease is valid now.
func (l *Lease) Deadline() (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expiry, l.active && time.Now().Before(l.expiry)
}

// Valid reports whether the lease is valid now.
func (l *Lease) Valid() bool {
	_, ok := l.Deadline()
	return ok
}

// Wait blocks until the lease is valid and returns its expiry, or returns
// ctx.Err() if ctx ends first. A lease that expires without being renewed
// stays expired until a renewal: Wait then blocks.
func (l *Lease) Wait(ctx context.Context) (time.Time, error) {
	for {
		l.mu.Lock()
		expiry, ch := l.expiry, l.changed
		valid := l.active && time.Now().Before(expiry)
		l.mu.Unlock()
		if valid {
			return expiry, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// notify wakes the waiters. Called with mu held.
func (l *Lease) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}
