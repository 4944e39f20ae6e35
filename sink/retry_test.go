package sink_test

// The rows of DESIGN.md's "Retry policy" table: what follows from each
// answer (accept, retry with backoff, split, reject, stop on a configuration
// error, give up), over a real socket and, with exact timing, inside
// testing/synctest bubbles. The 429 rows are in ratelimit_test.go.

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestAccepts2xx: a 2xx whose body is the API's acceptance is one, with
// any status code and any extra fields.
func TestAccepts2xx(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		rep  reply
	}{
		{"200 documented body", ok()},
		{"200 extra fields", reply{status: 200,
			body: `{"status":"success","message":"accepted","request_id":"AbCdEfGh","extra":{"n":[1,2,3]},"more":null}`}},
		{"200 status Success, spaces", reply{status: 200, body: ` { "status" : " Success " } `}},
		{"201", reply{status: 201, body: okBody}},
		{"202", reply{status: 202, body: okBody}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, mode string) {
				e := newEnv(t, mode, func(int, call) reply { return tc.rep }, nil)
				req := request(5)
				rej, err := e.client.Send(e.ctx(), req)
				if err != nil || len(rej) != 0 {
					t.Fatalf("Send = %v, %v; want no rejections, nil", rej, err)
				}
				calls := e.api.got()
				if len(calls) != 1 {
					t.Fatalf("%d requests, want 1", len(calls))
				}
				if got := accepted(t, calls); !slices.Equal(got, req.UIDs) {
					t.Fatalf("accepted %v, want %v", got, req.UIDs)
				}
				if got := e.requests(strconv.Itoa(tc.rep.status)); got != 1 {
					t.Fatalf("requests_total{code=%d} = %v, want 1", tc.rep.status, got)
				}
				if r := e.allRetries(); len(r) != 0 {
					t.Fatalf("retries_total = %v, want none", r)
				}
			})
		})
	}
}

// TestRetryTable: every retryable row of the retry table, then success.
// The delay before the second attempt must be the documented one.
func TestRetryTable(t *testing.T) {
	const (
		httpInitial = 20 * time.Millisecond // this test's http-mode backoff
		httpTimeout = 500 * time.Millisecond
		memInitial  = sink.DefaultInitialInterval
	)
	type row struct {
		name   string
		first  func(now time.Time) reply
		reason string // retries_total reason
		code   string // requests_total code of the first attempt
		// fixed is the exact server-requested delay (0: backoff).
		fixed time.Duration
		// minHTTP is the smallest delay in http mode, where HTTP-dates and
		// epochs have whole-second resolution (0: fixed).
		minHTTP time.Duration
		// hang: the first attempt times out, so the gap includes it.
		hang bool
	}
	rows := []row{
		{name: "408", first: func(time.Time) reply { return fail(408, "Request Timeout", "slow", "") }, reason: "timeout", code: "408"},
		{name: "500", first: func(time.Time) reply {
			return fail(500, "Server Error", "An unexpected error was encountered while processing this request. Please contact MoEngage Team", "")
		}, reason: "server_error", code: "500"},
		{name: "502 no body", first: func(time.Time) reply { return reply{status: 502} }, reason: "server_error", code: "502"},
		{name: "503 html", first: func(time.Time) reply { return reply{status: 503, body: "<html>down</html>"} }, reason: "server_error", code: "503"},
		{name: "504", first: func(time.Time) reply { return reply{status: 504} }, reason: "server_error", code: "504"},
		{name: "503 Retry-After raises the delay", first: func(time.Time) reply {
			return reply{status: 503, header: map[string]string{"Retry-After": "1"}}
		}, reason: "server_error", code: "503", fixed: time.Second},
		// x-ratelimit-reset says when the rate window resets: on a 5xx it is
		// no reason to wait (the emulator and the API send it on every answer).
		{name: "500 with x-ratelimit-reset backs off", first: func(time.Time) reply {
			return reply{status: 500, header: map[string]string{"X-Ratelimit-Limit": "300", "X-Ratelimit-Remaining": "290", "X-Ratelimit-Reset": "30"}}
		}, reason: "server_error", code: "500"},
		{name: "connection reset", first: func(time.Time) reply { return reply{reset: true} }, reason: "network", code: "0"},
		{name: "attempt timeout", first: func(time.Time) reply { return reply{hold: make(chan struct{})} }, reason: "timeout", code: "0", hang: true},
		{name: "429 Retry-After seconds", first: func(time.Time) reply {
			return reply{status: 429, header: map[string]string{"Retry-After": "1"}}
		}, reason: "rate_limited", code: "429", fixed: time.Second},
		{name: "429 Retry-After HTTP-date", first: func(now time.Time) reply {
			return reply{status: 429, header: map[string]string{"Retry-After": now.Add(2 * time.Second).UTC().Format(http.TimeFormat)}}
		}, reason: "rate_limited", code: "429", fixed: 2 * time.Second, minHTTP: time.Second},
		{name: "429 x-ratelimit-reset delta", first: func(time.Time) reply {
			return reply{status: 429, header: map[string]string{"X-Ratelimit-Limit": "300", "X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "1"}}
		}, reason: "rate_limited", code: "429", fixed: time.Second},
		{name: "429 x-ratelimit-reset epoch", first: func(now time.Time) reply {
			return reply{status: 429, header: map[string]string{"X-Ratelimit-Reset": strconv.FormatInt(now.Unix()+2, 10)}}
		}, reason: "rate_limited", code: "429", fixed: 2 * time.Second, minHTTP: time.Second},
		{name: "429 Retry-After wins over x-ratelimit-reset", first: func(time.Time) reply {
			return reply{status: 429, header: map[string]string{"Retry-After": "1", "X-Ratelimit-Reset": "30"}}
		}, reason: "rate_limited", code: "429", fixed: time.Second},
		{name: "429 without headers backs off", first: func(time.Time) reply {
			return fail(429, "Rate Limits Exceeded", "Rate limits for customers exceeded. Please Try After Some Time", "")
		}, reason: "rate_limited", code: "429"},
	}
	for _, tc := range rows {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, mode string) {
				lim := ratelimit.NewLimiter(0) // unlimited, but a 429 pauses it
				e := newEnv(t, mode, func(n int, c call) reply {
					if n == 0 {
						return tc.first(c.at)
					}
					return ok()
				}, func(c *sink.Config) {
					c.Limiter = lim
					if mode == "http" {
						c.InitialInterval, c.MaxInterval, c.AttemptTimeout = httpInitial, 2*httpInitial, httpTimeout
					}
				})
				req := request(4)
				start := time.Now()
				rej, err := e.client.Send(t.Context(), req)
				if err != nil || len(rej) != 0 {
					t.Fatalf("rejections %v, err %v", rej, err)
				}
				calls := e.api.got()
				if len(calls) != 2 {
					t.Fatalf("%d requests, want 2", len(calls))
				}
				checkBodies(t, calls, req)
				if string(calls[0].body) != string(calls[1].body) {
					t.Fatalf("the retry changed the body:\n%s\n%s", calls[0].body, calls[1].body)
				}
				gap := calls[1].at.Sub(calls[0].at)
				initial, timeout := memInitial, sink.DefaultAttemptTimeout
				if mode == "http" {
					initial, timeout = httpInitial, httpTimeout
				}
				lo, hi := initial/2, initial*3/2 // first backoff interval, ±50% jitter
				if tc.fixed > 0 {
					lo, hi = tc.fixed, tc.fixed
					if mode == "http" && tc.minHTTP > 0 {
						lo = tc.minHTTP
					}
				}
				since := gap // what the lower bound is measured on
				if tc.hang {
					lo, hi = lo+timeout, hi+timeout
					// The attempt timeout runs from the client's start of the
					// attempt, which precedes the server's arrival time by
					// the connection set-up: measure the lower bound from the
					// start of Send (under load, the arrival gap alone can be
					// a few milliseconds short).
					since = calls[1].at.Sub(start)
				}
				if mode == "http" {
					hi += 2 * time.Second // scheduling slack on real time
				}
				if since < lo || gap > hi {
					t.Fatalf("gap between attempts %v (second attempt %v after the start), want [%v, %v]", gap, calls[1].at.Sub(start), lo, hi)
				}
				if mode == "mem" && time.Since(start) != gap {
					t.Fatalf("Send took %v, want exactly the gap %v", time.Since(start), gap)
				}
				if got := e.retries(tc.reason); got != 1 {
					t.Fatalf("retries_total{reason=%s} = %v, want 1", tc.reason, got)
				}
				if got := e.requests(tc.code); got != 1 {
					t.Fatalf("requests_total{code=%s} = %v, want 1", tc.code, got)
				}
				if got := e.requests("200"); got != 1 {
					t.Fatalf("requests_total{code=200} = %v, want 1", got)
				}
				if got := histCount(t, e.m.RequestDuration); got != 2 {
					t.Fatalf("request_duration_seconds observed %d attempts, want 2", got)
				}
				if tc.reason == "rate_limited" {
					wait := testutil.ToFloat64(e.m.RateLimitWait)
					if wait < lo.Seconds()*0.99 {
						t.Fatalf("rate_limit_wait_seconds_total = %v, want >= %v", wait, lo.Seconds())
					}
				}
			})
		})
	}
}

// TestRetriedThenAccepted: 408, 5xx, a connection reset and an attempt
// timeout are retried with the same body, then accepted.
func TestRetriedThenAccepted(t *testing.T) {
	t.Parallel()
	const attemptTimeout = 500 * time.Millisecond // only for the timeout row
	for _, tc := range []struct {
		name   string
		first  reply
		reason string // the retries_total reason
		code   string // the requests_total code of the first attempt
	}{
		{"408", fail(408, "Request Timeout", "took too long", ""), "timeout", "408"},
		{"500", fail(500, "Server Error", "An unexpected error was encountered while processing this request. Please contact MoEngage Team", ""), "server_error", "500"},
		{"502 no body", reply{status: 502}, "server_error", "502"},
		{"503 HTML body", reply{status: 503, body: "<html><body>Service Unavailable</body></html>"}, "server_error", "503"},
		{"504", reply{status: 504, body: `{"message":"upstream timed out"}`}, "server_error", "504"},
		{"connection reset", reply{reset: true}, "network", "0"},
		{"attempt timeout", reply{status: 200, body: okBody, sleep: 20 * attemptTimeout}, "timeout", "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "http", func(n int, _ call) reply {
				if n == 0 {
					return tc.first
				}
				return ok()
			}, func(c *sink.Config) {
				if tc.first.sleep > 0 {
					c.AttemptTimeout = attemptTimeout
				}
			})
			req := request(4)
			start := time.Now()
			rej, err := e.client.Send(e.ctx(), req)
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
			if got := accepted(t, calls); !slices.Equal(got, req.UIDs) {
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

// TestServerDelayOn5xx: a Retry-After on a 5xx raises the backoff interval
// to it, never lowers it.
func TestServerDelayOn5xx(t *testing.T) {
	for _, tc := range []struct {
		retryAfter string
		min, max   time.Duration
	}{
		{"8", 8 * time.Second, 8 * time.Second},
		{"0.1", 500 * time.Millisecond, 1500 * time.Millisecond}, // the backoff, InitialInterval 1s ±50%
	} {
		t.Run(tc.retryAfter, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, "mem", func(n int, _ call) reply {
					if n == 0 {
						return reply{status: 503, header: map[string]string{"Retry-After": tc.retryAfter}}
					}
					return ok()
				}, func(c *sink.Config) { c.InitialInterval = time.Second })
				if rej, err := e.client.Send(t.Context(), request(2)); err != nil || len(rej) != 0 {
					t.Fatalf("Send = %v, %v", rej, err)
				}
				calls := e.api.got()
				if gap := calls[1].at.Sub(calls[0].at); gap < tc.min || gap > tc.max {
					t.Fatalf("retried after %v, want [%v, %v]", gap, tc.min, tc.max)
				}
			})
		})
	}
}

// TestBackoff: the delays between retries grow by 1.5 from InitialInterval,
// with ±50% jitter, up to MaxInterval, and start again after progress.
func TestBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const failures = 8
		e := newEnv(t, "mem", func(n int, c call) reply {
			switch {
			case len(c.req.UIDs) > 1:
				return reply{status: 413}
			case n <= failures, n == failures+2:
				return reply{status: 500}
			}
			return ok()
		}, func(c *sink.Config) { c.InitialInterval, c.MaxInterval = time.Second, 4*time.Second })
		// call 0: 413; calls 1..8: 500 for the first half; 9: accepted;
		// 10: the second half, 500; 11: accepted.
		if rej, err := e.client.Send(t.Context(), request(2)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v", rej, err)
		}
		calls := e.api.got()
		if len(calls) != failures+4 {
			t.Fatalf("%d requests, want %d", len(calls), failures+4)
		}
		if gap := calls[1].at.Sub(calls[0].at); gap != 0 {
			t.Fatalf("the first half was sent %v after the 413, want at once", gap)
		}
		interval := time.Second
		for i := 2; i <= failures+1; i++ {
			gap := calls[i].at.Sub(calls[i-1].at)
			if lo, hi := interval/2, interval*3/2; gap < lo || gap > hi+time.Nanosecond {
				t.Fatalf("retry %d after %v, want [%v, %v]", i-1, gap, lo, hi)
			}
			interval = min(interval*3/2, 4*time.Second)
		}
		if gap := calls[failures+2].at.Sub(calls[failures+1].at); gap != 0 {
			t.Fatalf("the second half was sent %v after the first was accepted, want at once", gap)
		}
		if gap := calls[failures+3].at.Sub(calls[failures+2].at); gap < 500*time.Millisecond || gap > 1500*time.Millisecond {
			t.Fatalf("the second half's retry came after %v: the backoff did not start again from InitialInterval", gap)
		}
	})
}

// TestSplits413: a 413 halves the request until the server takes it; every
// member ends accepted, once, in order, by valid requests.
func TestSplits413(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ members, maxMembers int }{
		{2, 1}, {10, 1}, {23, 3}, {37, 3}, {37, 7}, {64, 16}, {100, 99},
	} {
		t.Run(fmt.Sprintf("%d members, server takes %d", tc.members, tc.maxMembers), func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, mode string) {
				e := newEnv(t, mode, func(_ int, c call) reply {
					if len(c.req.UIDs) > tc.maxMembers {
						return fail(413, "Payload too large", "Payload can not exceed 128KB", "")
					}
					return ok()
				}, nil)
				req := request(tc.members)
				rej, err := e.client.Send(e.ctx(), req)
				if err != nil || len(rej) != 0 {
					t.Fatalf("Send = %v, %v; want no rejections, nil", rej, err)
				}
				calls := e.api.got()
				// Every member accepted exactly once, the accepted requests in
				// member order.
				if got := accepted(t, calls); !slices.Equal(got, req.UIDs) {
					t.Fatalf("accepted, in order:\n%v\nwant\n%v", got, req.UIDs)
				}
				checkBodies(t, calls, req)
				for i, c := range calls {
					if !contiguous(c.req.UIDs, req.UIDs) {
						t.Fatalf("call %d: members %v are not a run of the request", i, c.req.UIDs)
					}
				}
				// Every request but the first is the first attempt of a half.
				if got, want := e.allRetries(), len(calls)-1; got["too_large"] != float64(want) || len(got) > 1 {
					t.Fatalf("retries_total = %v, want too_large=%d (every request after the first)", got, want)
				}
				if got, want := e.requests("413")+e.requests("200"), float64(len(calls)); got != want {
					t.Fatalf("requests_total 413+200 = %v, want %v", got, want)
				}
			})
		})
	}
}

func Test413SingleMemberRejected(t *testing.T) {
	modes(t, func(t *testing.T, mode string) {
		e := newEnv(t, mode, func(int, call) reply {
			return fail(413, "Payload too large", "Payload can not exceed 128KB", "")
		}, nil)
		rej, err := e.client.Send(t.Context(), request(2))
		if err != nil {
			t.Fatal(err)
		}
		if len(rej) != 2 || rej[0].UID != "u0" || rej[1].UID != "u1" {
			t.Fatalf("rejections %+v, want u0 and u1", rej)
		}
		for _, r := range rej {
			if !strings.Contains(strings.ToLower(r.Reason), "too large") || !strings.HasPrefix(r.Reason, "413 ") {
				t.Fatalf("reason %q does not say 413 too large", r.Reason)
			}
		}
		if n := len(e.api.got()); n != 3 {
			t.Fatalf("%d requests, want 3 (the pair, then each alone)", n)
		}
	})
}

// TestIsolatesInvalidMembers: a 400 naming the uid attribute is split until
// the bad members are alone; exactly those are rejected.
func TestIsolatesInvalidMembers(t *testing.T) {
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
			req := request(tc.members)
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
			e := newEnv(t, "http", func(_ int, c call) reply {
				if slices.ContainsFunc(c.req.UIDs, func(u string) bool { return bad[u] }) {
					return fail(400, typ, msg, "uid")
				}
				return ok()
			}, nil)
			rej, err := e.client.Send(e.ctx(), req)
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
			if got := accepted(t, calls); !slices.Equal(got, wantOK) {
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

// TestIsolatesInvalidMembersPerStatus: the server answers 400, 409 or 422
// attribute uid to any body holding a bad uid; exactly the bad uids come
// back rejected, each with the reason the server gave for it.
func TestIsolatesInvalidMembersPerStatus(t *testing.T) {
	bad := map[string]bool{"u0": true, "u3": true, "u7": true, "u8": true, "u30": true}
	for _, status := range []int{400, 409, 422} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, mode string) {
				e := newEnv(t, mode, func(_ int, c call) reply {
					for _, u := range c.req.UIDs {
						if bad[u] {
							return fail(status, "InvalidAttributeError", "uid "+u+" is invalid", "uid")
						}
					}
					return ok()
				}, nil)
				req := request(31)
				rej, err := e.client.Send(t.Context(), req)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, r := range rej {
					got = append(got, r.UID)
					want := strconv.Itoa(status) + " InvalidAttributeError: uid " + r.UID + " is invalid"
					if r.Reason != want {
						t.Fatalf("reason %q, want %q", r.Reason, want)
					}
				}
				if want := []string{"u0", "u3", "u7", "u8", "u30"}; !slices.Equal(got, want) {
					t.Fatalf("rejected %v, want %v", got, want)
				}
				calls := e.api.got()
				checkBodies(t, calls, req)
				var accepted []string
				for _, c := range calls {
					if !slices.ContainsFunc(c.req.UIDs, func(u string) bool { return bad[u] }) {
						accepted = append(accepted, c.req.UIDs...)
					}
				}
				var want []string
				for _, u := range req.UIDs {
					if !bad[u] {
						want = append(want, u)
					}
				}
				if !slices.Equal(accepted, want) {
					t.Fatalf("accepted %v, want %v (each once, in order)", accepted, want)
				}
				if e.retries("invalid") == 0 {
					t.Fatal("retries_total{invalid} not counted")
				}
			})
		})
	}
}

// TestEnvelopeErrorRejectsAll: a 4xx naming a field outside the members
// concerns the whole batch: it cannot be isolated, and every member is
// rejected after one request.
func TestEnvelopeErrorRejectsAll(t *testing.T) {
	t.Parallel()
	for _, attr := range []string{"cohort_name", "action", "partner", "parameters", "cohort_id", "cohort_description"} {
		t.Run(attr, func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, mode string) {
				msg := attr + " is not valid"
				e := newEnv(t, mode, func(int, call) reply {
					return fail(400, "MissingAttributeError", msg, attr)
				}, nil)
				req := request(20)
				rej, err := e.client.Send(e.ctx(), req)
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
		})
	}
}

// TestSingleMember4xxWithoutAttributeStopsLine: one member, a 400 with no
// attribute (or no body at all): with no part to compare, nothing shows the
// member is at fault, so nothing is rejected; the line stops and the member
// is retried every AuthRetryInterval until the API takes it. With the uid
// attribute the same member is rejected at once.
func TestSingleMember4xxWithoutAttributeStopsLine(t *testing.T) {
	modes(t, func(t *testing.T, mode string) {
		const failures = 3
		malformed := fail(400, "Malformed JSON", "Could not decode the request body. The JSON was incorrect or not encoded as UTF-8.", "")
		var (
			mu          sync.Mutex
			stoppedSeen []bool
			e           *env
		)
		mu.Lock()
		e = newEnv(t, mode, func(n int, _ call) reply {
			mu.Lock()
			defer mu.Unlock()
			if n > 0 {
				stoppedSeen = append(stoppedSeen, e.client.LineStopped())
			}
			switch {
			case n == 0:
				return malformed
			case n < failures:
				return reply{status: 400}
			case n == failures:
				return ok()
			default: // the second Send
				return fail(400, "InvalidAttributeError", "uid is invalid", "uid")
			}
		}, nil)
		mu.Unlock()
		start := time.Now()
		rej, err := e.client.Send(t.Context(), request(1))
		if err != nil || len(rej) != 0 {
			t.Fatalf("Send = %+v, %v; want no rejection, nil", rej, err)
		}
		mu.Lock()
		seen := slices.Clone(stoppedSeen)
		mu.Unlock()
		if !slices.Equal(seen, []bool{true, true, true}) {
			t.Fatalf("LineStopped seen by the retries: %v, want all true", seen)
		}
		if e.client.LineStopped() || testutil.ToFloat64(e.m.LineStopped.WithLabelValues("invalid_batch")) != 0 {
			t.Fatal("the line is still stopped after the 2xx")
		}
		if mode == "mem" {
			if d := time.Since(start); d != stopPauses(failures) {
				t.Fatalf("Send took %v, want %v (%d stopped-line pauses)", d, stopPauses(failures), failures)
			}
		}
		rej, err = e.client.Send(t.Context(), request(1))
		if err != nil || len(rej) != 1 || rej[0].Reason != "400 InvalidAttributeError: uid is invalid" {
			t.Fatalf("rejections %+v, err %v", rej, err)
		}
		if e.client.LineStopped() {
			t.Fatal("a member rejection stopped the line")
		}
	})
}

// TestAuthFailure: 401, 403, 415 (and 404, 405, a redirect, a 409
// Authentication Mismatch) stop sending and retry every AuthRetryInterval,
// never rejecting; AuthFailing is true meanwhile and clears on the 2xx.
func TestAuthFailure(t *testing.T) {
	answers := map[string]reply{
		"401":                         fail(401, "Authentication required", "App Secret key mismatch. Please login to the dashboard to verify key", ""),
		"403":                         fail(403, "Account Suspended", "Your account is suspended. Please contact MoEngage team.", ""),
		"415":                         fail(415, "Unsupported media type", "Content type is not supported", ""),
		"404":                         {status: 404, body: "404 page not found"},
		"405":                         {status: 405},
		"302":                         {status: 302, header: map[string]string{"Location": "/elsewhere"}},
		"409 Authentication Mismatch": fail(409, "Authentication Mismatch", "App key mismatch in params and authentication", ""),
	}
	for name, answer := range answers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, mode string) {
				const failures = 4
				var (
					mu                     sync.Mutex
					e                      *env
					failingSeen, gaugeSeen []bool
				)
				mu.Lock()
				e = newEnv(t, mode, func(n int, _ call) reply {
					mu.Lock()
					defer mu.Unlock()
					if n > 0 { // observed while the previous answer's effects hold
						failingSeen = append(failingSeen, e.client.LineStopped())
						gaugeSeen = append(gaugeSeen, testutil.ToFloat64(e.m.AuthFailing) == 1)
					}
					if n < failures {
						return answer
					}
					return ok()
				}, func(c *sink.Config) {
					c.MaxElapsed = time.Millisecond // does not apply: auth retries forever
				})
				mu.Unlock()
				req := request(5)
				start := time.Now()
				rej, err := e.client.Send(t.Context(), req)
				if err != nil || len(rej) != 0 {
					t.Fatalf("rejections %v, err %v", rej, err)
				}
				calls := e.api.got()
				if len(calls) != failures+1 {
					t.Fatalf("%d requests, want %d", len(calls), failures+1)
				}
				checkBodies(t, calls, req)
				for i := range calls[1:] {
					if string(calls[i+1].body) != string(calls[0].body) {
						t.Fatal("the body changed between auth retries")
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if !slices.Equal(failingSeen, []bool{true, true, true, true}) || !slices.Equal(gaugeSeen, failingSeen) {
					t.Fatalf("AuthFailing during the outage: %v, gauge %v; want all true", failingSeen, gaugeSeen)
				}
				if e.client.LineStopped() || testutil.ToFloat64(e.m.AuthFailing) != 0 {
					t.Fatal("AuthFailing still set after the 2xx")
				}
				if mode == "mem" {
					if d := time.Since(start); d != stopPauses(failures) {
						t.Fatalf("Send took %v, want %v (%d stopped-line pauses)", d, stopPauses(failures), failures)
					}
				}
				if got := e.retries("auth"); got != failures {
					t.Fatalf("retries_total{auth} = %v, want %d", got, failures)
				}
				// Loud, but once: the repeating error is logged when it changes.
				if n := len(e.logs.lines(t, "sending is stopped")); n != 1 {
					t.Fatalf("%d error lines for the outage, want 1:\n%s", n, e.logs)
				}
				if n := len(e.logs.lines(t, "accepts the credentials again")); n != 1 {
					t.Fatalf("%d recovery lines, want 1", n)
				}
			})
		})
	}
}

// TestConfigErrorsStopSending: 401, 403, 415, 404 (and the other
// configuration errors) mark the client AuthFailing and are retried every
// AuthRetryInterval with the same body, never rejected nor dropped, until
// the API accepts.
func TestConfigErrorsStopSending(t *testing.T) {
	t.Parallel()
	const authRetry = 20 * time.Millisecond // newEnv's http-mode AuthRetryInterval
	for _, tc := range []struct {
		name string
		rep  reply
	}{
		{"401 key mismatch", fail(401, "Authentication required", "App Secret key mismatch. Please login to the dashboard to verify key", "")},
		{"401 no body", reply{status: 401}},
		{"403 blocked", fail(403, "BlockedClient", "Your account is suspended. Please contact MoEngage team.", "")},
		{"415", fail(415, "Unsupported media type", "Content type is not supported", "")},
		{"404", reply{status: 404, body: "404 page not found"}},
		{"405", reply{status: 405}},
		{"302", reply{status: 302, header: map[string]string{"Location": "/elsewhere"}}},
		{"409 Authentication Mismatch", fail(409, "Authentication Mismatch", "App key mismatch in params and authentication", "")},
		{"400 Authentication required", fail(400, "Authentication required", "Authentication Header Required", "uid")},
		// A 2xx that is not the API's answer: something else is at the
		// base URL (a proxy's page, another service).
		{"200 no body", reply{status: 200, noBody: true}},
		{"201 HTML", reply{status: 201, body: "<html>created</html>"}},
		{"202 not JSON", reply{status: 202, body: "not json"}},
		{"204", reply{status: 204, noBody: true}},
		{"200 another service's JSON", reply{status: 200, body: `{"ok":true,"items":[]}`}},
		{"200 unknown status", reply{status: 200, body: `{"status":"queued"}`}},
		{"200 JSON array", reply{status: 200, body: `[{"status":"success"}]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var accept atomic.Bool
			e := newEnv(t, "http", func(int, call) reply {
				if accept.Load() {
					return ok()
				}
				return tc.rep
			}, nil)
			req := request(9)
			res := e.goSend(e.ctx(), req)
			for range 3 {
				<-e.api.finished
			}
			if !e.client.LineStopped() {
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
			if e.client.LineStopped() {
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
			if got := accepted(t, calls); !slices.Equal(got, req.UIDs) {
				t.Fatalf("accepted %v, want %v", got, req.UIDs)
			}
			if got, want := e.allRetries(), len(calls)-1; got["auth"] != float64(want) || len(got) > 1 {
				t.Fatalf("retries_total = %v, want auth=%d", got, want)
			}
			if st := tc.rep.status; st >= 200 && st < 300 {
				code := strconv.Itoa(st) + "_not_api"
				if got, want := e.requests(code), len(calls)-1; got != float64(want) {
					t.Fatalf("requests_total{code=%s} = %v, want %d", code, got, want)
				}
				if !strings.Contains(e.logs.String(), "not the Cohort Sync API") {
					t.Fatalf("the log does not say what answered:\n%s", e.logs)
				}
			}
			// Logged loudly once, not once per attempt; and the recovery.
			if n := strings.Count(e.logs.String(), `"level":"ERROR"`); n != 1 {
				t.Fatalf("%d error-level log lines for %d failed attempts, want 1:\n%s", n, len(calls)-1, e.logs)
			}
			if !strings.Contains(e.logs.String(), "sending resumed") {
				t.Fatalf("no log line for the recovery:\n%s", e.logs)
			}
		})
	}
}

// TestConcurrentSendsShareAuthState: the stop for the credentials or the
// configuration is the client's, not a Send's: one Send's 2xx clears it
// for all, while another Send that set it has had no 2xx yet and still
// waits out its AuthRetryInterval (and then goes through without stopping
// the line again).
func TestConcurrentSendsShareAuthState(t *testing.T) {
	for _, tc := range []struct {
		name string
		rep  reply
		stop string // the line_stopped reason
	}{
		{"401", fail(401, "Authentication required", "Authentication Header Required", ""), "auth"},
		{"404", reply{status: 404, body: "404 page not found"}, "config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var accept atomic.Bool
				e := newEnv(t, "mem", func(int, call) reply {
					if accept.Load() {
						return ok()
					}
					return tc.rep
				}, nil)
				stopped := func() bool {
					return e.client.LineStopped() || testutil.ToFloat64(e.m.AuthFailing) != 0 ||
						testutil.ToFloat64(e.m.LineStopped.WithLabelValues(tc.stop)) != 0
				}
				send := func(cohort string) <-chan sendResult {
					req := request(2)
					req.CohortID = cohort
					return e.goSend(t.Context(), req)
				}
				const stagger = sink.DefaultAuthRetryInterval / 3
				a := send("a")
				time.Sleep(stagger)
				b := send("b")
				synctest.Wait() // both answered tc.rep, both wait to retry
				if !e.client.LineStopped() || testutil.ToFloat64(e.m.AuthFailing) != 1 ||
					testutil.ToFloat64(e.m.LineStopped.WithLabelValues(tc.stop)) != 1 {
					t.Fatal("the line is not stopped while the API answers", tc.rep.status)
				}
				accept.Store(true)
				time.Sleep(sink.DefaultAuthRetryInterval - stagger) // a's retry is accepted
				synctest.Wait()
				if r := <-a; r.err != nil || len(r.rej) != 0 {
					t.Fatalf("Send a = %v, %v; want nil", r.rej, r.err)
				}
				if n := len(e.api.got()); n != 3 {
					t.Fatalf("%d requests, want 3: a, b, then a again; b has had no 2xx yet", n)
				}
				if stopped() {
					t.Fatal("a's 2xx did not clear the stop while b still waits to retry")
				}
				select {
				case r := <-b:
					t.Fatalf("Send b returned %v, %v before its own retry", r.rej, r.err)
				default:
				}
				time.Sleep(stagger) // b's retry
				if r := <-b; r.err != nil || len(r.rej) != 0 {
					t.Fatalf("Send b = %v, %v; want nil", r.rej, r.err)
				}
				if stopped() {
					t.Fatal("the line is stopped after both were accepted")
				}
				if n := len(e.logs.lines(t, "accepts the credentials again")); n != 1 {
					t.Fatalf("%d recovery lines, want 1: the stop ended once", n)
				}
			})
		})
	}
}

// TestGivesUp: with MaxElapsed, a failure that persists ends in ErrGaveUp
// wrapping the last failure; auth failures do not count toward it, and
// progress restarts its clock.
func TestGivesUp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		rep    reply
		status int
	}{
		{"500", fail(500, "Server Error", "boom", ""), 500},
		{"503 Retry-After beyond MaxElapsed", reply{status: 503, header: map[string]string{"Retry-After": "3600"}}, 503},
		{"408", reply{status: 408}, 408},
		{"429 no header", reply{status: 429}, 429},
		{"429 Retry-After, Limiter", reply{status: 429, header: map[string]string{"Retry-After": "1"}}, 429},
		{"reset", reply{reset: true}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "http", func(int, call) reply { return tc.rep }, func(c *sink.Config) {
				c.MaxElapsed = 30 * time.Millisecond
				if tc.status == 429 {
					c.Limiter = ratelimit.NewLimiter(0)
				}
			})
			start := time.Now()
			rej, err := e.client.Send(e.ctx(), request(3))
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
		e := newEnv(t, "http", func(n int, _ call) reply {
			if n < 4 {
				return reply{status: 401}
			}
			return ok()
		}, func(c *sink.Config) { c.MaxElapsed = 5 * time.Millisecond })
		if rej, err := e.client.Send(e.ctx(), request(3)); err != nil || len(rej) != 0 {
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
		e := newEnv(t, "http", func(_ int, c call) reply {
			if len(c.req.UIDs) > 2 {
				return reply{status: 413}
			}
			mu.Lock()
			defer mu.Unlock()
			first, seen := firstSeen[c.req.UIDs[0]]
			if !seen {
				first = time.Now()
				firstSeen[c.req.UIDs[0]] = first
			}
			if time.Since(first) < maxElapsed/2 {
				return reply{status: 500}
			}
			return ok()
		}, func(c *sink.Config) { c.MaxElapsed = maxElapsed })
		start := time.Now()
		if rej, err := e.client.Send(e.ctx(), request(4)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v; want nil", rej, err)
		}
		if d := time.Since(start); d < maxElapsed {
			t.Fatalf("Send took %v: the test did not fail for longer than MaxElapsed in total", d)
		}
	})
}

// TestGivesUpWithinMaxElapsed: with MaxElapsed, Send returns ErrGaveUp
// wrapping the last failure, no later than MaxElapsed.
func TestGivesUpWithinMaxElapsed(t *testing.T) {
	modes(t, func(t *testing.T, mode string) {
		maxElapsed := 10 * time.Second
		if mode == "http" {
			maxElapsed = 300 * time.Millisecond
		}
		e := newEnv(t, mode, func(int, call) reply { return fail(503, "Server Error", "down", "") },
			func(c *sink.Config) { c.MaxElapsed = maxElapsed })
		start := time.Now()
		rej, err := e.client.Send(t.Context(), request(3))
		var se *sink.StatusError
		if !errors.Is(err, sink.ErrGaveUp) || !errors.As(err, &se) || se.Code != 503 || rej != nil {
			t.Fatalf("rejections %v, err = %v; want ErrGaveUp wrapping the 503", rej, err)
		}
		// Send never starts a wait ending past MaxElapsed; in http mode the
		// last attempt's own duration comes on top.
		limit := maxElapsed
		if mode == "http" {
			limit += 200 * time.Millisecond
		}
		if d := time.Since(start); d > limit {
			t.Fatalf("gave up after %v, past MaxElapsed %v", d, maxElapsed)
		}
		if n := len(e.api.got()); n < 3 {
			t.Fatalf("%d requests, want several", n)
		}
	})
}

// TestGivesUpOnNetworkErrors: the last failure may be a network error.
func TestGivesUpOnNetworkErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", func(int, call) reply { return reply{reset: true} },
			func(c *sink.Config) { c.MaxElapsed = 5 * time.Second })
		_, err := e.client.Send(t.Context(), request(3))
		if !errors.Is(err, sink.ErrGaveUp) || !strings.Contains(err.Error(), "connection reset") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestMaxElapsedRestartsOnProgress: MaxElapsed counts time without progress,
// not the whole Send: each part gets its own budget.
func TestMaxElapsedRestartsOnProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Four single-member parts each fail twice, then succeed. Every
		// backoff delay is in [1s, 3s]: a part takes at most 6s < MaxElapsed,
		// the whole Send at least 8s > MaxElapsed.
		const maxElapsed = 7 * time.Second
		tries := map[string]int{}
		e := newEnv(t, "mem", func(n int, c call) reply {
			if len(c.req.UIDs) > 1 {
				return fail(413, "Payload too large", "", "")
			}
			tries[c.req.UIDs[0]]++
			if tries[c.req.UIDs[0]] <= 2 {
				return reply{status: 503}
			}
			return ok()
		}, func(c *sink.Config) {
			c.InitialInterval, c.MaxInterval, c.MaxElapsed = 2*time.Second, 2*time.Second, maxElapsed
		})
		start := time.Now()
		if rej, err := e.client.Send(t.Context(), request(4)); err != nil || len(rej) != 0 {
			t.Fatalf("rejections %v, err %v", rej, err)
		}
		if d := time.Since(start); d <= maxElapsed {
			t.Fatalf("the Send took %v; the test wants more than MaxElapsed overall", d)
		}
	})
}

// TestRetryLogDeduplicated: a repeating failure is logged once, with the
// documented keys; a different one is logged again; recovery is logged.
func TestRetryLogDeduplicated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", func(n int, _ call) reply {
			switch {
			case n < 5: // the request_id differs on each answer
				r := fail(500, "Server Error", "boom", "")
				r.body = strings.Replace(r.body, "ReqIdAbc", fmt.Sprintf("Req%05d", n), 1)
				return r
			case n < 7:
				return reply{status: 502}
			case n < 8:
				return reply{reset: true}
			}
			return ok()
		}, nil)
		if _, err := e.client.Send(t.Context(), request(3)); err != nil {
			t.Fatal(err)
		}
		lines := e.logs.lines(t, "failed; retrying")
		if len(lines) != 3 {
			t.Fatalf("%d retry log lines, want 3 (500, 502, reset):\n%s", len(lines), e.logs)
		}
		for i, want := range []float64{500, 502, 0} {
			if lines[i]["status"] != want {
				t.Fatalf("line %d status %v, want %v", i, lines[i]["status"], want)
			}
		}
		for _, k := range []string{"err", "status", "attempt", "delay", "cohort_id", "action", "members", "component"} {
			if _, ok := lines[0][k]; !ok {
				t.Fatalf("retry log line lacks %q: %v", k, lines[0])
			}
		}
		if lines[0]["component"] != "sink" || lines[0]["cohort_id"] != "JKTAuqTRhC" || lines[0]["action"] != "add_members" ||
			lines[0]["members"] != 3.0 || lines[1]["attempt"] != 6.0 {
			t.Fatalf("unexpected values: %v / %v", lines[0], lines[1])
		}
		if lines[0]["level"] != "WARN" {
			t.Fatalf("level %v", lines[0]["level"])
		}
		if n := len(e.logs.lines(t, "succeeded after retrying")); n != 1 {
			t.Fatalf("%d recovery lines, want 1", n)
		}
	})
}
