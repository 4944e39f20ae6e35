package sink

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

const (
	// readLimit bounds how much of a response body is parsed, and then
	// how much more is drained so that the connection can be reused. A
	// larger body costs the connection, never memory.
	readLimit = 64 << 10
	// maxField bounds each string taken from an error envelope.
	maxField = 512
	// redacted replaces the API key wherever the server echoes it.
	redacted = "[REDACTED]"
)

// Header values, built once; never modified after.
var (
	hvJSON = []string{"application/json"}
)

// noRedirect makes an http.Client return a 3xx as the answer. A 3xx on this
// POST means a wrong base URL; following it would turn the POST into a GET
// (301/302/303) or send the credentials on to another host.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// NewTransport returns the transport of the worker's API client, before
// the fence: net/http's default transport (a proxy from HTTPS_PROXY,
// HTTP_PROXY and NO_PROXY, http.ProxyFromEnvironment; TLS 1.2 or later with
// the system roots) with a larger pool. `cohortsync-worker check` sends its
// probe through one too, so that it reaches the API exactly as the worker
// does.
//
// It speaks HTTP/1.1 only, never HTTP/2. An HTTP/2 transport resends a
// request on its own after REFUSED_STREAM or a GOAWAY (and, after some
// protocol errors, resends it on a new connection), below Send: that
// resend takes no rate-limit permit and is not an attempt the lease
// watches, so the fleet could go over its budget and a resend could land
// after the lease lapsed. Over HTTP/1.1 net/http resends a POST only
// when nothing of it was written (a reused connection found closed), and
// every connection carries one request at a time, so each request that
// reaches the API is exactly one of Send's attempts, with its permit, and
// the fence of a connection concerns only that request. The cost, one
// connection per request in flight (at most MAX_IN_FLIGHT, a few hundred
// requests a minute), is nothing next to the budget.
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ForceAttemptHTTP2 = false
	// A non-nil, empty TLSNextProto disables HTTP/2 (net/http docs); the
	// ALPN offer is then http/1.1 only.
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP1(true)
	t.MaxIdleConns = 100
	t.MaxIdleConnsPerHost = 32
	t.IdleConnTimeout = 90 * time.Second
	return t
}

// defaultHTTPClient is a pooled client (MaxIdleConnsPerHost 32) without an
// overall timeout (every attempt has its own) whose connections check f
// before every write (fencedConn).
func defaultHTTPClient(f *fence) *http.Client {
	t := NewTransport()
	t.DialContext = fencedDialer((&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext, f)
	return &http.Client{Transport: t, CheckRedirect: noRedirect}
}

// attempt makes one HTTP request with body. It returns (nil, nil) for an
// acceptance, a *StatusError for another answer (a non-2xx, or a 2xx whose
// body says "status": "fail"), and an error when there was no answer
// (connection error, attempt timeout, errLeaseExpired).
//
// The request runs under context.WithoutCancel(ctx) and AttemptTimeout:
// cancelling ctx does not abort it (see Send). The client also gives up on
// it when the lease lapses while it runs: at lease (the expiry it started
// with; zero: none) and at each later expiry the lease is asked again
// (watchLease), so that a healthy replica, whose lease is renewed several
// times a second, waits out a slow answer, and a replica that lost its
// proof does not.
//
// permitAt is when the attempt's permit was granted: a permit older than
// permitMaxAge is taken anew right before the request is handed to the
// HTTP client and, with the default one, right before its first byte is
// written (after the dial and TLS). A failure with no answer after the
// request may have reached the API is an *unknownOutcome.
func (c *Client) attempt(ctx context.Context, req wire.Request, to *dest, body []byte, lease, permitAt time.Time) (*StatusError, error) {
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.AttemptTimeout)
	defer cancel()
	actx, lapse := context.WithCancelCause(tctx)
	defer lapse(nil)
	if !lease.IsZero() && c.cfg.Lease != nil {
		defer c.watchLease(actx, func() { lapse(errLeaseExpired) }, lease)()
	}
	st := &attemptState{c: c, ctx: actx, permitAt: permitAt, lim: c.limiterFor(req.Workspace)}
	defer st.done.Store(true)
	hreq, err := c.newRequest(st.trace(actx), to, body)
	if err != nil {
		return nil, err
	}
	// The last checks for a caller's HTTP client; the default one checks
	// again right before each write (fencedConn).
	if err := c.freshen(actx, st.lim, &st.permitAt); err != nil {
		c.countRequest(req, to, "0")
		return nil, fmt.Errorf("sink: waiting for a fresh permit: %w", err)
	}
	if err := c.fence.check(); err != nil {
		c.countRequest(req, to, "0")
		return nil, err
	}
	start := time.Now()
	c.m.WorkspaceChanges.WithLabelValues(to.ws, "sent").Add(float64(len(req.UIDs)))
	resp, err := c.cfg.HTTPClient.Do(hreq)
	if err != nil {
		return nil, c.noAnswer(req, to, st, start, err)
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, readLimit))
	_, _ = io.CopyN(io.Discard, resp.Body, readLimit) // drain, so the connection is reused
	resp.Body.Close()
	c.m.RequestDuration.Observe(time.Since(start).Seconds())
	serr := &StatusError{Code: resp.StatusCode,
		RetryAfter: serverDelay(resp.Header, time.Now(), resp.StatusCode == http.StatusTooManyRequests)}
	code := metrics.Code(resp.StatusCode)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		switch successBody(raw) {
		case accepted:
			c.countRequest(req, to, code)
			c.m.WorkspaceChanges.WithLabelValues(to.ws, "accepted").Add(float64(len(req.UIDs)))
			c.windowSpent(resp.Header, st.lim)
			return nil, nil
		case saysFail:
			code = metrics.CodeFail(resp.StatusCode)
		case notAPI:
			code = metrics.CodeNotAPI(resp.StatusCode)
			serr.NotAPI = true
		}
	}
	c.countRequest(req, to, code)
	if !serr.NotAPI {
		to.creds.parseEnvelope(serr, raw)
	}
	return serr, nil
}

// countRequest counts an attempt of req to to, answered with code:
// requests_total{action,code} and workspace_requests_total{workspace,code}
// (to.ws: a workspace with a target is the Client's, never "other").
func (c *Client) countRequest(req wire.Request, to *dest, code string) {
	c.m.Requests.WithLabelValues(string(req.Action), code).Inc()
	c.m.WorkspaceRequests.WithLabelValues(to.ws, code).Inc()
}

// newRequest builds the POST of body to to, with its headers.
func (c *Client) newRequest(ctx context.Context, to *dest, body []byte) (*http.Request, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, to.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("sink: build request: %w", err)
	}
	h := hreq.Header
	h["Content-Type"] = hvJSON
	h["Authorization"] = to.creds.hvAuth
	h["Moe-Appkey"] = to.hvAppKey
	h["User-Agent"] = c.hvUserAgent
	if c.hvReplica != nil {
		h["X-Cohortsync-Replica"] = c.hvReplica
	}
	return hreq, nil
}

// noAnswer counts an attempt that got no answer (err from the HTTP client;
// the attempt started at start) and returns its failure: errLeaseExpired
// when it was refused at the socket or abandoned when the lease lapsed
// (retried under a new lease), the transport error otherwise; wrapped in an
// *unknownOutcome when the request may have reached the API.
func (c *Client) noAnswer(req wire.Request, to *dest, st *attemptState, start time.Time, err error) error {
	c.m.RequestDuration.Observe(time.Since(start).Seconds())
	c.countRequest(req, to, "0")
	if errors.Is(err, errLeaseExpired) || errors.Is(context.Cause(st.ctx), errLeaseExpired) {
		err = errLeaseExpired
	} else {
		err = fmt.Errorf("sink: %w", err) // *url.Error: names the URL, which holds no secret
	}
	if st.mayHaveSent() {
		return &unknownOutcome{err: err, sentAt: start}
	}
	return err
}

// windowSpent pauses the Limiter until the API's rate window resets when an
// accepted answer says no request is left in it (x-ratelimit-remaining: 0):
// other users of the workspace spent it, and the next request would get a
// 429 (which counts too). The pause reaches the whole fleet (package
// ratelimit's board).
func (c *Client) windowSpent(h http.Header, lim Limiter) {
	if lim == nil || strings.TrimSpace(h.Get("X-Ratelimit-Remaining")) != "0" {
		return
	}
	now := time.Now()
	if d := min(rateLimitReset(h, now), maxServerDelay); d > 0 {
		lim.PauseUntil(now.Add(d))
	}
}

// successOutcome is what a 2xx body says.
type successOutcome int

const (
	accepted successOutcome = iota // {"status": "success", ...}: the documented acceptance
	saysFail                       // {"status": "fail", ...}: the API's error envelope, no acceptance
	notAPI                         // anything else: not the Cohort Sync API's answer
)

// successBody reads a 2xx body. The API answers a JSON object whose
// "status" is "success" or "fail" (cohortsync-api.md 7.1); any other body
// (an HTML page, an empty body, another service's JSON) comes from
// something else at MOENGAGE_BASE_URL, a proxy or a wrong host, and
// counting it as an acceptance would commit changes nobody received.
func successBody(raw []byte) successOutcome {
	var v struct {
		Status *string `json:"status"`
	}
	if err := json.Unmarshal(raw, &v); err != nil || v.Status == nil {
		return notAPI // also "null", arrays and scalars: no status field
	}
	switch strings.ToLower(strings.TrimSpace(*v.Status)) {
	case "success":
		return accepted
	case "fail":
		return saysFail
	}
	return notAPI
}

// parseEnvelope fills serr from the error envelope in raw, if it is one,
// scrubbed of cr's secrets (those of the attempt that got it). It
// tolerates a string "error" and unknown fields.
func (c *creds) parseEnvelope(serr *StatusError, raw []byte) {
	var env struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(raw, &env) != nil || len(env.Error) == 0 {
		return
	}
	var det struct {
		Attribute string `json:"attribute"`
		Message   string `json:"message"`
		Type      string `json:"type"`
		RequestID string `json:"request_id"`
	}
	if json.Unmarshal(env.Error, &det) != nil {
		var s string
		if json.Unmarshal(env.Error, &s) != nil {
			return
		}
		det.Message = s
	}
	serr.Type = c.clean(det.Type)
	serr.Message = c.clean(det.Message)
	serr.Attribute = c.clean(det.Attribute)
	serr.RequestID = c.clean(det.RequestID)
}

// clean truncates a server-sent string and removes the credentials from it,
// should the server echo them.
func (c *creds) clean(s string) string {
	s = c.scrub(s) // first too: truncating could cut a key and leave its start
	if len(s) > maxField {
		s = strings.ToValidUTF8(s[:maxField], "") + "…"
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return c.scrub(s)
}

// scrub replaces every occurrence of the API key in use (and of the
// encoded Basic credentials) in s.
func (c *Client) scrub(s string) string { return c.creds.Load().scrub(s) }

// scrub replaces every occurrence of the key of c, the key before it (if
// any), and of their encoded Basic credentials in s.
func (c *creds) scrub(s string) string {
	for _, secret := range c.secrets {
		if secret != "" && strings.Contains(s, secret) {
			s = strings.ReplaceAll(s, secret, redacted)
		}
	}
	return s
}

// isTimeout reports whether a transport error is an attempt timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
