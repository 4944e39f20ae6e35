package sink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Path is the Cohort Sync endpoint, relative to Config.BaseURL.
const Path = "/v1/integrations/cohortsync"

// Defaults for the zero values of Config.
const (
	DefaultMaxBodyBytes      = 128000
	DefaultAttemptTimeout    = 15 * time.Second
	DefaultInitialInterval   = 500 * time.Millisecond
	DefaultMaxInterval       = 60 * time.Second
	DefaultAuthRetryInterval = 30 * time.Second
	// DefaultAuthRetryMaxInterval: a line stopped for long probes the API
	// every 5 minutes per stopped Send.
	DefaultAuthRetryMaxInterval = 5 * time.Minute
	DefaultUserAgent            = "cohortsync-worker"
)

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	// BaseURL is scheme://host[:port][/prefix]; requests go to BaseURL + Path.
	// It must be http or https and must not carry credentials, a query or a
	// fragment.
	BaseURL string
	// WorkspaceID is the Basic-auth username and the MOE-APPKEY header.
	WorkspaceID string
	// APIKey is the Basic-auth password. It is never logged and never part
	// of an error: if the server echoes it, it is replaced by [REDACTED].
	APIKey string
	// MaxBodyBytes caps a request body: a larger one is split in halves
	// before sending (never sent), and a single member that alone exceeds
	// it is rejected. 0 means 128000, safe under either reading of the
	// API's "128KB".
	MaxBodyBytes int
	// AttemptTimeout bounds one HTTP attempt, reading the answer included;
	// 0 means 15s. An attempt that times out is retried like a 5xx.
	AttemptTimeout time.Duration
	// MaxProcessingTime bounds how long after a request was sent the API
	// may still process it (MOENGAGE_MAX_PROCESSING_TIME); it must be longer
	// than AttemptTimeout; 0 means twice AttemptTimeout (30s). After an
	// attempt whose outcome is unknown (no answer, and the request may have
	// reached the API), no request of the other action for the same cohort
	// is sent until this long after it was sent (unknown.go), and Settle
	// waits it out before a hand-over.
	MaxProcessingTime time.Duration
	// InitialInterval and MaxInterval shape the exponential backoff
	// (multiplier 1.5, ±50% jitter) between retries of 408, 5xx, network
	// errors and timeouts, and of a 429 without a usable delay header.
	// 0 means 500ms and 60s.
	InitialInterval time.Duration
	MaxInterval     time.Duration
	// MaxElapsed is how long Send keeps retrying without progress (an
	// accepted or rejected part) before it returns ErrGaveUp: Send gives
	// up instead of starting a wait that would end past it, so it returns
	// at most one attempt's duration after MaxElapsed. 0 means retry
	// forever, the default on purpose: at-least-once delivery blocks
	// rather than drops. Time spent while the line is stopped (see
	// AuthRetryInterval) does not count: that is retried forever.
	MaxElapsed time.Duration
	// AuthRetryInterval is the pause between attempts while the line is
	// stopped: the API answers 401, 403, 415, 404, 405 or a 3xx (wrong
	// credentials or configuration), or a 4xx that hits every part of a batch
	// alike (see Send); 0 means 30s. Each probe of the stopped line that
	// finds it still stopped doubles the pause of that Send, up to
	// AuthRetryMaxInterval (0 means 5m; never less than AuthRetryInterval):
	// every probe counts against the budget and nothing but the probe can
	// go through meanwhile, so a line stopped for hours probes sparingly
	// (cohortsync_line_stopped_probes_total counts them). A key re-read
	// after a 401/403 that finds a new key is tried at once.
	AuthRetryInterval    time.Duration
	AuthRetryMaxInterval time.Duration
	// APIKeyFunc, when set, re-reads the API key after the API rejected
	// the credentials (401, 403, an "Authentication ..." error type): it is
	// called right after such an answer and again before each retry that
	// follows one, so that a rotated secret (a Kubernetes Secret file, say)
	// heals the fleet without a restart. A key that differs from the one in
	// use replaces it (the Authorization header and the strings scrubbed
	// from errors are rebuilt atomically) and is tried at once. An error,
	// or an empty key, is logged and the current key is kept; the error
	// must not contain the key. It may be called from several Sends, never
	// concurrently. nil: the key never changes.
	APIKeyFunc func() (string, error)
	// Lease, when set, fences a paused replica (DESIGN.md invariant 4):
	// every attempt waits for it (Lease.Wait) before taking its rate-limit
	// permit, and checks it again (Lease.Deadline) once it holds the permit;
	// it is abandoned if the lease lapses while it runs (it is asked again,
	// with Lease.Deadline, at each expiry). With the default HTTPClient the
	// connection also refuses to write a request once the latest lease
	// deadline has passed on the monotonic clock, or the Lease says it is
	// no longer valid (Lease.End), so that a replica paused between the
	// check and the write sends nothing when it resumes. nil: always valid.
	Lease Lease
	// UserAgent is the User-Agent header; "" means "cohortsync-worker".
	UserAgent string
	// ReplicaID, when set, is sent as the X-Cohortsync-Replica header (the
	// emulator's request log records it).
	ReplicaID string
	// HTTPClient sends the requests. nil means a pooled client
	// (MaxIdleConnsPerHost 32) with no overall Timeout, since attempts
	// have their own, whose connections check the Lease before every
	// write; a caller's client gets only the checks before the attempt
	// and the attempt's deadline. Redirects are never followed, whoever built the
	// client (New uses a copy with its own CheckRedirect): a 3xx means a
	// wrong BaseURL, and following it would turn the POST into a GET or
	// carry the credentials to another host.
	HTTPClient *http.Client
	// Limiter gives the permit of every attempt, and is paused on a 429
	// (a *ratelimit.Limiter: the replica's share of the fleet budget). nil
	// means unlimited (a 429 then only delays the Send that got it).
	Limiter Limiter
	// Logger receives the client's logs, with component=sink. nil means
	// slog.Default().
	Logger *slog.Logger
	// Metrics receives the request metrics. nil means an unregistered set.
	Metrics *metrics.Metrics
}

// Validate reports the first problem with c. Its errors never contain the
// API key (nor a password in BaseURL). APIKey is required even with
// APIKeyFunc: it is the key of the first attempts.
func (c Config) Validate() error {
	u, err := url.Parse(c.BaseURL)
	if c.BaseURL == "" {
		return errors.New("sink: BaseURL is required")
	}
	if err != nil {
		return errors.New("sink: BaseURL is not a valid URL") // not echoed: it may hold a secret
	}
	// shown is the URL without the parts that may hold a secret.
	shown := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	switch {
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("sink: BaseURL %q is not an http(s)://host URL", shown)
	case u.User != nil:
		return fmt.Errorf("sink: BaseURL %q must not carry credentials (use WorkspaceID and APIKey)", shown)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return fmt.Errorf("sink: BaseURL %q must not have a query or a fragment", shown)
	case c.WorkspaceID == "":
		return errors.New("sink: WorkspaceID is required")
	case strings.ContainsFunc(c.WorkspaceID, func(r rune) bool { return r == ':' || r < 0x21 || r == 0x7f }):
		return errors.New("sink: WorkspaceID must not contain ':', spaces or control characters")
	case c.APIKey == "":
		return errors.New("sink: APIKey is required")
	case c.MaxBodyBytes < 0:
		return errors.New("sink: MaxBodyBytes is negative")
	case c.AttemptTimeout < 0, c.InitialInterval < 0, c.MaxInterval < 0, c.MaxElapsed < 0, c.AuthRetryInterval < 0,
		c.AuthRetryMaxInterval < 0, c.MaxProcessingTime < 0:
		return errors.New("sink: a timeout or interval is negative")
	case c.MaxProcessingTime != 0 && c.MaxProcessingTime <= cmp.Or(c.AttemptTimeout, DefaultAttemptTimeout):
		return errors.New("sink: MaxProcessingTime must be longer than AttemptTimeout")
	case strings.ContainsFunc(c.UserAgent+c.ReplicaID, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("sink: UserAgent and ReplicaID must not contain control characters")
	}
	return nil
}

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

	stopMu      sync.Mutex // guards the three fields below and orders the gauges with them
	stopAuth    bool       // the API rejects the credentials; cleared by any acceptance
	stopConfig  bool       // the API rejects the endpoint or a header; cleared by any acceptance
	stopBatches int        // Sends stopped by a batch-wide 4xx
	stopped     atomic.Bool

	unkMu       sync.Mutex                         // guards the two fields below (unknown.go)
	unknown     map[cohortKey]map[string]time.Time // per cohort and action: until when an unknown request may be processed
	unknownLast time.Time                          // the latest of them
}

// New validates cfg, fills in its defaults and returns a Client.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.AttemptTimeout, DefaultAttemptTimeout)
	def(&cfg.InitialInterval, DefaultInitialInterval)
	def(&cfg.MaxInterval, DefaultMaxInterval)
	def(&cfg.AuthRetryInterval, DefaultAuthRetryInterval)
	def(&cfg.AuthRetryMaxInterval, DefaultAuthRetryMaxInterval)
	cfg.AuthRetryMaxInterval = max(cfg.AuthRetryMaxInterval, cfg.AuthRetryInterval)
	def(&cfg.MaxProcessingTime, 2*cfg.AttemptTimeout)
	if cfg.MaxInterval < cfg.InitialInterval {
		cfg.MaxInterval = cfg.InitialInterval
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	f := newFence(cfg.Lease)
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient(f)
	} else {
		hc := *cfg.HTTPClient // a copy: the caller's client is not modified
		hc.CheckRedirect = noRedirect
		cfg.HTTPClient = &hc
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewMetrics(nil)
	}
	c := &Client{
		cfg:         cfg,
		url:         strings.TrimRight(cfg.BaseURL, "/") + Path,
		log:         cfg.Logger.With("component", "sink"),
		m:           cfg.Metrics,
		fence:       f,
		hvAppKey:    []string{cfg.WorkspaceID},
		hvUserAgent: []string{cfg.UserAgent},
		unknown:     map[cohortKey]map[string]time.Time{},
	}
	c.creds.Store(newCreds(cfg.WorkspaceID, cfg.APIKey, nil))
	if cfg.ReplicaID != "" {
		c.hvReplica = []string{cfg.ReplicaID}
	}
	return c, nil
}

// CloseIdleConnections closes the HTTP client's idle connections; call it
// when the Client is no longer used.
func (c *Client) CloseIdleConnections() { c.cfg.HTTPClient.CloseIdleConnections() }

// LineStopped reports whether sending is stopped: the API rejects the
// credentials (401, 403) or the configuration (415, 404, 405, 3xx, a
// header), which any Send's next 2xx clears; or it answers some Send's batch
// with a 4xx that hits every part of it alike, which lasts until that batch
// goes through or its Send returns. Stopped Sends retry every
// AuthRetryInterval and never drop nor reject anything meanwhile; the
// worker reports not-ready. Mirrored by the cohortsync_line_stopped{reason}
// gauge (and, for the credentials and the configuration, by
// cohortsync_auth_failing).
func (c *Client) LineStopped() bool { return c.stopped.Load() }

// setStop sets or clears the client-wide stop for reason (stopAuth or
// stopConfig); clearing both is what an acceptance does. It reports
// whether the state changed.
func (c *Client) setStop(reason metrics.LineStopReason, on bool) bool {
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	changed := false
	switch {
	case on && reason == stopAuth:
		changed, c.stopAuth = !c.stopAuth, true
	case on && reason == stopConfig:
		changed, c.stopConfig = !c.stopConfig, true
	case !on:
		changed = c.stopAuth || c.stopConfig
		c.stopAuth, c.stopConfig = false, false
	}
	c.syncStop()
	return changed
}

// addStoppedBatch counts a Send in (+1) or out (-1) of the invalid-batch
// stop.
func (c *Client) addStoppedBatch(delta int) {
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	c.stopBatches += delta
	c.syncStop()
}

// syncStop updates the flag and the gauges; stopMu is held.
func (c *Client) syncStop() {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	c.stopped.Store(c.stopAuth || c.stopConfig || c.stopBatches > 0)
	c.m.AuthFailing.Set(b(c.stopAuth || c.stopConfig))
	c.m.LineStopped.WithLabelValues(string(stopAuth)).Set(b(c.stopAuth))
	c.m.LineStopped.WithLabelValues(string(stopConfig)).Set(b(c.stopConfig))
	c.m.LineStopped.WithLabelValues(string(stopInvalidBatch)).Set(b(c.stopBatches > 0))
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

// isolation is one isolating split: the evidence found so far, and the
// failed parts waiting for it.
type isolation struct {
	accepts      int      // parts accepted so far: evidence (b)
	lastAccepted string   // a member of the last part accepted (the canary)
	waiting      []failed // in member order, but for parts sent again
}

// failed is a part that got an isolable 4xx.
type failed struct {
	req  wire.Request
	serr *StatusError
	d    decision
	seq  int // isolation.accepts when it failed
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

// stopPause returns the pause before the next probe of a stopped line
// (reason), counts the probe, and doubles the pause after it, up to
// AuthRetryMaxInterval.
func (s *sender) stopPause(reason metrics.LineStopReason) time.Duration {
	d := s.stopWait
	if d == 0 {
		d = s.c.cfg.AuthRetryInterval
	}
	s.stopWait = min(2*d, s.c.cfg.AuthRetryMaxInterval)
	s.c.m.LineStoppedProbes.WithLabelValues(string(reason)).Inc()
	return d
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
			if len(req.UIDs) == 1 {
				reason := fmt.Sprintf("too large: the request for this member alone is %d bytes, over the %d-byte cap", size, c.cfg.MaxBodyBytes)
				s.log().Warn("member rejected: too large to send", "members", 1, "bytes", size, "max_bytes", c.cfg.MaxBodyBytes)
				s.reject(req.UIDs, reason)
				return nil
			}
			return s.deliverHalves(ctx, req, retry, iso) // never sent: not a retry
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

// isolate handles a part that got an isolable 4xx within iso: it is split
// further, or, without evidence yet while an earlier failure already waits
// for some, set aside in iso. A single member waits in iso unless the
// error names a member field (then deliver rejected it already).
func (s *sender) isolate(ctx context.Context, f failed, iso *isolation) error {
	if len(f.req.UIDs) == 1 || iso.accepts == 0 && !f.d.member && len(iso.waiting) > 0 {
		f.seq = iso.accepts
		iso.waiting = append(iso.waiting, f)
		return nil
	}
	s.log().Debug("the API rejected the request; splitting to isolate the members at fault",
		"err", f.serr, "status", f.serr.Code, "members", len(f.req.UIDs))
	return s.deliverHalves(ctx, f.req, f.d.reason, iso)
}

// isolateRoot runs the isolating split of f, a request that got an
// isolable 4xx outside any split. It rejects the single members whose
// failure is bracketed by evidence, and returns the members left
// unresolved, in member order (none when every member was accepted or
// rejected).
//
// Bracketed: a part of the split was accepted before the member failed
// alone, and one after. The first keeps an API fault that ends during the
// split from blaming the members that failed before it ended; a member
// that failed before any acceptance is sent alone once more. The second
// keeps a fault that starts during the split from blaming the members
// that fail after it started: if no part was accepted after such a
// member, a canary (one member already accepted, sent alone again, which
// changes nothing) is sent; if the canary fails too, those members stay
// unresolved.
func (s *sender) isolateRoot(ctx context.Context, f failed) ([]string, error) {
	iso := &isolation{}
	if err := s.isolate(ctx, f, iso); err != nil {
		return nil, err
	}
	for iso.accepts > 0 {
		// A part set aside for want of evidence: split it now.
		if i := slices.IndexFunc(iso.waiting, func(w failed) bool { return len(w.req.UIDs) > 1 }); i >= 0 {
			w := iso.waiting[i]
			iso.waiting = slices.Delete(iso.waiting, i, i+1)
			if err := s.isolate(ctx, w, iso); err != nil {
				return nil, err
			}
			continue
		}
		// A member that failed before any acceptance: send it again.
		if i := slices.IndexFunc(iso.waiting, func(w failed) bool { return w.seq == 0 }); i >= 0 {
			w := iso.waiting[i]
			iso.waiting = slices.Delete(iso.waiting, i, i+1)
			if err := s.deliver(ctx, w.req, "invalid", iso); err != nil {
				return nil, err
			}
			continue
		}
		// Members with no acceptance since they failed: the canary.
		if slices.ContainsFunc(iso.waiting, func(w failed) bool { return w.seq == iso.accepts }) {
			canary := f.req
			canary.UIDs = []string{iso.lastAccepted}
			serr, _, err := s.post(ctx, canary, "invalid")
			if err != nil {
				return nil, err
			}
			if serr == nil {
				iso.accepts++
			}
		}
		break
	}
	var pending []string
	for _, w := range iso.waiting {
		if w.seq > 0 && w.seq < iso.accepts {
			s.log().Warn("member rejected: it fails alone while other parts of its batch are accepted",
				"err", w.serr, "status", w.serr.Code, "members", 1)
			s.reject(w.req.UIDs, w.serr.summary())
			continue
		}
		pending = append(pending, w.req.UIDs...)
	}
	s.inOrder(pending)
	return pending, nil
}

// inOrder sorts uids, members of the batch, in the batch's order.
func (s *sender) inOrder(uids []string) {
	if s.pos == nil {
		s.pos = make(map[string]int, len(s.req.UIDs))
		for i, u := range s.req.UIDs {
			s.pos[u] = i
		}
	}
	if len(uids) < 2 {
		return
	}
	slices.SortStableFunc(uids, func(a, b string) int { return s.pos[a] - s.pos[b] })
}

// stopBatch stops the line for req, whose every part failed alike (serr the
// last answer), and waits (stopPause) before it is sent again.
func (s *sender) stopBatch(ctx context.Context, req wire.Request, serr *StatusError) error {
	c := s.c
	pause := s.stopPause(stopInvalidBatch)
	if !s.batchStopped {
		s.batchStopped = true
		c.addStoppedBatch(1)
	}
	if key := "invalid_batch|" + serr.dedupeKey(); key != s.lastKey {
		s.lastKey = key
		s.log().Error("the API rejects every part of the batch alike, with no evidence against any member: "+
			"the batch is stopped and retried slowly; nothing is dropped or committed",
			"err", serr, "status", serr.Code, "members", len(req.UIDs), "delay", pause)
	}
	if err := sleep(ctx, pause); err != nil {
		return s.stopped(req, -1, err, serr)
	}
	s.since = time.Now() // a stopped line does not count toward MaxElapsed
	return nil
}

// unstop ends this Send's invalid-batch stop, if any; resolved says the
// batch went through (logged) rather than Send returning.
func (s *sender) unstop(resolved bool) {
	if !s.batchStopped {
		return
	}
	s.batchStopped = false
	s.c.addStoppedBatch(-1)
	if resolved {
		s.log().Info("the stopped batch went through; sending resumed")
	}
}

// post sends req (one body) until an answer other than a retryable failure:
// it returns (nil, _, nil) when accepted, the answer and its classification
// for a 413 or another 4xx, and an error when ctx ended (or Lease.Wait
// failed) or Send gave up.
func (s *sender) post(ctx context.Context, req wire.Request, retry metrics.RetryReason) (*StatusError, decision, error) {
	c := s.c
	body := wire.AppendBody(make([]byte, 0, wire.Size(req)), req)
	var (
		last   error // the last failure of this body
		reload bool  // the last answer rejected the credentials
	)
	for attempt := 1; ; attempt++ {
		if err := s.hold(ctx, req); err != nil {
			return nil, decision{}, s.stopped(req, attempt-1, err, last)
		}
		lease, permitAt, err := s.ready(ctx)
		if err != nil {
			return nil, decision{}, s.stopped(req, attempt-1, err, last)
		}
		if reload {
			c.reloadKey() // a secret rotated during the wait
		}
		if retry != "" {
			c.m.Retries.WithLabelValues(string(retry)).Inc()
		}
		serr, err := c.attempt(ctx, req, body, lease, permitAt)
		if serr == nil && err == nil {
			s.accepted(req, attempt)
			return nil, decision{}, nil
		}
		if u := asUnknown(err); u != nil {
			c.noteUnknown(req, u.sentAt)
		}
		f := s.statusFailStreak(newFailure(serr, err))
		d := f.d
		switch d.kind {
		case splitHalves, rejectAll, isolate: // the request itself: the caller's
			return serr, d, nil
		}
		reload = d.kind == stopLine && isAuthError(serr)
		delay := s.delay(f, req, attempt, reload)
		retry, last = d.reason, f.cause
		if err := s.retrying(f, req, attempt, delay); err != nil {
			return nil, decision{}, err
		}
		if err := s.wait(ctx, delay, d.kind == retryPause); err != nil {
			return nil, decision{}, s.stopped(req, attempt, err, last)
		}
		if d.kind == stopLine || d.kind == retryNow {
			s.since = time.Now() // a stopped line, or a lease wait, does not count toward MaxElapsed
		}
	}
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
	if f.d.reason != metrics.RetryStatusFail {
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
// the credentials; a new key is tried at once), stops the line and logs
// it loudly, once per new failure.
func (s *sender) delay(f failure, req wire.Request, attempt int, reload bool) time.Duration {
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
		if reload && s.c.reloadKey() {
			delay = 0 // try the new key at once
		}
		if s.c.setStop(f.d.stop, true) || f.key != s.lastKey {
			s.lastKey = f.key
			s.log().Error(configMessage(f.serr), "err", f.serr, "status", f.status, "attempt", attempt,
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
func (s *sender) ready(ctx context.Context) (lease, permitAt time.Time, err error) {
	for {
		if lease, err = s.lease(ctx); err != nil {
			return time.Time{}, time.Time{}, err
		}
		if permitAt.IsZero() || time.Since(permitAt) > permitMaxAge {
			if err = s.permit(ctx); err != nil {
				return time.Time{}, time.Time{}, err
			}
			permitAt = time.Now()
		}
		if s.c.leaseHolds(lease) {
			return lease, permitAt, nil
		}
	}
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

// lease waits for a valid lease and returns its deadline (zero: none, or no
// Lease).
func (s *sender) lease(ctx context.Context) (time.Time, error) {
	l := s.c.cfg.Lease
	if l == nil {
		return time.Time{}, nil
	}
	for {
		d, err := l.Wait(ctx)
		if err != nil {
			return time.Time{}, fmt.Errorf("lease: %w", err)
		}
		s.c.fence.extend(d)
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
	if s.c.setStop("", false) {
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
func (s *sender) permit(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	lim := s.c.cfg.Limiter
	if lim == nil {
		return nil
	}
	start := time.Now()
	err := lim.Wait(ctx)
	s.c.m.RateLimitWait.Add(time.Since(start).Seconds())
	return err
}

// wait spends the delay before the next attempt. A 429's delay pauses the
// shared Limiter (the next permit then waits it out); without a Limiter it
// is slept here, and counted as rate-limit wait.
func (s *sender) wait(ctx context.Context, d time.Duration, pause bool) error {
	if pause {
		if lim := s.c.cfg.Limiter; lim != nil {
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
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
