package sink_test

// The rows of DESIGN.md's "Retry policy" table, against a real HTTP server
// (httptest.Server, real sockets) with short intervals. Exact timing is
// checked in spec_ratelimit_test.go, inside synctest bubbles.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

func TestSpecAccepts2xx(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		rep  specReply
	}{
		{"200 documented body", specOK()},
		{"202", specReply{status: 202, body: specSuccess}},
		{"200 extra fields", specReply{status: 200,
			body: `{"status":"success","message":"accepted","request_id":"AbCdEfGh","extra":{"n":[1,2,3]},"more":null}`}},
		{"200 no body", specReply{status: 200}},
		{"201 not JSON", specReply{status: 201, body: "<html>created</html>"}},
		{"204", specReply{status: 204}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := specSocket(t, func(int, specCall) specReply { return tc.rep }, nil)
			req := specRequest(5)
			rej, err := e.client.Send(specCtx(t), req)
			if err != nil || len(rej) != 0 {
				t.Fatalf("Send = %v, %v; want no rejections, nil", rej, err)
			}
			calls := e.api.got()
			if len(calls) != 1 {
				t.Fatalf("%d requests, want 1", len(calls))
			}
			if got := specAccepted(t, calls); !slices.Equal(got, req.UIDs) {
				t.Fatalf("accepted %v, want %v", got, req.UIDs)
			}
			if got := e.requests(strconv.Itoa(tc.rep.status)); got != 1 {
				t.Fatalf("requests_total{code=%d} = %v, want 1", tc.rep.status, got)
			}
			if r := e.allRetries(); len(r) != 0 {
				t.Fatalf("retries_total = %v, want none", r)
			}
		})
	}
}

// TestSpecRetriedThenAccepted: 408, 5xx, a connection reset and an attempt
// timeout are retried with the same body, then accepted.
func TestSpecRetriedThenAccepted(t *testing.T) {
	t.Parallel()
	const attemptTimeout = 500 * time.Millisecond // only for the timeout row
	for _, tc := range []struct {
		name   string
		first  specReply
		reason string // the retries_total reason
		code   string // the requests_total code of the first attempt
	}{
		{"408", specFail(408, "Request Timeout", "took too long", ""), "timeout", "408"},
		{"500", specFail(500, "Server Error", "An unexpected error was encountered while processing this request. Please contact MoEngage Team", ""), "server_error", "500"},
		{"502 no body", specReply{status: 502}, "server_error", "502"},
		{"503 HTML body", specReply{status: 503, body: "<html><body>Service Unavailable</body></html>"}, "server_error", "503"},
		{"504", specReply{status: 504, body: `{"message":"upstream timed out"}`}, "server_error", "504"},
		{"connection reset", specReply{reset: true}, "network", "0"},
		{"attempt timeout", specReply{status: 200, body: specSuccess, sleep: 20 * attemptTimeout}, "timeout", "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := specSocket(t, func(n int, _ specCall) specReply {
				if n == 0 {
					return tc.first
				}
				return specOK()
			}, func(c *sink.Config) {
				if tc.first.sleep > 0 {
					c.AttemptTimeout = attemptTimeout
				}
			})
			req := specRequest(4)
			start := time.Now()
			rej, err := e.client.Send(specCtx(t), req)
			if err != nil || len(rej) != 0 {
				t.Fatalf("Send = %v, %v; want no rejections, nil", rej, err)
			}
			calls := e.api.got()
			if len(calls) != 2 {
				t.Fatalf("%d requests, want 2", len(calls))
			}
			if !bytes.Equal(calls[0].body, calls[1].body) {
				t.Fatalf("the retry has another body:\n%s\n%s", calls[0].body, calls[1].body)
			}
			if got := specAccepted(t, calls); !slices.Equal(got, req.UIDs) {
				t.Fatalf("accepted %v, want %v", got, req.UIDs)
			}
			if got := e.retries(tc.reason); got != 1 {
				t.Fatalf("retries_total{reason=%q} = %v, want 1 (all: %v)", tc.reason, got, e.allRetries())
			}
			if r := e.allRetries(); len(r) != 1 {
				t.Fatalf("retries_total = %v, want only %s", r, tc.reason)
			}
			if got := e.requests(tc.code); got != 1 {
				t.Fatalf("requests_total{code=%s} = %v, want 1", tc.code, got)
			}
			if got := e.requests("200"); got != 1 {
				t.Fatalf("requests_total{code=200} = %v, want 1", got)
			}
			if tc.first.sleep > 0 {
				if calls[0].answered {
					t.Fatal("the first attempt got its (late) answer: it did not time out")
				}
				if d := time.Since(start); d < attemptTimeout || d > 10*attemptTimeout {
					t.Fatalf("Send took %v: the attempt timeout %v did not end the first attempt", d, attemptTimeout)
				}
			}
		})
	}
}

// TestSpecSplits413: a 413 halves the request until the server takes it.
func TestSpecSplits413(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ members, maxMembers int }{
		{2, 1}, {10, 1}, {37, 3}, {37, 7}, {64, 16}, {100, 99},
	} {
		t.Run(fmt.Sprintf("%d members, server takes %d", tc.members, tc.maxMembers), func(t *testing.T) {
			t.Parallel()
			e := specSocket(t, func(_ int, c specCall) specReply {
				if len(c.req.UIDs) > tc.maxMembers {
					return specFail(413, "Payload too large", "Payload can not exceed 128KB", "")
				}
				return specOK()
			}, nil)
			req := specRequest(tc.members)
			rej, err := e.client.Send(specCtx(t), req)
			if err != nil || len(rej) != 0 {
				t.Fatalf("Send = %v, %v; want no rejections, nil", rej, err)
			}
			calls := e.api.got()
			// Every member accepted exactly once, the accepted requests in
			// member order.
			if got := specAccepted(t, calls); !slices.Equal(got, req.UIDs) {
				t.Fatalf("accepted, in order:\n%v\nwant\n%v", got, req.UIDs)
			}
			for i, c := range calls {
				if c.req.Header() != req.Header() {
					t.Fatalf("call %d: envelope %+v, want %+v", i, c.req.Header(), req.Header())
				}
				if !specContiguous(c.req.UIDs, req.UIDs) {
					t.Fatalf("call %d: members %v are not a run of the request", i, c.req.UIDs)
				}
			}
			// Every request but the first is the first attempt of a half.
			if got, want := e.allRetries(), len(calls)-1; got["too_large"] != float64(want) || len(got) > 1 {
				t.Fatalf("retries_total = %v, want too_large=%d", got, want)
			}
			if got, want := e.requests("413")+e.requests("200"), float64(len(calls)); got != want {
				t.Fatalf("requests_total 413+200 = %v, want %v", got, want)
			}
		})
	}
}

// specContiguous reports whether part is a non-empty run of all.
func specContiguous(part, all []string) bool {
	if len(part) == 0 {
		return false
	}
	i := slices.Index(all, part[0])
	return i >= 0 && i+len(part) <= len(all) && slices.Equal(all[i:i+len(part)], part)
}

// TestSpecIsolatesInvalidMembers: a 400 naming the uid attribute is split
// until the bad members are alone; exactly those are rejected.
func TestSpecIsolatesInvalidMembers(t *testing.T) {
	t.Parallel()
	const (
		typ    = "InvalidAttributeError"
		msg    = "uid is invalid"
		reason = "400 " + typ + ": " + msg
	)
	for _, tc := range []struct {
		name    string
		members int
		bad     []int
	}{
		{"one in the middle", 37, []int{17}},
		{"first and last", 37, []int{0, 36}},
		{"a run", 40, []int{9, 10, 11, 12}},
		{"scattered", 64, []int{1, 5, 22, 23, 40, 63}},
		{"all of them", 6, []int{0, 1, 2, 3, 4, 5}},
		{"single member", 1, []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := specRequest(tc.members)
			bad := map[string]bool{}
			var wantRej, wantOK []string
			for i, u := range req.UIDs {
				if slices.Contains(tc.bad, i) {
					bad[u] = true
					wantRej = append(wantRej, u)
				} else {
					wantOK = append(wantOK, u)
				}
			}
			e := specSocket(t, func(_ int, c specCall) specReply {
				if slices.ContainsFunc(c.req.UIDs, func(u string) bool { return bad[u] }) {
					return specFail(400, typ, msg, "uid")
				}
				return specOK()
			}, nil)
			rej, err := e.client.Send(specCtx(t), req)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			var gotRej []string
			for _, r := range rej {
				gotRej = append(gotRej, r.UID)
				if r.Reason != reason {
					t.Fatalf("rejection %s: reason %q, want %q", r.UID, r.Reason, reason)
				}
			}
			if !slices.Equal(gotRej, wantRej) {
				t.Fatalf("rejected %v, want %v", gotRej, wantRej)
			}
			calls := e.api.got()
			if got := specAccepted(t, calls); !slices.Equal(got, wantOK) {
				t.Fatalf("accepted, in order:\n%v\nwant\n%v", got, wantOK)
			}
			if len(calls) > 2*tc.members {
				t.Fatalf("%d requests for %d members", len(calls), tc.members)
			}
			if got, want := e.allRetries(), len(calls)-1; got["invalid"] != float64(want) || len(got) > 1 {
				t.Fatalf("retries_total = %v, want invalid=%d", got, want)
			}
		})
	}
}

// TestSpecEnvelopeErrorRejectsAll: a 4xx naming a field outside the members
// concerns the whole batch: every member is rejected after one request.
func TestSpecEnvelopeErrorRejectsAll(t *testing.T) {
	t.Parallel()
	for _, attr := range []string{"cohort_name", "action", "partner", "parameters", "cohort_id", "cohort_description"} {
		t.Run(attr, func(t *testing.T) {
			t.Parallel()
			msg := attr + " is not valid"
			e := specSocket(t, func(int, specCall) specReply {
				return specFail(400, "MissingAttributeError", msg, attr)
			}, nil)
			req := specRequest(20)
			rej, err := e.client.Send(specCtx(t), req)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if n := len(e.api.got()); n != 1 {
				t.Fatalf("%d requests, want 1", n)
			}
			want := "400 MissingAttributeError: " + msg
			if len(rej) != len(req.UIDs) {
				t.Fatalf("%d rejections, want %d", len(rej), len(req.UIDs))
			}
			for i, r := range rej {
				if r.UID != req.UIDs[i] || r.Reason != want {
					t.Fatalf("rejection %d = %+v, want {%s %q}", i, r, req.UIDs[i], want)
				}
			}
			if r := e.allRetries(); len(r) != 0 {
				t.Fatalf("retries_total = %v, want none", r)
			}
		})
	}
}

// TestSpecConfigErrorsStopSending: 401, 403, 415, 404 (and the other
// configuration errors) mark the client AuthFailing and are retried every
// AuthRetryInterval with the same body, never rejected nor dropped, until
// the API accepts.
func TestSpecConfigErrorsStopSending(t *testing.T) {
	t.Parallel()
	const authRetry = 20 * time.Millisecond
	for _, tc := range []struct {
		name string
		rep  specReply
	}{
		{"401 key mismatch", specFail(401, "Authentication required", "App Secret key mismatch. Please login to the dashboard to verify key", "")},
		{"401 no body", specReply{status: 401}},
		{"403 blocked", specFail(403, "BlockedClient", "Your account is suspended. Please contact MoEngage team.", "")},
		{"415", specFail(415, "Unsupported media type", "Content type is not supported", "")},
		{"404", specReply{status: 404, body: "404 page not found"}},
		{"405", specReply{status: 405}},
		{"302", specReply{status: 302, header: map[string]string{"Location": "/elsewhere"}}},
		{"409 Authentication Mismatch", specFail(409, "Authentication Mismatch", "App key mismatch in params and authentication", "")},
		{"400 Authentication required", specFail(400, "Authentication required", "Authentication Header Required", "uid")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var accept atomic.Bool
			e := specSocket(t, func(int, specCall) specReply {
				if accept.Load() {
					return specOK()
				}
				return tc.rep
			}, nil)
			req := specRequest(9)
			res := specGo(func() ([]wire.Rejection, error) { return e.client.Send(specCtx(t), req) })
			for range 3 {
				<-e.api.finished
			}
			if !e.client.AuthFailing() {
				t.Fatal("AuthFailing() = false while the API answers", tc.rep.status)
			}
			if g := testutil.ToFloat64(e.m.AuthFailing); g != 1 {
				t.Fatalf("auth_failing gauge = %v while failing, want 1", g)
			}
			select {
			case r := <-res:
				t.Fatalf("Send returned %v, %v while the API answers %d", r.rej, r.err, tc.rep.status)
			default:
			}
			accept.Store(true)
			r := <-res
			if r.err != nil || len(r.rej) != 0 {
				t.Fatalf("Send = %v, %v; want no rejections, nil", r.rej, r.err)
			}
			if e.client.AuthFailing() {
				t.Fatal("AuthFailing() = true after a 2xx")
			}
			if g := testutil.ToFloat64(e.m.AuthFailing); g != 0 {
				t.Fatalf("auth_failing gauge = %v after a 2xx, want 0", g)
			}
			calls := e.api.got()
			for i, c := range calls {
				if !bytes.Equal(c.body, calls[0].body) {
					t.Fatalf("call %d has another body", i)
				}
				if i > 0 && c.at.Sub(calls[i-1].at) < authRetry {
					t.Fatalf("call %d came %v after the previous one, before AuthRetryInterval", i, c.at.Sub(calls[i-1].at))
				}
			}
			if got := specAccepted(t, calls); !slices.Equal(got, req.UIDs) {
				t.Fatalf("accepted %v, want %v", got, req.UIDs)
			}
			if got, want := e.allRetries(), len(calls)-1; got["auth"] != float64(want) || len(got) > 1 {
				t.Fatalf("retries_total = %v, want auth=%d", got, want)
			}
			// Logged loudly once, not once per attempt; and the recovery.
			if n := bytes.Count([]byte(e.logs.String()), []byte(`"level":"ERROR"`)); n != 1 {
				t.Fatalf("%d error-level log lines for %d failed attempts, want 1:\n%s", n, len(calls)-1, e.logs)
			}
			if !bytes.Contains([]byte(e.logs.String()), []byte("sending resumed")) {
				t.Fatalf("no log line for the recovery:\n%s", e.logs)
			}
		})
	}
}

// TestSpecCancelWhileWaiting: a Send waiting to retry returns at once when
// its ctx ends, with an error wrapping ctx.Err() (and the last failure).
func TestSpecCancelWhileWaiting(t *testing.T) {
	t.Parallel()
	const long = time.Minute
	slow := func(c *sink.Config) { c.InitialInterval, c.MaxInterval, c.AuthRetryInterval = long, long, long }
	for _, tc := range []struct {
		name   string
		rep    specReply
		tweak  func(*sink.Config)
		status int // the *StatusError wrapped (0: none)
	}{
		{"500 backoff", specReply{status: 500}, slow, 500},
		{"reset backoff", specReply{reset: true}, slow, 0},
		{"401 auth retry", specReply{status: 401}, slow, 401},
		{"429 paused Limiter", specReply{status: 429, header: map[string]string{"Retry-After": "60"}},
			func(c *sink.Config) { slow(c); c.Limiter = sink.NewLimiter(0) }, 429},
		{"429 without Limiter", specReply{status: 429, header: map[string]string{"Retry-After": "60"}}, slow, 429},
		{"503 Retry-After", specReply{status: 503, header: map[string]string{"Retry-After": "60"}}, nil, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := specSocket(t, func(int, specCall) specReply { return tc.rep }, tc.tweak)
			ctx, cancel := context.WithCancel(specCtx(t))
			defer cancel()
			res := specGo(func() ([]wire.Rejection, error) { return e.client.Send(ctx, specRequest(3)) })
			<-e.api.finished
			cancelled := time.Now()
			cancel()
			r := <-res
			if d := r.at.Sub(cancelled); d > 2*time.Second {
				t.Fatalf("Send returned %v after the cancellation", d)
			}
			if !errors.Is(r.err, context.Canceled) {
				t.Fatalf("Send error %v does not wrap context.Canceled", r.err)
			}
			var se *sink.StatusError
			if got := errors.As(r.err, &se); got != (tc.status != 0) || got && se.Code != tc.status {
				t.Fatalf("Send error %v: *StatusError %v, want status %d", r.err, se, tc.status)
			}
			if len(r.rej) != 0 {
				t.Fatalf("rejections %v", r.rej)
			}
			if n := len(e.api.got()); n != 1 {
				t.Fatalf("%d requests, want 1", n)
			}
		})
	}
}

// TestSpecCancelDoesNotAbortAttempt: an attempt under way when ctx ends runs
// to its end: the server answers a client still connected, and Send returns
// after that answer.
func TestSpecCancelDoesNotAbortAttempt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status int
		ok     bool // Send returns nil
	}{
		{200, true},
		{500, false},
		{401, false},
	} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			e := specSocket(t, func(int, specCall) specReply {
				return specReply{status: tc.status, hold: release}
			}, nil)
			ctx, cancel := context.WithCancel(specCtx(t))
			defer cancel()
			req := specRequest(5)
			res := specGo(func() ([]wire.Rejection, error) { return e.client.Send(ctx, req) })
			<-e.api.arrived
			cancel()
			// Give an abort (wrongly) triggered by the cancellation time to
			// reach the server; synctest makes this exact in
			// TestSpecSyncCancelDoesNotAbortAttempt.
			time.Sleep(100 * time.Millisecond)
			select {
			case r := <-res:
				t.Fatalf("Send returned %v, %v before the attempt under way ended", r.rej, r.err)
			default:
			}
			close(release)
			r := <-res
			calls := e.api.got()
			if len(calls) != 1 || !calls[0].answered || calls[0].status != tc.status {
				t.Fatalf("the server did not answer the attempt to a connected client: %+v", calls)
			}
			if tc.ok {
				if r.err != nil || len(r.rej) != 0 {
					t.Fatalf("Send = %v, %v; want nil: the last attempt was accepted", r.rej, r.err)
				}
				return
			}
			var se *sink.StatusError
			if !errors.Is(r.err, context.Canceled) || !errors.As(r.err, &se) || se.Code != tc.status {
				t.Fatalf("Send error %v: want one wrapping context.Canceled and the %d", r.err, tc.status)
			}
		})
	}
}

// TestSpecGivesUp: with MaxElapsed, a failure that persists ends in
// ErrGaveUp wrapping the last failure.
func TestSpecGivesUp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		rep    specReply
		status int
	}{
		{"500", specFail(500, "Server Error", "boom", ""), 500},
		{"503 Retry-After beyond MaxElapsed", specReply{status: 503, header: map[string]string{"Retry-After": "3600"}}, 503},
		{"408", specReply{status: 408}, 408},
		{"429 no header", specReply{status: 429}, 429},
		{"429 Retry-After, Limiter", specReply{status: 429, header: map[string]string{"Retry-After": "1"}}, 429},
		{"reset", specReply{reset: true}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := specSocket(t, func(int, specCall) specReply { return tc.rep }, func(c *sink.Config) {
				c.MaxElapsed = 30 * time.Millisecond
				if tc.status == 429 {
					c.Limiter = sink.NewLimiter(0)
				}
			})
			start := time.Now()
			rej, err := e.client.Send(specCtx(t), specRequest(3))
			if !errors.Is(err, sink.ErrGaveUp) {
				t.Fatalf("Send = %v, %v; want ErrGaveUp", rej, err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("gave up after %v, MaxElapsed is 30ms", d)
			}
			var se *sink.StatusError
			if got := errors.As(err, &se); got != (tc.status != 0) || got && se.Code != tc.status {
				t.Fatalf("error %v: *StatusError %v, want status %d", err, se, tc.status)
			}
			if len(rej) != 0 {
				t.Fatalf("rejections %v", rej)
			}
		})
	}
	t.Run("auth failures do not count", func(t *testing.T) {
		t.Parallel()
		e := specSocket(t, func(n int, _ specCall) specReply {
			if n < 4 {
				return specReply{status: 401}
			}
			return specOK()
		}, func(c *sink.Config) { c.MaxElapsed = 5 * time.Millisecond })
		if rej, err := e.client.Send(specCtx(t), specRequest(3)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v; want nil: an auth outage must not count toward MaxElapsed", rej, err)
		}
	})
	t.Run("progress restarts the clock", func(t *testing.T) {
		t.Parallel()
		// Each half of a 413 split fails for half of MaxElapsed: longer
		// than MaxElapsed in total, never that long without progress.
		const maxElapsed = 600 * time.Millisecond
		var (
			mu        sync.Mutex
			firstSeen = map[string]time.Time{}
		)
		e := specSocket(t, func(_ int, c specCall) specReply {
			if len(c.req.UIDs) > 2 {
				return specReply{status: 413}
			}
			mu.Lock()
			defer mu.Unlock()
			first, ok := firstSeen[c.req.UIDs[0]]
			if !ok {
				first = time.Now()
				firstSeen[c.req.UIDs[0]] = first
			}
			if time.Since(first) < maxElapsed/2 {
				return specReply{status: 500}
			}
			return specOK()
		}, func(c *sink.Config) { c.MaxElapsed = maxElapsed })
		start := time.Now()
		if rej, err := e.client.Send(specCtx(t), specRequest(4)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v; want nil", rej, err)
		}
		if d := time.Since(start); d < maxElapsed {
			t.Fatalf("Send took %v: the test did not fail for longer than MaxElapsed in total", d)
		}
	})
}

func TestSpecEmptyRequestSendsNothing(t *testing.T) {
	t.Parallel()
	e := specSocket(t, nil, nil)
	req := specRequest(0)
	if rej, err := e.client.Send(specCtx(t), req); err != nil || len(rej) != 0 {
		t.Fatalf("Send = %v, %v", rej, err)
	}
	if n := len(e.api.got()); n != 0 {
		t.Fatalf("%d requests for no members", n)
	}
}

// TestSpecConnectionReuse: answers are drained, so sequential Sends reuse
// one connection even through error answers with bodies; a body too large
// to drain costs the connection (which shows the count works).
func TestSpecConnectionReuse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		bodyBytes int
		oneConn   bool
	}{
		{"envelope", 0, true},
		{"20 KB body", 20 << 10, true},
		{"100 KB body", 100 << 10, true},
		{"1 MB body", 1 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fail := specFail(500, "Server Error", "An unexpected error was encountered", "")
			if tc.bodyBytes > 0 {
				fail.body = `{"status":"fail","error":{"message":"` + string(bytes.Repeat([]byte("x"), tc.bodyBytes)) + `","type":"Server Error"}}`
			}
			e := specSocket(t, func(n int, _ specCall) specReply {
				if n%2 == 0 {
					return fail
				}
				return specReply{status: 200, body: specSuccess + string(bytes.Repeat([]byte(" "), tc.bodyBytes))}
			}, nil)
			for i := range 10 {
				if rej, err := e.client.Send(specCtx(t), specRequest(3)); err != nil || len(rej) != 0 {
					t.Fatalf("Send %d = %v, %v", i, rej, err)
				}
			}
			if n := len(e.api.got()); n != 20 {
				t.Fatalf("%d requests, want 20", n)
			}
			conns := e.conns.Load()
			if tc.oneConn && conns != 1 {
				t.Fatalf("%d connections for 20 sequential requests, want 1", conns)
			}
			if !tc.oneConn && conns < 10 {
				t.Fatalf("%d connections: a body too large to drain should cost its connection", conns)
			}
			if got := e.requests("500"); got != 10 {
				t.Fatalf("requests_total{code=500} = %v, want 10", got)
			}
		})
	}
}
