package sink

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
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
	DefaultUserAgent         = "cohortsync-worker"
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
	// rather than drops. Time spent while the credentials are rejected
	// does not count (those are retried forever).
	MaxElapsed time.Duration
	// AuthRetryInterval is the pause between attempts while the API answers
	// 401, 403, 415, 404, 405 or a 3xx (wrong credentials or configuration);
	// 0 means 30s.
	AuthRetryInterval time.Duration
	// UserAgent is the User-Agent header; "" means "cohortsync-worker".
	UserAgent string
	// ReplicaID, when set, is sent as the X-Cohortsync-Replica header (the
	// emulator's request log records it).
	ReplicaID string
	// HTTPClient sends the requests. nil means a pooled client
	// (MaxIdleConnsPerHost 32) with no overall Timeout, since attempts
	// have their own. Redirects are never followed, whoever built the
	// client (New uses a copy with its own CheckRedirect): a 3xx means a
	// wrong BaseURL, and following it would turn the POST into a GET or
	// carry the credentials to another host.
	HTTPClient *http.Client
	// Limiter gives the permits for every attempt after the first (the
	// caller takes the first) and is paused on a 429. nil means unlimited
	// (a 429 then only delays the Send that got it).
	Limiter *Limiter
	// Logger receives the client's logs, with component=sink. nil means
	// slog.Default().
	Logger *slog.Logger
	// Metrics receives the request metrics. nil means an unregistered set.
	Metrics *metrics.Metrics
}

// Validate reports the first problem with c. Its errors never contain the
// API key (nor a password in BaseURL).
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
	case c.AttemptTimeout < 0, c.InitialInterval < 0, c.MaxInterval < 0, c.MaxElapsed < 0, c.AuthRetryInterval < 0:
		return errors.New("sink: a timeout or interval is negative")
	case strings.ContainsFunc(c.UserAgent+c.ReplicaID, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("sink: UserAgent and ReplicaID must not contain control characters")
	}
	return nil
}

// Client sends batches to the Cohort Sync API. It is safe for concurrent use
// by any number of Sends (one per cohort, say); each Send has at most one
// request in flight.
type Client struct {
	cfg     Config
	url     string
	secrets []string // scrubbed from server-sent strings
	log     *slog.Logger
	m       *metrics.Metrics

	hvAuth, hvAppKey, hvUserAgent, hvReplica []string // header values, read-only

	authFailing atomic.Bool
	authMu      sync.Mutex // orders the flag and the gauge together
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
	if cfg.MaxInterval < cfg.InitialInterval {
		cfg.MaxInterval = cfg.InitialInterval
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient()
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
	cred := base64.StdEncoding.EncodeToString([]byte(cfg.WorkspaceID + ":" + cfg.APIKey))
	c := &Client{
		cfg:         cfg,
		url:         strings.TrimRight(cfg.BaseURL, "/") + Path,
		secrets:     []string{cfg.APIKey, cred},
		log:         cfg.Logger.With("component", "sink"),
		m:           cfg.Metrics,
		hvAuth:      []string{"Basic " + cred},
		hvAppKey:    []string{cfg.WorkspaceID},
		hvUserAgent: []string{cfg.UserAgent},
	}
	if cfg.ReplicaID != "" {
		c.hvReplica = []string{cfg.ReplicaID}
	}
	return c, nil
}

// CloseIdleConnections closes the HTTP client's idle connections; call it
// when the Client is no longer used.
func (c *Client) CloseIdleConnections() { c.cfg.HTTPClient.CloseIdleConnections() }

// AuthFailing reports whether the API currently rejects the credentials or
// the configuration (401, 403, 415, 404, 405, 3xx): Sends are stopped,
// retrying every AuthRetryInterval, until one gets a 2xx. The worker reports
// not-ready meanwhile. Mirrored by the cohortsync_auth_failing gauge.
func (c *Client) AuthFailing() bool { return c.authFailing.Load() }

func (c *Client) setAuthFailing(failing bool) bool {
	if c.authFailing.Load() == failing {
		return false
	}
	c.authMu.Lock()
	defer c.authMu.Unlock()
	if !c.authFailing.CompareAndSwap(!failing, failing) {
		return false
	}
	if failing {
		c.m.AuthFailing.Set(1)
	} else {
		c.m.AuthFailing.Set(0)
	}
	return true
}

// envelopeAttrs are the request fields outside the members: a 4xx naming one
// of them concerns the whole batch, so splitting cannot isolate anything.
var envelopeAttrs = map[string]bool{"action": true, "partner": true, "parameters": true,
	"cohort_name": true, "cohort_id": true, "cohort_description": true}

// authTypes are error types that mean the credentials are wrong whatever the
// status (the Data API documents "Authentication Mismatch" as a 409).
var authTypes = map[string]bool{"Authentication Mismatch": true, "Authentication required": true}

// Send delivers one batch, req, and returns once every member of it has been
// either accepted by a 2xx or rejected on its own by the API. Rejected
// members come back as Rejections, for the caller to dead-letter; the error
// is then nil. A non-nil error means the batch was not (entirely) delivered:
// nothing of it may be acknowledged, and the rejections are not returned. A
// request with no members sends nothing and returns nil.
//
// Permits: the caller already holds a Limiter permit for the first attempt;
// every further attempt (a retry, or each part of a split) first takes one
// with Limiter.Wait. Time spent there, and in 429 pauses, is added to the
// rate-limit wait metric.
//
// Size: a body larger than MaxBodyBytes is never sent; it is split in halves
// first (not counted as a retry), and a member whose request alone is too
// large is rejected without being sent.
//
// Outcomes, per answer (DESIGN.md "Retry policy"):
//   - 2xx: accepted, whatever the body.
//   - 429: the Limiter is paused (PauseUntil) for the server's delay
//     (RetryAfter: Retry-After, else x-ratelimit-reset), else the next
//     backoff interval; then the same body is retried.
//   - 408, 5xx, connection error, attempt timeout: the same body is retried
//     after the next backoff interval (exponential with jitter, one
//     backoff.ExponentialBackOff per Send, Reset after progress); a
//     Retry-After on such an answer raises the delay to it.
//   - 413: the members are split in halves, sent in order; a single member
//     that still gets a 413 is rejected ("413 ...: ... too large ...").
//   - Another 4xx (400, 409, 422, ...): if the error's attribute names an
//     envelope field (action, partner, parameters, cohort_name, cohort_id,
//     cohort_description), or the request has one member, every member is
//     rejected with the reason "<status> <type>: <message>". Otherwise the
//     members are split in halves, recursively, to isolate the ones the API
//     rejects on their own; the rest are accepted by the successful halves.
//   - 401, 403, 415 (a bug in the worker), 404, 405 and 3xx (a wrong base
//     URL), and any 4xx whose type is "Authentication required" or
//     "Authentication Mismatch": the credentials or the configuration are
//     wrong. Send logs it at error level, marks the client AuthFailing, and
//     retries the same body every AuthRetryInterval, forever: it never
//     rejects and never returns success before a 2xx, which clears
//     AuthFailing.
//
// Ordering: the parts of a split are sent one after the other, in member
// order, and Send never has more than one request in flight.
//
// Cancellation: when ctx ends, Send stops retrying (and sends no further
// part) and returns an error wrapping ctx.Err(). An HTTP attempt already
// under way is NOT aborted: it runs under context.WithoutCancel(ctx) and
// AttemptTimeout, so that a request for a revoked partition is never left
// half-sent, with an unknown outcome, while the partition's new owner
// sends. Cancellation therefore takes up to AttemptTimeout. If that last
// attempt is accepted and completes the batch, Send returns nil.
//
// Giving up: with MaxElapsed > 0, Send returns an error wrapping ErrGaveUp
// and the last failure (a *StatusError, or the network error) rather than
// start a wait that would end more than MaxElapsed after the last progress;
// auth failures never give up.
//
// Every request is a POST with Content-Type: application/json,
// Authorization: Basic base64(workspace:key), MOE-APPKEY: workspace and
// User-Agent (never MOE-DESTINATION-PARTNER). Response bodies are always
// drained (up to 128 KiB) and closed, so connections are reused.
func (c *Client) Send(ctx context.Context, req wire.Request) ([]wire.Rejection, error) {
	s := &sender{c: c, req: req, first: true, since: time.Now()}
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
	if err := s.deliver(ctx, req, ""); err != nil {
		return nil, err
	}
	return s.rejected, nil
}

// sender is the state of one Send. It is used by one goroutine.
type sender struct {
	c        *Client
	req      wire.Request // the whole batch
	bo       backoff.ExponentialBackOff
	logger   *slog.Logger // built on first use: most Sends log nothing
	first    bool         // the caller's permit is not used yet
	since    time.Time    // last progress, for MaxElapsed
	rejected []wire.Rejection
	lastKey  string // the failure last logged, to log a repeating one once
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
func (s *sender) deliverHalves(ctx context.Context, req wire.Request, retry string) error {
	a, b := split(req)
	if err := s.deliver(ctx, a, retry); err != nil {
		return err
	}
	return s.deliver(ctx, b, retry)
}

func (s *sender) reject(uids []string, reason string) {
	for _, u := range uids {
		s.rejected = append(s.rejected, wire.Rejection{UID: u, Reason: reason})
	}
	s.progress()
}

// progress restarts the backoff and the MaxElapsed clock.
func (s *sender) progress() {
	s.bo.Reset()
	s.since = time.Now()
}

// deliver sends req until each of its members is accepted or rejected. retry
// is the Retries reason to count for its first attempt ("" if these members
// were never sent).
func (s *sender) deliver(ctx context.Context, req wire.Request, retry string) error {
	c := s.c
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
		return s.deliverHalves(ctx, req, retry) // never sent: not a retry
	}
	body := wire.AppendBody(make([]byte, 0, wire.Size(req)), req)
	var last error // the last failure of this part
	for attempt := 1; ; attempt++ {
		if err := s.permit(ctx); err != nil {
			return s.stopped(req, attempt-1, err, last)
		}
		if retry != "" {
			c.m.Retries.WithLabelValues(retry).Inc()
		}
		serr, err := c.attempt(ctx, req, body)
		if serr == nil && err == nil {
			s.accepted(req, attempt)
			return nil
		}

		var (
			delay  time.Duration
			status int
			key    string
			cause  error
			pause  bool // a 429: pause the Limiter rather than sleep
		)
		if err != nil {
			cause, key = err, err.Error()
			retry = "network"
			if isTimeout(err) {
				retry = "timeout"
			}
			delay = s.bo.NextBackOff()
		} else {
			cause, key, status = serr, serr.dedupeKey(), serr.Code
			switch code := serr.Code; {
			case code == http.StatusTooManyRequests:
				retry, pause = "rate_limited", true
				delay = serr.RetryAfter
				if delay <= 0 {
					delay = s.bo.NextBackOff()
				}
			case code == http.StatusRequestTimeout || code >= 500:
				retry = "server_error"
				if code == http.StatusRequestTimeout {
					retry = "timeout"
				}
				delay = max(s.bo.NextBackOff(), serr.RetryAfter)
			case isConfigError(serr):
				retry, delay = "auth", c.cfg.AuthRetryInterval
				if c.setAuthFailing(true) || key != s.lastKey {
					s.lastKey = key
					s.log().Error(configMessage(serr), "err", serr, "status", code, "attempt", attempt,
						"delay", delay, "members", len(req.UIDs))
				}
			case code == http.StatusRequestEntityTooLarge:
				if len(req.UIDs) == 1 {
					reason := serr.summary() + " (too large even for this member alone)"
					s.log().Warn("member rejected by the API: too large", "err", serr, "status", code, "members", 1)
					s.reject(req.UIDs, reason)
					return nil
				}
				s.log().Debug("payload too large; splitting", "err", serr, "status", code, "members", len(req.UIDs))
				return s.deliverHalves(ctx, req, "too_large")
			default: // another 4xx: the request is invalid
				if envelopeAttrs[serr.Attribute] || len(req.UIDs) == 1 {
					s.log().Warn("the API rejected the request; its members are rejected", "err", serr,
						"status", code, "attempt", attempt, "members", len(req.UIDs))
					s.reject(req.UIDs, serr.summary())
					return nil
				}
				s.log().Debug("the API rejected the request; splitting to isolate the members at fault",
					"err", serr, "status", code, "members", len(req.UIDs))
				return s.deliverHalves(ctx, req, "invalid")
			}
		}
		last = cause

		if retry != "auth" && c.cfg.MaxElapsed > 0 && time.Since(s.since)+delay > c.cfg.MaxElapsed {
			s.log().Error("giving up: no progress within MaxElapsed", "err", cause, "status", status,
				"attempt", attempt, "members", len(req.UIDs), "max_elapsed", c.cfg.MaxElapsed)
			return fmt.Errorf("%w: cohort %s %s, %d members, after %d attempts: %w",
				ErrGaveUp, req.CohortID, req.Action, len(req.UIDs), attempt, cause)
		}
		if retry != "auth" && key != s.lastKey {
			s.lastKey = key
			s.log().Warn("cohortsync request failed; retrying", "err", cause, "status", status, "reason", retry,
				"attempt", attempt, "delay", delay, "members", len(req.UIDs))
		}
		if err := s.wait(ctx, delay, pause); err != nil {
			return s.stopped(req, attempt, err, last)
		}
		if retry == "auth" {
			s.since = time.Now() // an auth outage does not count toward MaxElapsed
		}
	}
}

// accepted records a 2xx for req.
func (s *sender) accepted(req wire.Request, attempt int) {
	s.progress()
	if s.c.setAuthFailing(false) {
		s.log().Info("the API accepts the credentials again; sending resumed", "attempt", attempt)
	}
	if s.lastKey != "" {
		s.lastKey = ""
		s.log().Info("cohortsync request succeeded after retrying", "attempt", attempt, "members", len(req.UIDs))
	}
}

// permit takes a rate-limit permit, except for the caller's first attempt.
// It fails once ctx has ended, even without a Limiter: no new attempt starts
// after cancellation.
func (s *sender) permit(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.first {
		s.first = false
		return nil
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

// stopped is the error for a Send ended by ctx: it wraps ctx's error and the
// last failure.
func (s *sender) stopped(req wire.Request, attempts int, err, last error) error {
	if last == nil {
		return fmt.Errorf("sink: send cohort %s %s, %d members: stopped after %d attempts: %w",
			req.CohortID, req.Action, len(req.UIDs), attempts, err)
	}
	return fmt.Errorf("sink: send cohort %s %s, %d members: stopped after %d attempts: %w (last failure: %w)",
		req.CohortID, req.Action, len(req.UIDs), attempts, err, last)
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

// isConfigError reports whether an answer means that the credentials or the
// configuration are wrong, so that no request can succeed until an operator
// acts: retried slowly, forever; never a rejection.
func isConfigError(e *StatusError) bool {
	switch {
	case e.Code == http.StatusUnauthorized, e.Code == http.StatusForbidden,
		e.Code == http.StatusUnsupportedMediaType, e.Code == http.StatusNotFound,
		e.Code == http.StatusMethodNotAllowed:
		return true
	case e.Code >= 300 && e.Code < 400:
		return true
	case e.Code >= 400 && e.Code < 500 && authTypes[e.Type]:
		return true
	}
	return false
}

// configMessage is the loud log line for a configuration error.
func configMessage(e *StatusError) string {
	switch {
	case e.Code == http.StatusUnsupportedMediaType:
		return "the API rejects the request's content type: this is a bug in the worker; sending is stopped, nothing is dropped or committed"
	case e.Code == http.StatusNotFound || e.Code == http.StatusMethodNotAllowed || e.Code >= 300 && e.Code < 400:
		return "the API endpoint is wrong: check MOENGAGE_BASE_URL / MOENGAGE_DC; sending is stopped, nothing is dropped or committed"
	default:
		return "the API rejects the credentials (workspace ID and data API key) or the account is suspended; sending is stopped, nothing is dropped or committed"
	}
}
