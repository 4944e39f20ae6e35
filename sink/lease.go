package sink

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// Lease fences a paused replica (DESIGN.md invariant 4): every HTTP attempt
// needs a fresh proof that this replica still belongs to the consumer group.
type Lease interface {
	// Wait blocks until this replica holds a valid proof of group
	// membership and returns when it expires. It returns an error only when
	// ctx ends (or the lease is closed for good); Send then stops as on
	// cancellation. A zero deadline means the proof does not expire.
	//
	// Wait is called before every attempt, by any number of Sends at once:
	// it must be safe for concurrent use, and cheap while the proof is
	// valid. A nil Lease in Config means the proof is always valid.
	Wait(ctx context.Context) (deadline time.Time, err error)
	// Deadline returns the current expiry and whether the proof is valid
	// now, without blocking. An attempt under way asks it when the expiry
	// it started with comes: a renewed proof lets it go on (a slow answer
	// is not abandoned while the replica is healthy), a lapsed one ends it.
	Deadline() (deadline time.Time, valid bool)
}

// errLeaseExpired is the failure of an attempt refused because the lease
// expired before its request was written (nothing was sent), or abandoned
// because the lease lapsed while it waited for the answer: the attempt is
// retried under a new lease.
var errLeaseExpired = errors.New("sink: the proof of group membership (lease) expired")

// fence is the client-wide lease deadline that the connections of the
// default HTTP client check before every write. The Lease is the replica's,
// so the latest deadline any attempt obtained is the latest proof of
// membership: a write is allowed until then, and only while the Lease itself
// still says it is valid (Lease.Deadline), so that Lease.End (a fenced
// generation) lowers the fence at once.
//
// Deadlines are compared on the monotonic clock: a deadline is kept as its
// distance from base (a time.Time with a monotonic reading, as the
// deadlines of internal/lease have), never as a wall-clock instant, so a
// step of the wall clock (NTP, an operator, a VM restore) moves nothing. A
// deadline without a monotonic reading (a Lease that built it from a wall
// time) falls back to the wall clock, like time.Time.Sub.
type fence struct {
	base  time.Time    // time.Now() when the Client was made: the monotonic origin
	until atomic.Int64 // nanoseconds after base of the latest lease deadline; 0: no deadline
	lease Lease        // asked at every check; nil: no Lease
	// now is time.Now; tests replace it (before any use) to play a pause
	// between the start of an attempt and its first write, or a clock step.
	now func() time.Time
}

func newFence(l Lease) *fence {
	return &fence{base: time.Now(), lease: l, now: time.Now}
}

// extend records a lease deadline: the fence moves to it if it is later.
// The zero time (no expiry) lifts the fence.
func (f *fence) extend(d time.Time) {
	if d.IsZero() {
		f.until.Store(0)
		return
	}
	n := max(int64(d.Sub(f.base)), 1) // 0 means no deadline
	for {
		cur := f.until.Load()
		if cur >= n {
			return
		}
		if f.until.CompareAndSwap(cur, n) {
			return
		}
	}
}

// check returns errLeaseExpired when the latest lease deadline has passed,
// or when the Lease is no longer valid (it ended, or lapsed).
func (f *fence) check() error {
	until := f.until.Load()
	if until != 0 && int64(f.now().Sub(f.base)) >= until {
		return errLeaseExpired
	}
	if f.lease != nil && until != 0 {
		if _, ok := f.lease.Deadline(); !ok {
			return errLeaseExpired
		}
	}
	return nil
}

// fencedConn refuses to write once the lease has expired. The check is made
// right before each write reaches the socket, so it also catches a process
// paused (SIGSTOP, a VM pause) between Lease.Wait and the write, which no
// timer can: a timer that fires after the pause races with the write.
//
// The residual window is the time between the check and the kernel taking
// the bytes (microseconds, unless the process is paused exactly there),
// plus the network's delivery time. A write refused halfway through a
// request (a body larger than the transport's write buffer) leaves the API
// with a truncated request, which it cannot act on. HTTP/2 multiplexes
// Sends on one connection: a refused write closes it for all of them, which
// is right, since they share the lease.
//
// HTTP/1.1 carries one request at a time on a connection: the attempt that
// got it (GotConn) leaves its state in gate, and the first write after that
// freshens the attempt's permit before the fence is checked, so that
// neither a slow dial nor a TLS handshake ages a permit past permitMaxAge
// before its request's first byte.
type fencedConn struct {
	net.Conn
	f    *fence
	gate atomic.Pointer[attemptState]
}

func (c *fencedConn) Write(p []byte) (int, error) {
	st := c.gate.Swap(nil)
	if st != nil {
		if err := st.beforeWrite(); err != nil {
			return 0, err
		}
	}
	if err := c.f.check(); err != nil {
		return 0, err
	}
	if st != nil {
		st.sent.Store(true)
	}
	return c.Conn.Write(p)
}

// fencedDialer wraps dial so that its connections check f before writing.
func fencedDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error), f *fence) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &fencedConn{Conn: conn, f: f}, nil
	}
}

// watchLease ends an attempt (cancel) when the lease lapses while it runs:
// at the expiry the attempt started with (d), and at each later one, it
// asks the Lease again; a valid, later deadline lets the attempt go on and
// moves the fence, anything else cancels it. stop ends the watch.
func (c *Client) watchLease(ctx context.Context, cancel context.CancelFunc, d time.Time) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTimer(time.Until(d))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			nd, ok := c.cfg.Lease.Deadline()
			if !ok {
				cancel()
				return
			}
			if nd.IsZero() {
				return // no expiry any more
			}
			c.fence.extend(nd)
			t.Reset(time.Until(nd))
		}
	}()
	return func() { close(done) }
}
