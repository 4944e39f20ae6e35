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

	line *stoppedLine // LineStopped: the credentials, the configuration, or batches that fail alike

	unkMu       sync.Mutex                         // guards the two fields below (unknown.go)
	unknown     map[cohortKey]map[string]time.Time // per cohort and action: until when an unknown request may be processed
	unknownLast time.Time                          // the latest of them
}

// Send delivers one batch, req, and returns once every member of it has been
// either accepted by a 2xx or rejected by the API with evidence that the
// fault is the member's. Rejected members come back as Rejections, in member
// order, for the caller to dead-letter; the error is then nil. A non-nil
// error means the batch was not (entirely) delivered: nothing of it may be
// acknowledged, and the rejections are not returned. A request with no
// members sends nothing and returns nil.
//
// Permits and lease: every attempt (the first, a retry, or each part of a
// split) first waits for Config.Lease (Lease.Wait, again if the deadline it
// returns is already past), then takes a permit with Limiter.Wait, then
// checks the lease again (waiting for it again if it lapsed meanwhile); a
// permit older than half of ratelimit.ArrivalSlack is taken anew, then and
// right before the request's first byte is written (after the dial and
// TLS, with the default HTTP client). So no permit is held while the lease
// is waited for. Time spent in Limiter.Wait, and in 429 pauses, is added to
// the rate-limit wait metric. An attempt is abandoned (and retried under a
// new lease) if the lease lapses before its answer comes.
//
// Unknown outcomes: an attempt that ends without an answer after its
// request may have reached the API (an attempt timeout, a lease lapse, a
// connection lost after the write) may still be processed by the API, up
// to MaxProcessingTime after it was sent. Until then no request of the
// other action for the same cohort is sent by this Client (see unknown.go;
// the same action goes on, it commutes with the late copy), and Settle
// waits them out for a hand-over.
//
// Size: a body larger than MaxBodyBytes is never sent; it is split in halves
// first (not counted as a retry), and a member whose request alone is too
// large is rejected without being sent.
//
// Outcomes, per answer (DESIGN.md "Retry policy"):
//   - 2xx: accepted, unless the body is a JSON object whose "status" is
//     "fail" (the API's error envelope): that is retried like a 5xx, counted
//     as requests_total{code="200_fail"} and retries_total{reason="status_fail"},
//     until the same answer (status, type, message, attribute) came
//     statusFailLimit (3) times within the Send: from then on it, and every
//     identical answer after it, takes the path of a 400 with the same
//     envelope (below), so that it is never retried forever.
//   - 429: the Limiter is paused (PauseUntil) for the server's delay
//     (RetryAfter: Retry-After, else x-ratelimit-reset), else the next
//     backoff interval; then the same body is retried.
//   - 408, 5xx, connection error, attempt timeout: the same body is retried
//     after the next backoff interval (exponential with jitter, one
//     backoff.ExponentialBackOff per Send, Reset after progress); a
//     Retry-After on such an answer raises the delay to it.
//   - The lease expired before the request was written (the default HTTP
//     client refuses to write it): nothing was sent; retried at once under
//     a new lease (retries_total{reason="lease"}).
//   - 413: the members are split in halves, sent in order; a single member
//     that still gets a 413 is rejected ("413 ...: ... too large ...").
//   - 401, 403, 415 (a bug in the worker), 404, 405 and 3xx (a wrong base
//     URL), any 4xx whose type is "Authentication required" or
//     "Authentication Mismatch", and any 4xx whose attribute names a header
//     (MOE-APPKEY, Authorization, Content-Type): the credentials or the
//     configuration are wrong. Send logs it at error level, stops the line
//     (LineStopped, reason auth or config), re-reads the API key on a
//     401/403 (Config.APIKeyFunc; a new key is tried at once), and retries
//     the same body every AuthRetryInterval, forever: it never rejects and
//     never returns success before a 2xx, which clears the stop.
//   - Another 4xx (400, 409, 422, ...) whose attribute names a field of the
//     cohort (action, partner, parameters, cohort_name, cohort_id,
//     cohort_description): every member is rejected with the reason
//     "<status> <type>: <message>".
//   - Another 4xx, with no attribute or one naming a member (uid, members):
//     an isolating split (below) finds the members at fault.
//
// Isolating split. The failing request is split in halves, recursively,
// depth first and in member order; every part is sent, and a part that
// succeeds is accepted. A member that fails on its own is rejected only with
// evidence that the fault is its own:
//   - (a) the error's attribute names a member field (uid, members); or
//   - (b) parts of the same isolating split (the tree grown from the request
//     that first failed) were accepted both before and after the member
//     failed alone: the API takes the batch's envelope and its other
//     members, and did so on both sides of the member's failure, so an API
//     fault that starts or ends during the split is not blamed on the
//     members that met it. A member that failed before any acceptance is
//     sent alone once more; if nothing was accepted after a member failed,
//     a canary (one member already accepted, sent alone again: a repeated
//     add or remove changes nothing) is sent; if the canary fails too,
//     those members are not rejected (below).
//
// Failing parts without attribute wait for evidence: the first one is split
// further at once (following one failure down costs about 2·log2(n)
// requests), a later one is split only once evidence exists (if evidence
// turns up after it was set aside, it is split then). Both halves of a
// split are always sent before their parent's failure is judged, so a
// failure is never blamed on a part whose sibling was never tried. One bad
// member among n costs at most 3 + 2·ceil(log2 n) requests (23 for 1,000);
// k bad members about k times that.
//
// When the split ends without evidence (no part was accepted, e.g. every
// request gets `400 {"status":"fail","error":{"message":"Malformed
// JSON",...}}`, or the batch has one member and the error no member
// attribute), the fault is batch-wide: nothing is rejected, the line stops
// (LineStopped, reason invalid_batch; logged at error level), and the
// members still unresolved are sent again, as one request, every
// AuthRetryInterval, forever; each time they fail alike a new isolating
// split runs (at most 1 + 2·ceil(log2 n) requests per interval when every
// part fails). The stop ends when they are accepted, or rejected on
// evidence. Residual risk: an API fault that both starts and ends between
// two acceptances of one split looks like bad members.
//
// Ordering: Send never has more than one request in flight. Parts are sent
// in member order, except a failing part set aside for want of evidence
// (split after the parts that follow it), a member sent alone again, and
// the canary; the members of one batch are distinct uids of one cohort and
// action, so their relative order does not matter.
//
// Cancellation: when ctx ends, Send stops retrying (and sends no further
// part) and returns an error wrapping ctx.Err(); so does an error from
// Lease.Wait. An HTTP attempt already under way is NOT aborted: it runs
// under context.WithoutCancel(ctx) and AttemptTimeout (or the lease's
// deadline), so that a request for a revoked partition is not left
// half-sent by the cancellation itself. Its outcome can still be unknown
// (it timed out, or the lease lapsed): the fence then waits it out with
// Settle. Cancellation therefore takes up to AttemptTimeout. If that last
// attempt is accepted and completes the batch, Send returns nil.
//
// Giving up: with MaxElapsed > 0, Send returns an error wrapping ErrGaveUp
// and the last failure (a *StatusError, or the network error) rather than
// start a wait that would end more than MaxElapsed after the last progress;
// a stopped line never gives up.
//
// Every request is a POST with Content-Type: application/json,
// Authorization: Basic base64(workspace:key), MOE-APPKEY: workspace and
// User-Agent (never MOE-DESTINATION-PARTNER). Response bodies are always
// drained (up to 128 KiB) and closed, so connections are reused.
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
	pos          map[string]int // the index of each member in req, built on first use
	failKey      string         // the last 2xx "status": "fail" answer (StatusError.dedupeKey)
	failCount    int            // how many times in a row it came (statusFailStreak)
}

// log returns the Send's logger, with cohort_id and action.
func (s *sender) log() *slog.Logger {
	if s.logger == nil {
		s.logger = s.c.log.With("cohort_id", s.req.CohortID, "action", string(s.req.Action))
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
func (s *sender) deliverHalves(ctx context.Context, req wire.Request, retry metrics.RetryReason, iso *isolation) error {
	a, b := split(req)
	if err := s.deliver(ctx, a, retry, iso); err != nil {
		return err
	}
	return s.deliver(ctx, b, retry, iso)
}

func (s *sender) reject(uids []string, reason string) {
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
func (s *sender) deliver(ctx context.Context, req wire.Request, retry metrics.RetryReason, iso *isolation) (err error) {
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
		req.UIDs, retry = pending, metrics.RetryInvalid
		if err := s.stopBatch(ctx, req, serr); err != nil {
			return err
		}
	}
}

// oversize handles req, whose body of size bytes is over MaxBodyBytes: a
// single member is rejected unsent, more are split in halves (never sent:
// not a retry).
func (s *sender) oversize(ctx context.Context, req wire.Request, size int, retry metrics.RetryReason, iso *isolation) error {
	c := s.c
	if len(req.UIDs) > 1 {
		return s.deliverHalves(ctx, req, retry, iso)
	}
	reason := fmt.Sprintf("too large: the request for this member alone is %d bytes, over the %d-byte cap", size, c.cfg.MaxBodyBytes)
	s.log().Warn("member rejected: too large to send", "members", 1, "bytes", size, "max_bytes", c.cfg.MaxBodyBytes)
	s.reject(req.UIDs, reason)
	return nil
}
