package sink

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// post sends req (one body) until an answer other than a retryable failure:
// it returns (nil, _, nil) when accepted, the answer and its classification
// for a 413 or another 4xx, and an error when ctx ended (or Lease.Wait
// failed) or Send gave up.
func (s *sender) post(ctx context.Context, req wire.Request, retry RetryReason) (*StatusError, decision, error) {
	c := s.c
	body := wire.AppendBody(make([]byte, 0, wire.Size(req)), req)
	var (
		last   error // the last failure of this body
		reload bool  // the last answer rejected the credentials
	)
	for attempt := 1; ; attempt++ {
		to, lease, permitAt, err := s.next(ctx, req, reload)
		if err == nil {
			lease, permitAt, err = s.slot(ctx, req.Workspace, lease, permitAt) // after the permit: given back when the attempt ends
		}
		if err != nil {
			return nil, decision{}, s.stopped(req, attempt-1, err, last)
		}
		if retry != "" {
			c.m.Retries.WithLabelValues(string(retry)).Inc()
			c.m.WorkspaceRetries.WithLabelValues(to.ws, string(retry)).Inc()
		}
		wake := c.wakeChan() // before the attempt: a change during it wakes a stop after it
		sent := time.Now()
		serr, err := c.attempt(ctx, req, to, body, lease, permitAt)
		c.slots.give()
		if serr == nil && err == nil {
			s.accepted(req, attempt)
			return nil, decision{}, nil
		}
		if u := asUnknown(err); u != nil {
			c.noteUnknown(req, u.sentAt)
		}
		f := s.statusFailStreak(newFailure(serr, err))
		d := f.d
		c.noteFailure(req.Workspace, d, sent)
		switch d.kind {
		case splitHalves, rejectAll, isolate: // the request itself: the caller's
			return serr, d, nil
		}
		reload = d.kind == stopLine && isAuthError(serr)
		delay := s.delay(f, req, attempt, reload, to)
		retry, last = d.reason, f.cause
		if err := s.retrying(f, req, attempt, delay); err != nil {
			return nil, decision{}, err
		}
		if d.kind == stopLine {
			err = sleepWake(ctx, delay, wake)
		} else {
			err = s.wait(ctx, req.Workspace, delay, d.kind == retryPause)
		}
		if err != nil {
			return nil, decision{}, s.stopped(req, attempt, err, last)
		}
		if d.kind == stopLine || d.kind == retryNow {
			s.since = time.Now() // a stopped line, or a lease wait, does not count toward MaxElapsed
		}
	}
}

// next waits until req's next attempt may start: no unknown outcome holds
// it, its workspace has a target (resolved before the permit: a Send
// without credentials spends none), a lease and a permit (ready). It
// returns the target as of then (a key rotated during the waits is used),
// re-reading the default key first after a 401/403 (reload).
func (s *sender) next(ctx context.Context, req wire.Request, reload bool) (*dest, time.Time, time.Time, error) {
	c := s.c
	if err := s.hold(ctx, req); err != nil {
		return nil, time.Time{}, time.Time{}, err
	}
	to, err := s.target(ctx, req)
	if err != nil {
		return nil, time.Time{}, time.Time{}, err
	}
	lease, permitAt, err := s.ready(ctx, req.Workspace)
	if err != nil {
		return nil, time.Time{}, time.Time{}, err
	}
	if reload {
		c.reloadKey() // a secret rotated during the wait
	}
	if now, _, err := c.destFor(req.Workspace); err == nil {
		to = now
	}
	return to, lease, permitAt, nil
}

// statusFailLimit is how many identical 2xx "status": "fail" answers one
// Send takes as transient (retried with backoff) before it treats them, and
// every identical one after them, as the 4xx they stand for.
const statusFailLimit = 3

// statusFailStreak counts f if it is a 2xx "status": "fail" answer, and,
// from the statusFailLimit-th identical one (same status, type, message
// and attribute) within this Send, reclassifies it as a 400 with the same
// envelope: the 4xx path (an isolating split that rejects a member only
// with evidence, a rejection of every member when the cohort's fields are
// named, or a stopped line), instead of retrying the same answer forever.
func (s *sender) statusFailStreak(f failure) failure {
	if f.d.reason != RetryStatusFail {
		return f
	}
	if f.key != s.failKey {
		s.failKey, s.failCount = f.key, 0
	}
	s.failCount++
	if s.failCount >= statusFailLimit {
		as4xx := *f.serr
		as4xx.Code = http.StatusBadRequest
		f.d = classify(&as4xx, nil)
	}
	return f
}

// failure is one failed attempt and what to do about it.
type failure struct {
	d      decision
	serr   *StatusError // the answer; nil for a transport error
	cause  error        // serr, or the transport error
	key    string       // identifies a repeating failure for logging
	status int          // the answer's status; 0 for a transport error
}

func newFailure(serr *StatusError, err error) failure {
	f := failure{d: classify(serr, err), serr: serr, cause: err}
	if serr != nil {
		f.cause, f.key, f.status = serr, serr.dedupeKey(), serr.Code
	} else {
		f.key = err.Error()
	}
	return f
}

// delay returns how long to wait before the same body goes again. For a
// stopped line it also re-reads the API key (reload: the answer rejected
// the credentials; a new key, or a Target's key other than the one to
// sent, is tried at once), stops the line and logs
// it loudly, once per new failure.
func (s *sender) delay(f failure, req wire.Request, attempt int, reload bool, to *dest) time.Duration {
	switch f.d.kind {
	case retryBackoff:
		return max(s.bo.NextBackOff(), f.d.delay)
	case retryPause:
		if f.d.delay > 0 {
			return f.d.delay
		}
		return s.bo.NextBackOff()
	case stopLine:
		delay := s.stopPause(f.d.stop)
		if reload && (s.c.reloadKey() || s.c.keyRotated(to, req.Workspace)) {
			delay = 0 // try the new key at once
		}
		if s.c.line.stop(s.ws(), f.d.stop) || f.key != s.lastKey {
			s.lastKey = f.key
			s.log().Error(lineStopMessage(f.serr), "err", f.serr, "status", f.status, "attempt", attempt,
				"delay", delay, "members", len(req.UIDs))
		}
		return delay
	}
	return 0 // retryNow
}

// retrying gives up (ErrGaveUp) when a backoff or a pause would end past
// MaxElapsed without progress, and otherwise logs a new kind of failure
// once.
func (s *sender) retrying(f failure, req wire.Request, attempt int, delay time.Duration) error {
	c := s.c
	giveUp := f.d.kind == retryBackoff || f.d.kind == retryPause
	if giveUp && c.cfg.MaxElapsed > 0 && time.Since(s.since)+delay > c.cfg.MaxElapsed {
		s.log().Error("giving up: no progress within MaxElapsed", "err", f.cause, "status", f.status,
			"attempt", attempt, "members", len(req.UIDs), "max_elapsed", c.cfg.MaxElapsed)
		return fmt.Errorf("%w: cohort %s %s, %d members, after %d attempts: %w",
			ErrGaveUp, req.CohortID, req.Action, len(req.UIDs), attempt, f.cause)
	}
	if f.d.kind != stopLine && f.key != s.lastKey {
		s.lastKey = f.key
		s.log().Warn("cohortsync request failed; retrying", "err", f.cause, "status", f.status, "reason", f.d.reason,
			"attempt", attempt, "delay", delay, "members", len(req.UIDs))
	}
	return nil
}

// ready waits until an attempt may start and returns its lease deadline
// and the time of its permit: a valid lease first, then a permit, then the
// lease again, since it may have lapsed while the permit was waited for (it
// is then waited for again, and a permit older than permitMaxAge by then
// is taken anew). The order matters: a permit taken before a stalled lease
// would be spent when the lease comes back, together with the permits the
// Limiter grants then, so that a 60-second window of arrivals would hold
// more than the Limiter's rate allows for (issue 18: 302 in a 300 window).
func (s *sender) ready(ctx context.Context, ws string) (lease, permitAt time.Time, err error) {
	for {
		if lease, err = s.c.waitLease(ctx); err != nil {
			return time.Time{}, time.Time{}, err
		}
		if permitAt.IsZero() || time.Since(permitAt) > permitMaxAge {
			if err = s.permit(ctx, ws); err != nil {
				return time.Time{}, time.Time{}, err
			}
			permitAt = time.Now()
		}
		if s.c.leaseHolds(lease) {
			return lease, permitAt, nil
		}
	}
}

// slot takes an HTTP slot for an attempt whose lease deadline and permit
// ready gave, and returns the ones the attempt goes with: a permit that grew
// stale while the slot was waited for is replaced as Client.takeSlot says,
// and when the slot is given back for it, the lease is waited for again
// with the new permit (ready).
func (s *sender) slot(ctx context.Context, ws string, lease, permitAt time.Time) (time.Time, time.Time, error) {
	permitAt, err := s.c.takeSlot(ctx, s.c.limiterFor(ws), permitAt, func() (time.Time, error) {
		var err error
		lease, permitAt, err = s.ready(ctx, ws)
		return permitAt, err
	})
	return lease, permitAt, err
}

// leaseHolds reports whether the lease that gave deadline d is still valid
// (a zero d, or no Lease: it never expires).
func (c *Client) leaseHolds(d time.Time) bool {
	if d.IsZero() || c.cfg.Lease == nil {
		return true
	}
	_, ok := c.cfg.Lease.Deadline()
	return ok
}

// waitLease waits for a valid lease, moves the fence to its deadline and
// returns it (zero: none, or no Lease). Every request waits for it, the
// probe of a blocked workspace included: the fence refuses a write past
// the last deadline it was given, which is stale once nothing has been
// sent for a lease's length.
func (c *Client) waitLease(ctx context.Context) (time.Time, error) {
	l := c.cfg.Lease
	if l == nil {
		return time.Time{}, nil
	}
	for {
		d, err := l.Wait(ctx)
		if err != nil {
			return time.Time{}, fmt.Errorf("lease: %w", err)
		}
		c.fence.extend(d)
		if d.IsZero() || time.Now().Before(d) {
			return d, nil
		}
		if err := ctx.Err(); err != nil {
			return time.Time{}, err
		}
	}
}

// accepted records a 2xx for req.
func (s *sender) accepted(req wire.Request, attempt int) {
	s.progress()
	if s.c.line.accept(s.ws(), time.Now()) {
		s.log().Info("the API accepts the credentials again; sending resumed", "attempt", attempt)
	}
	if s.lastKey != "" {
		s.lastKey = ""
		s.log().Info("cohortsync request succeeded after retrying", "attempt", attempt, "members", len(req.UIDs))
	}
}

// permit takes a rate-limit permit for the next attempt. It fails once ctx
// has ended, even without a Limiter: no new attempt starts after
// cancellation.
func (s *sender) permit(ctx context.Context, ws string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	lim := s.c.limiterFor(ws)
	if lim == nil {
		return nil
	}
	start := time.Now()
	err := lim.Wait(ctx)
	s.c.m.RateLimitWait.Add(time.Since(start).Seconds())
	return err
}

// wait spends the delay before the next attempt. A 429's delay pauses the
// Limiter of workspace ws (the next permit then waits it out); without a
// Limiter it is slept here, and counted as rate-limit wait.
func (s *sender) wait(ctx context.Context, ws string, d time.Duration, pause bool) error {
	if pause {
		if lim := s.c.limiterFor(ws); lim != nil {
			lim.PauseUntil(time.Now().Add(d))
			return ctx.Err()
		}
		start := time.Now()
		defer func() { s.c.m.RateLimitWait.Add(time.Since(start).Seconds()) }()
	}
	return sleep(ctx, d)
}

// stopped is the error for a Send ended by ctx (or by Lease.Wait): it wraps
// that error and the last failure (nil: none). attempts < 0 is not shown.
func (s *sender) stopped(req wire.Request, attempts int, err, last error) error {
	after := ""
	if attempts >= 0 {
		after = fmt.Sprintf(" after %d attempts", attempts)
	}
	if last == nil {
		return fmt.Errorf("sink: send cohort %s %s, %d members: stopped%s: %w",
			req.CohortID, req.Action, len(req.UIDs), after, err)
	}
	return fmt.Errorf("sink: send cohort %s %s, %d members: stopped%s: %w (last failure: %w)",
		req.CohortID, req.Action, len(req.UIDs), after, err, last)
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error { return sleepWake(ctx, d, nil) }
