package sink

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http/httptrace"
	"sync/atomic"
	"time"
)

// permitMaxAge is how old a permit may be when the first byte of its
// request is written: half of ratelimit.ArrivalSlack (1 s), the spread of
// permit-to-arrival delays that the shares allow for, so that the rest of
// the slack covers the network (TestPermitMaxAgeIsHalfTheArrivalSlack pins
// it). An older permit (a slow dial or TLS handshake, a lease that had to
// be waited for again) is taken anew.
const permitMaxAge = 500 * time.Millisecond

// freshen takes a new permit when the one taken at *at is older than
// permitMaxAge, and moves *at to it.
func (c *Client) freshen(ctx context.Context, lim Limiter, at *time.Time) error {
	if lim == nil || time.Since(*at) <= permitMaxAge {
		return nil
	}
	start := time.Now()
	err := lim.Wait(ctx)
	c.m.RateLimitWait.Add(time.Since(start).Seconds())
	if err == nil {
		*at = time.Now()
	}
	return err
}

// attemptState is one attempt as its connection sees it (default HTTP
// client): GotConn hands it to the fencedConn that will carry the request,
// whose first write then freshens the permit (after the dial and the TLS
// handshake) and notes that the request may have reached the API.
type attemptState struct {
	c        *Client
	ctx      context.Context // the attempt's: ends at AttemptTimeout or a lease lapse
	permitAt time.Time       // set before Do; then used by the writing goroutine only
	lim      Limiter         // the Limiter of the request's workspace (nil: none)
	armed    atomic.Bool     // a fencedConn carries the request
	sent     atomic.Bool     // a write of the request passed the fence: it may reach the API
	done     atomic.Bool     // the attempt returned: a gate left on a connection does nothing
}

// trace returns ctx with the ClientTrace that arms the connection.
func (st *attemptState) trace(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: st.gotConn})
}

func (st *attemptState) gotConn(info httptrace.GotConnInfo) {
	conn := info.Conn
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	if fc, ok := conn.(*fencedConn); ok {
		st.armed.Store(true)
		fc.gate.Store(st)
	}
}

// beforeWrite runs before the first write of the request reaches the
// socket: it freshens the permit. An error refuses the write (nothing of
// the request is sent).
func (st *attemptState) beforeWrite() error {
	if st.done.Load() {
		return nil
	}
	return st.c.freshen(st.ctx, st.lim, &st.permitAt)
}

// mayHaveSent reports whether the request may have reached the API: a write
// passed the fence, or, without a fencedConn to tell (a caller's HTTP
// client), the request was handed to the client at all.
func (st *attemptState) mayHaveSent() bool { return st.sent.Load() || !st.armed.Load() }

// unknownOutcome wraps the failure of an attempt whose request may have
// reached the API although no answer came (an attempt timeout, a lease
// lapse, a connection lost after the write): the API may still process it
// until sentAt + MaxProcessingTime (Client.noteUnknown). It unwraps to the
// failure, which classify reads as before.
type unknownOutcome struct {
	err    error
	sentAt time.Time
}

func (e *unknownOutcome) Error() string {
	return e.err.Error() + " (outcome unknown: the request may have reached the API)"
}

func (e *unknownOutcome) Unwrap() error { return e.err }

// asUnknown returns the unknownOutcome err wraps, or nil.
func asUnknown(err error) *unknownOutcome {
	var u *unknownOutcome
	if errors.As(err, &u) {
		return u
	}
	return nil
}
