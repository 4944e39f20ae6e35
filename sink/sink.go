package sink

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Client sends batches to the Cohort Sync API. It is safe for concurrent use
// by any number of Sends (one per cohort, say); each Send has at most one
// request in flight.
type Client struct {
	cfg   Config
	url   string
	log   *slog.Logger
	m     *metrics.Metrics
	fence *fence

	creds atomic.Pointer[creds] // the API key in use; swapped by reloadKey
	keyMu sync.Mutex            // serializes reloadKey

	hvAppKey, hvUserAgent, hvReplica []string // header values, read-only

	line  *stoppedLine // per workspace: LineStopped, Blocked (blocked.go)
	slots httpSlots    // MaxConcurrent attempts on the wire (slots.go)
	wake  waker        // TargetsChanged wakes the stopped Sends

	unkMu       sync.Mutex                         // guards the two fields below (unknown.go)
	unknown     map[cohortKey]map[string]time.Time // per cohort and action: until when an unknown request may be processed
	unknownLast time.Time                          // the latest of them
}

// Send delivers one batch, req. It returns once every member has been
// accepted by a 2xx or rejected by the API with evidence that the fault is
// the member's: the rejections, in member order, for the caller to
// dead-letter, and a nil error. A request with no members sends nothing.
//
// A non-nil error means the batch was not (entirely) delivered: nothing of
// it may be acknowledged, and no rejection is returned. It wraps ctx.Err()
// (or the error of Lease.Wait) when ctx ended first, or ErrGaveUp and the
// last failure when MaxElapsed passed without progress; a stopped line
// (LineStopped) never gives up.
//
// Cancellation stops the retries and the parts not yet sent, but not an
// HTTP attempt under way: that one ends within AttemptTimeout (or the
// lease's deadline), and if it completes the batch Send returns nil.
//
// Send has at most one request in flight. What each answer leads to, the
// permits, the lease and unknown outcomes: DESIGN.md "Retry policy".
func (c *Client) Send(ctx context.Context, req wire.Request) ([]wire.Rejection, error) {
	s := &sender{c: c, req: req, since: time.Now()}
	s.bo = backoff.ExponentialBackOff{
		InitialInterval:     c.cfg.InitialInterval,
		RandomizationFactor: backoff.DefaultRandomizationFactor,
		Multiplier:          backoff.DefaultMultiplier,
		MaxInterval:         c.cfg.MaxInterval,
		MaxElapsedTime:      0, // never backoff.Stop: MaxElapsed is enforced here, across splits
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	s.bo.Reset()
	defer s.unstop(false)
	defer s.untarget(false)
	if err := s.deliver(ctx, req, "", nil); err != nil {
		return nil, err
	}
	if len(s.rejected) > 1 {
		s.inOrder(nil) // builds s.pos
		slices.SortStableFunc(s.rejected, func(a, b wire.Rejection) int { return s.pos[a.UID] - s.pos[b.UID] })
	}
	return s.rejected, nil
}

// sender is the state of one Send. It is used by one goroutine.
type sender struct {
	c            *Client
	req          wire.Request // the whole batch
	bo           backoff.ExponentialBackOff
	logger       *slog.Logger // built on first use: most Sends log nothing
	since        time.Time    // last progress, for MaxElapsed
	rejected     []wire.Rejection
	lastKey      string         // the failure last logged, to log a repeating one once
	stopWait     time.Duration  // the next pause of a stopped line; 0: AuthRetryInterval
	batchStopped bool           // counted in the client's invalid-batch stop
	targetStop   LineStopReason // counted in the client's stop for a missing target ("": not)
	pos          map[string]int // the index of each member in req, built on first use
	failKey      string         // the last 2xx "status": "fail" answer (StatusError.dedupeKey)
	failCount    int            // how many times in a row it came (statusFailStreak)
}

// ws is the workspace of the Send's batch (the default one for "").
func (s *sender) ws() string { return s.c.workspaceOf(s.req.Workspace) }

// log returns the Send's logger, with the workspace (the default one's ID
// for a batch that names none), cohort_id and action.
func (s *sender) log() *slog.Logger {
	if s.logger == nil {
		s.logger = s.c.log.With("workspace", s.ws(), "cohort_id", s.req.CohortID, "action", string(s.req.Action))
	}
	return s.logger
}

// split cuts req's members in two halves (the first one the smaller).
func split(req wire.Request) (wire.Request, wire.Request) {
	mid := len(req.UIDs) / 2
	a, b := req, req
	a.UIDs, b.UIDs = req.UIDs[:mid:mid], req.UIDs[mid:]
	return a, b
}

// deliverHalves sends the two halves of req, in order. retry is the retry
// reason of their first attempts ("" when never sent).
func (s *sender) deliverHalves(ctx context.Context, req wire.Request, retry RetryReason, iso *isolation) error {
	a, b := split(req)
	if err := s.deliver(ctx, a, retry, iso); err != nil {
		return err
	}
	return s.deliver(ctx, b, retry, iso)
}

func (s *sender) reject(uids []string, reason string) {
	s.c.m.WorkspaceChanges.WithLabelValues(s.c.workspaceLabel(s.ws()), "rejected").Add(float64(len(uids)))
	for _, u := range uids {
		s.rejected = append(s.rejected, wire.Rejection{UID: u, Reason: reason})
	}
	s.progress()
}

// progress restarts the backoff, the stopped-line pause and the MaxElapsed
// clock.
func (s *sender) progress() {
	s.bo.Reset()
	s.stopWait = 0
	s.since = time.Now()
}

// deliver sends req until each of its members is accepted or rejected; or,
// within an isolating split (iso != nil), until req is accepted, rejected,
// or handed to iso to wait for evidence. retry is the Retries reason to
// count for its first attempt ("" if these members were never sent).
func (s *sender) deliver(ctx context.Context, req wire.Request, retry RetryReason, iso *isolation) (err error) {
	c := s.c
	if iso == nil {
		defer func() {
			if err == nil {
				s.unstop(true)
			}
		}()
	}
	for {
		if len(req.UIDs) == 0 {
			return nil
		}
		if size := wire.Size(req); size > c.cfg.MaxBodyBytes {
			return s.oversize(ctx, req, size, retry, iso)
		}
		serr, d, err := s.post(ctx, req, retry)
		if err != nil {
			return err
		}
		if serr == nil {
			if iso != nil {
				iso.accepts++
				iso.lastAccepted = req.UIDs[0]
			}
			return nil
		}
		switch {
		case d.kind == splitHalves && len(req.UIDs) == 1:
			s.log().Warn("member rejected by the API: too large", "err", serr, "status", serr.Code, "members", 1)
			s.reject(req.UIDs, serr.summary()+" (too large even for this member alone)")
			return nil
		case d.kind == splitHalves:
			s.log().Debug("payload too large; splitting", "err", serr, "status", serr.Code, "members", len(req.UIDs))
			return s.deliverHalves(ctx, req, d.reason, iso)
		case d.kind == rejectAll:
			s.log().Warn("the API rejected the cohort's fields; every member is rejected", "err", serr,
				"status", serr.Code, "members", len(req.UIDs))
			s.reject(req.UIDs, serr.summary())
			return nil
		case d.member && len(req.UIDs) == 1:
			s.log().Warn("the API rejected a member", "err", serr, "status", serr.Code, "members", 1)
			s.reject(req.UIDs, serr.summary())
			return nil
		case iso != nil:
			return s.isolate(ctx, failed{req: req, serr: serr, d: d}, iso)
		}
		// req starts an isolating split.
		pending, err := s.isolateRoot(ctx, failed{req: req, serr: serr, d: d})
		if err != nil || len(pending) == 0 {
			return err
		}
		req.UIDs, retry = pending, RetryInvalid
		if err := s.stopBatch(ctx, req, serr); err != nil {
			return err
		}
	}
}

// oversize handles req, whose body of size bytes is over MaxBodyBytes: a
// single member is rejected unsent, more are split in halves (never sent:
// not a retry).
func (s *sender) oversize(ctx context.Context, req wire.Request, size int, retry RetryReason, iso *isolation) error {
	c := s.c
	if len(req.UIDs) > 1 {
		return s.deliverHalves(ctx, req, retry, iso)
	}
	reason := fmt.Sprintf("too large: the request for this member alone is %d bytes, over the %d-byte cap", size, c.cfg.MaxBodyBytes)
	s.log().Warn("member rejected: too large to send", "members", 1, "bytes", size, "max_bytes", c.cfg.MaxBodyBytes)
	s.reject(req.UIDs, reason)
	return nil
}
