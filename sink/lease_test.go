package sink_test

// The lease (DESIGN.md invariant 4): every attempt waits for a valid proof
// of membership, runs only until it expires, and, with the default HTTP
// client, is refused at the socket once it has expired.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/sink"
)

// fakeLease is a sink.Lease whose Wait blocks until open is closed (nil:
// never blocks) and returns next(call), the call numbered from 0.
type fakeLease struct {
	open  chan struct{}
	next  func(call int) time.Time
	calls atomic.Int64
	// renewed, when set, is what Deadline returns (a lease renewed in the
	// background); otherwise Deadline returns the last deadline Wait gave.
	renewed func() time.Time
	last    atomic.Int64 // unix nanoseconds
}

func (l *fakeLease) Wait(ctx context.Context) (time.Time, error) {
	n := int(l.calls.Add(1)) - 1
	if l.open != nil {
		select {
		case <-l.open:
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
	d := l.next(n)
	l.last.Store(d.UnixNano())
	return d, nil
}

func (l *fakeLease) Deadline() (time.Time, bool) {
	d := time.Unix(0, l.last.Load())
	if l.renewed != nil {
		d = l.renewed()
	}
	return d, time.Now().Before(d)
}

// TestLeaseWaitGatesEveryAttempt: no request reaches the API before the
// lease is granted, and every attempt (the first, a retry, each part of a
// split) waits for it, before its permit.
func TestLeaseWaitGatesEveryAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lease := &fakeLease{open: make(chan struct{}), next: func(int) time.Time { return time.Now().Add(time.Minute) }}
		e := newEnv(t, "mem", func(n int, c call) reply {
			switch n {
			case 0:
				return reply{status: 503}
			case 1:
				return reply{status: 413}
			}
			return ok()
		}, func(c *sink.Config) { c.Lease = lease })
		res := e.goSend(t.Context(), request(4))
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := len(e.api.got()); n != 0 {
			t.Fatalf("%d requests before the lease was granted, want 0", n)
		}
		if lease.calls.Load() != 1 {
			t.Fatalf("%d calls to Lease.Wait, want 1 (blocked)", lease.calls.Load())
		}
		close(lease.open)
		r := <-res
		if r.err != nil || len(r.rej) != 0 {
			t.Fatalf("Send = %v, %v", r.rej, r.err)
		}
		if n, w := len(e.api.got()), lease.calls.Load(); n != 4 || w != 4 {
			t.Fatalf("%d requests, %d calls to Lease.Wait; want 4 and 4 (503, 413, two halves)", n, w)
		}
	})
}

// TestLeaseWaitCancelled: a Send blocked in Lease.Wait returns when its ctx
// ends, with the ctx error, having sent nothing.
func TestLeaseWaitCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lease := &fakeLease{open: make(chan struct{}), next: func(int) time.Time { return time.Time{} }}
		e := newEnv(t, "mem", nil, func(c *sink.Config) { c.Lease = lease })
		ctx, cancel := context.WithCancel(t.Context())
		res := e.goSend(ctx, request(2))
		synctest.Wait()
		cancel()
		r := <-res
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("Send err = %v, want context.Canceled", r.err)
		}
		if n := len(e.api.got()); n != 0 {
			t.Fatalf("%d requests, want 0", n)
		}
	})
}

// TestLeaseAlreadyExpiredWaitsAgain: a deadline already past when the
// attempt would start is no proof: Wait is called again, and the request
// goes out only under the fresh lease.
func TestLeaseAlreadyExpiredWaitsAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lease := &fakeLease{next: func(n int) time.Time {
			if n < 2 {
				return time.Now().Add(-time.Second)
			}
			return time.Now().Add(time.Minute)
		}}
		e := newEnv(t, "mem", nil, func(c *sink.Config) { c.Lease = lease })
		if rej, err := e.client.Send(t.Context(), request(2)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v", rej, err)
		}
		if n, w := len(e.api.got()), lease.calls.Load(); n != 1 || w != 3 {
			t.Fatalf("%d requests, %d calls to Lease.Wait; want 1 and 3", n, w)
		}
	})
}

// TestLeaseExpiredAtWrite: with the default HTTP client, a lease that
// expires between the start of the attempt and the first write of the
// request (a paused process, played by the fence's clock jumping ahead) is
// caught at the socket: the API sees no request, and the attempt is retried
// (reason lease) under a new lease.
func TestLeaseExpiredAtWrite(t *testing.T) {
	t.Parallel()
	lease := &fakeLease{next: func(int) time.Time { return time.Now().Add(time.Hour) }}
	e := newEnv(t, "http", nil, func(c *sink.Config) { c.Lease = lease })
	var (
		mu    sync.Mutex
		reads int
	)
	// The fence reads the clock once before the request is handed to the
	// HTTP client, then before each write to the socket. Read 2 is the
	// first attempt's first write: the process "was paused" two hours.
	sink.SetFenceClock(e.client, func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		reads++
		if reads == 2 {
			return time.Now().Add(2 * time.Hour)
		}
		return time.Now()
	})
	req := request(3)
	rej, err := e.client.Send(e.ctx(), req)
	if err != nil || len(rej) != 0 {
		t.Fatalf("Send = %v, %v", rej, err)
	}
	calls := e.api.got()
	if len(calls) != 1 {
		t.Fatalf("the API saw %d requests, want 1 (the refused write sent nothing)", len(calls))
	}
	checkBodies(t, calls, req)
	if got := e.retries("lease"); got != 1 {
		t.Fatalf("retries_total{reason=lease} = %v, want 1 (all: %v)", got, e.allRetries())
	}
	if w := lease.calls.Load(); w != 2 {
		t.Fatalf("%d calls to Lease.Wait, want 2", w)
	}
}

// TestLeaseExpiredBeforeHandOff: a lease found expired just before the
// request is handed to the HTTP client (any client, the in-memory one
// here) sends nothing either.
func TestLeaseExpiredBeforeHandOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lease := &fakeLease{next: func(int) time.Time { return time.Now().Add(time.Hour) }}
		e := newEnv(t, "mem", nil, func(c *sink.Config) { c.Lease = lease })
		first := true
		sink.SetFenceClock(e.client, func() time.Time {
			if first {
				first = false
				return time.Now().Add(2 * time.Hour)
			}
			return time.Now()
		})
		if rej, err := e.client.Send(t.Context(), request(2)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v", rej, err)
		}
		if n := len(e.api.got()); n != 1 || e.retries("lease") != 1 {
			t.Fatalf("%d requests, retries{lease} %v; want 1 and 1", n, e.retries("lease"))
		}
	})
}

// TestAttemptEndsAtLeaseDeadline: an attempt whose lease lapses while it
// runs (not renewed by its deadline) ends then: the API sees the client give
// up, and the next attempt runs under the next lease.
func TestAttemptEndsAtLeaseDeadline(t *testing.T) {
	modes(t, func(t *testing.T, mode string) {
		const leaseFor = 300 * time.Millisecond
		var deadlines sync.Map // call → deadline returned
		lease := &fakeLease{next: func(n int) time.Time {
			d := time.Now().Add(leaseFor)
			if n > 0 {
				d = time.Now().Add(time.Hour)
			}
			deadlines.Store(n, d)
			return d
		}}
		gone := make(chan time.Time, 1)
		e := newEnv(t, mode, func(n int, _ call) reply {
			if n == 0 {
				return reply{hold: make(chan struct{})} // answers only when the client goes away
			}
			return ok()
		}, func(c *sink.Config) {
			c.Lease = lease
			c.AttemptTimeout = time.Minute
		})
		go func() {
			<-e.api.finished // request 0, abandoned by the client
			gone <- time.Now()
		}()
		if rej, err := e.client.Send(e.ctx(), request(2)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v", rej, err)
		}
		calls := e.api.got()
		if len(calls) != 2 || calls[0].answered {
			t.Fatalf("%d requests (first answered %v), want 2, the first abandoned", len(calls), calls[0].answered)
		}
		v, _ := deadlines.Load(0)
		deadline := v.(time.Time)
		at := <-gone
		slack := time.Duration(0)
		if mode == "http" {
			slack = 2 * time.Second
		}
		if at.Before(deadline) || at.After(deadline.Add(slack)) {
			t.Fatalf("the client gave up %v after the lease deadline, want [0, %v]", at.Sub(deadline), slack)
		}
		if got := e.retries("lease"); got != 1 {
			t.Fatalf("retries_total{reason=lease} = %v, want 1", got)
		}
	})
}

// TestAttemptOutlivesARenewedLease: a slow answer is waited for past the
// deadline the attempt started with, as long as the lease is renewed (a
// healthy replica): it is accepted, with no retry.
func TestAttemptOutlivesARenewedLease(t *testing.T) {
	modes(t, func(t *testing.T, mode string) {
		const leaseFor = 200 * time.Millisecond
		lease := &fakeLease{
			next:    func(int) time.Time { return time.Now().Add(leaseFor) },
			renewed: func() time.Time { return time.Now().Add(leaseFor) },
		}
		e := newEnv(t, mode, func(n int, _ call) reply {
			return reply{status: 200, sleep: 5 * leaseFor}
		}, func(c *sink.Config) {
			c.Lease = lease
			c.AttemptTimeout = time.Minute
		})
		if rej, err := e.client.Send(e.ctx(), request(2)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v", rej, err)
		}
		if calls := e.api.got(); len(calls) != 1 {
			t.Fatalf("%d requests, want 1: the attempt was abandoned while the lease was renewed", len(calls))
		}
		if got := e.retries("timeout"); got != 0 {
			t.Fatalf("retries_total{reason=timeout} = %v, want 0", got)
		}
	})
}
