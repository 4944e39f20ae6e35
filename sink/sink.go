package sink

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Path is the Cohort Sync endpoint, relative to the base URL.
const Path = "/v1/integrations/cohortsync"

// ErrGaveUp is returned by Send when MaxElapsed passed without success.
var ErrGaveUp = errors.New("sink: gave up retrying")

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	BaseURL           string        // scheme://host[:port][/prefix]; requests go to BaseURL + Path
	WorkspaceID       string        // Basic-auth username and MOE-APPKEY header
	APIKey            string        // Basic-auth password; never logged, never in errors
	MaxBodyBytes      int           // a larger body is split before sending; default 128000
	AttemptTimeout    time.Duration // per HTTP attempt; default 15s
	InitialInterval   time.Duration // backoff; default 500ms
	MaxInterval       time.Duration // default 60s
	MaxElapsed        time.Duration // 0: retry forever (on purpose: at-least-once blocks rather than drops)
	AuthRetryInterval time.Duration // pause between attempts while credentials are rejected; default 30s
	UserAgent         string        // default "cohortsync-worker"
	ReplicaID         string        // sent as X-Cohortsync-Replica when set
	HTTPClient        *http.Client  // default: a pooled client without an overall timeout
	Limiter           *Limiter      // permits for every attempt after the first; nil: unlimited
	Logger            *slog.Logger
	Metrics           *metrics.Metrics
}

// Validate checks the configuration.
func (c Config) Validate() error {
	u, err := url.Parse(c.BaseURL)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("sink: base URL %q is not an http(s) URL", c.BaseURL)
	case c.WorkspaceID == "":
		return errors.New("sink: workspace ID is required")
	case c.APIKey == "":
		return errors.New("sink: API key is required")
	case c.MaxBodyBytes < 0 || c.AttemptTimeout < 0 || c.InitialInterval < 0 || c.MaxInterval < 0 || c.MaxElapsed < 0 || c.AuthRetryInterval < 0:
		return errors.New("sink: negative limit")
	}
	return nil
}

// Client sends batches to the Cohort Sync API. It is safe for concurrent use.
type Client struct {
	cfg         Config
	url         string
	auth        string
	log         *slog.Logger
	m           *metrics.Metrics
	authFailing atomic.Bool
}

// New returns a Client.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.AttemptTimeout, 15*time.Second)
	def(&cfg.InitialInterval, 500*time.Millisecond)
	def(&cfg.MaxInterval, 60*time.Second)
	def(&cfg.AuthRetryInterval, 30*time.Second)
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 128000
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "cohortsync-worker"
	}
	if cfg.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 32
		cfg.HTTPClient = &http.Client{Transport: t}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewMetrics(nil)
	}
	return &Client{
		cfg:  cfg,
		url:  strings.TrimRight(cfg.BaseURL, "/") + Path,
		auth: "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.WorkspaceID+":"+cfg.APIKey)),
		log:  cfg.Logger.With("component", "sink"),
		m:    cfg.Metrics,
	}, nil
}

// CloseIdleConnections closes the HTTP client's idle connections; call it
// when the client is no longer used.
func (c *Client) CloseIdleConnections() { c.cfg.HTTPClient.CloseIdleConnections() }

// AuthFailing reports whether the API is rejecting the credentials (or the
// configuration): sending is stopped until a request is accepted again.
func (c *Client) AuthFailing() bool { return c.authFailing.Load() }

// StatusError is a non-2xx answer from the API. Its text never holds the
// API key.
type StatusError struct {
	Code       int
	Type       string
	Message    string
	Attribute  string
	RequestID  string
	RetryAfter time.Duration // from Retry-After or x-ratelimit-reset; 0 if absent
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("cohortsync API answered %d", e.Code)
	if e.Type != "" || e.Message != "" {
		s += fmt.Sprintf(" %s: %s", e.Type, e.Message)
	}
	if e.Attribute != "" {
		s += " (attribute " + e.Attribute + ")"
	}
	if e.RequestID != "" {
		s += " request_id " + e.RequestID
	}
	return s
}

// envelopeAttrs are the request fields outside members: an error about one
// of them concerns the whole batch.
var envelopeAttrs = map[string]bool{"action": true, "partner": true, "parameters": true,
	"cohort_name": true, "cohort_id": true, "cohort_description": true}

// Send delivers one batch; see the package doc and DESIGN.md's retry table.
//
// The caller holds a Limiter permit for the first attempt; every further
// attempt (a retry, or each part of a split) takes one first. Send returns
// nil once every member of req was accepted by a 2xx or rejected on its own
// (returned as Rejections, to be dead-lettered). Parts of a split are sent
// one after the other, in member order: Send never has more than one
// request in flight.
//
// When ctx ends, Send stops retrying and returns an error wrapping
// ctx.Err(); an HTTP attempt already under way is not aborted (it runs
// under AttemptTimeout only), so that a fenced replica never leaves a
// request half-sent while the partition's new owner sends.
func (c *Client) Send(ctx context.Context, req wire.Request) ([]wire.Rejection, error) {
	s := &send{c: c, start: time.Now(), first: true}
	s.bo = backoff.NewExponentialBackOff()
	s.bo.InitialInterval = c.cfg.InitialInterval
	s.bo.MaxInterval = c.cfg.MaxInterval
	s.bo.MaxElapsedTime = 0 // MaxElapsed is checked here, across splits
	s.bo.Reset()
	err := s.deliver(ctx, req)
	return s.rejected, err
}

// send is the state of one Send call.
type send struct {
	c        *Client
	bo       *backoff.ExponentialBackOff
	start    time.Time
	first    bool // the caller's permit is unused
	rejected []wire.Rejection
	lastErr  string
}

func (s *send) rejectAll(uids []string, reason string) {
	for _, u := range uids {
		s.rejected = append(s.rejected, wire.Rejection{UID: u, Reason: reason})
	}
}

func split(req wire.Request) (wire.Request, wire.Request) {
	mid := len(req.UIDs) / 2
	a, b := req, req
	a.UIDs, b.UIDs = req.UIDs[:mid:mid], req.UIDs[mid:]
	return a, b
}

func (s *send) deliverParts(ctx context.Context, req wire.Request) error {
	a, b := split(req)
	if err := s.deliver(ctx, a); err != nil {
		return err
	}
	return s.deliver(ctx, b)
}

// deliver sends req until every member is accepted or rejected.
func (s *send) deliver(ctx context.Context, req wire.Request) error {
	c := s.c
	if len(req.UIDs) == 0 {
		return nil
	}
	if wire.Size(req) > c.cfg.MaxBodyBytes {
		if len(req.UIDs) == 1 {
			s.rejectAll(req.UIDs, fmt.Sprintf("the request for this member alone exceeds %d bytes", c.cfg.MaxBodyBytes))
			return nil
		}
		return s.deliverParts(ctx, req)
	}
	body := wire.AppendBody(make([]byte, 0, wire.Size(req)), req)
	log := c.log.With("cohort_id", req.CohortID, "action", req.Action, "members", len(req.UIDs))
	for attempt := 1; ; attempt++ {
		if err := s.permit(ctx); err != nil {
			return err
		}
		serr, err := c.attempt(ctx, req, body)
		if err == nil && serr == nil {
			if c.authFailing.CompareAndSwap(true, false) {
				c.m.AuthFailing.Set(0)
				c.log.Info("the API accepts the credentials again; sending resumed")
			}
			s.bo.Reset()
			return nil
		}
		var delay time.Duration
		var reason string
		switch {
		case err != nil:
			reason, delay = "network", s.bo.NextBackOff()
			if errors.Is(err, context.DeadlineExceeded) {
				reason = "timeout"
			}
		case serr.Code == http.StatusTooManyRequests:
			reason = "rate_limited"
			delay = serr.RetryAfter
			if delay <= 0 {
				delay = s.bo.NextBackOff()
			}
			if c.cfg.Limiter != nil {
				c.cfg.Limiter.PauseUntil(time.Now().Add(delay))
				delay = 0 // the permit waits out the pause
			}
		case serr.Code == http.StatusRequestTimeout || serr.Code >= 500:
			reason, delay = "server_error", s.bo.NextBackOff()
		case serr.Code == http.StatusRequestEntityTooLarge:
			c.m.Retries.WithLabelValues("too_large").Inc()
			if len(req.UIDs) == 1 {
				s.rejectAll(req.UIDs, serr.Error())
				return nil
			}
			return s.deliverParts(ctx, req)
		case serr.Code == 401 || serr.Code == 403 || serr.Code == 415 || serr.Code == 404 || serr.Code == 405:
			reason, delay = "auth", c.cfg.AuthRetryInterval
			if c.authFailing.CompareAndSwap(false, true) {
				c.m.AuthFailing.Set(1)
			}
			msg := "the API rejects the credentials; sending stopped, nothing is dropped or committed"
			if serr.Code == 415 {
				msg = "the API rejects the request's content type: a bug in the worker; sending stopped"
			} else if serr.Code == 404 || serr.Code == 405 {
				msg = "the API endpoint was not found: check MOENGAGE_BASE_URL / MOENGAGE_DC; sending stopped"
			}
			if serr.Error() != s.lastErr {
				log.Error(msg, "err", serr, "status", serr.Code, "retry_in", delay)
			}
		default: // other 4xx: the request is invalid
			c.m.Retries.WithLabelValues("invalid").Inc()
			if envelopeAttrs[serr.Attribute] || len(req.UIDs) == 1 {
				log.Warn("the API rejected the batch; dead-lettering its members", "err", serr, "status", serr.Code)
				s.rejectAll(req.UIDs, serr.Error())
				return nil
			}
			return s.deliverParts(ctx, req)
		}
		cause := err
		if cause == nil {
			cause = serr
		}
		if c.cfg.MaxElapsed > 0 && time.Since(s.start)+delay > c.cfg.MaxElapsed {
			return fmt.Errorf("%w after %d attempts: %w", ErrGaveUp, attempt, cause)
		}
		c.m.Retries.WithLabelValues(reason).Inc()
		if cause.Error() != s.lastErr {
			s.lastErr = cause.Error()
			if reason != "auth" {
				log.Warn("request failed; retrying", "err", cause, "reason", reason, "attempt", attempt, "delay", delay)
			}
		}
		if err := sleep(ctx, delay); err != nil {
			return fmt.Errorf("sink: stopped retrying cohort %s: %w", req.CohortID, err)
		}
	}
}

// permit takes a rate-limit permit, except for the very first attempt.
func (s *send) permit(ctx context.Context) error {
	if s.first {
		s.first = false
		return nil
	}
	if s.c.cfg.Limiter == nil {
		return nil
	}
	start := time.Now()
	err := s.c.cfg.Limiter.Wait(ctx)
	s.c.m.RateLimitWait.Add(time.Since(start).Seconds())
	if err != nil {
		return fmt.Errorf("sink: waiting for a rate-limit permit: %w", err)
	}
	return nil
}

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

// attempt makes one HTTP request. It returns a *StatusError for a non-2xx
// answer and an error when there was no answer.
func (c *Client) attempt(ctx context.Context, req wire.Request, body []byte) (*StatusError, error) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.AttemptTimeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(actx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("sink: build request: %w", err)
	}
	h := hreq.Header
	h.Set("Content-Type", "application/json")
	h.Set("Authorization", c.auth)
	h.Set("MOE-APPKEY", c.cfg.WorkspaceID)
	h.Set("User-Agent", c.cfg.UserAgent)
	if c.cfg.ReplicaID != "" {
		h.Set("X-Cohortsync-Replica", c.cfg.ReplicaID)
	}
	start := time.Now()
	resp, err := c.cfg.HTTPClient.Do(hreq)
	c.m.RequestDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		c.m.Requests.WithLabelValues(string(req.Action), "0").Inc()
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is safe, but keep errors short
		}
		var nerr net.Error
		if errors.As(err, &nerr) && nerr.Timeout() {
			return nil, fmt.Errorf("sink: POST %s: %w", Path, context.DeadlineExceeded)
		}
		return nil, fmt.Errorf("sink: POST %s: %w", Path, err)
	}
	defer resp.Body.Close()
	c.m.Requests.WithLabelValues(string(req.Action), metrics.Code(resp.StatusCode)).Inc()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10) // drain so the connection is reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil, nil
	}
	serr := &StatusError{Code: resp.StatusCode, RetryAfter: retryAfter(resp.Header, time.Now())}
	var env struct {
		Error struct {
			Attribute string `json:"attribute"`
			Message   string `json:"message"`
			Type      string `json:"type"`
			RequestID string `json:"request_id"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &env) == nil {
		serr.Type, serr.Message = env.Error.Type, env.Error.Message
		serr.Attribute, serr.RequestID = env.Error.Attribute, env.Error.RequestID
	}
	return serr, nil
}

// retryAfter reads the server's requested delay: Retry-After (seconds or an
// HTTP date), else x-ratelimit-reset (a value below 1e9 is seconds from now,
// a larger one UTC epoch seconds). It returns 0 when neither is usable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 {
			return time.Duration(n * float64(time.Second))
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(t.Sub(now), 0)
		}
	}
	if v := strings.TrimSpace(h.Get("x-ratelimit-reset")); v != "" {
		if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 {
			if n < 1e9 {
				return time.Duration(n * float64(time.Second))
			}
			return max(time.Unix(int64(n), 0).Sub(now), 0)
		}
	}
	return 0
}
