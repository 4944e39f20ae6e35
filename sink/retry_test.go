package sink_test

// The rows of DESIGN.md's "Retry policy" table: what follows from each
// answer (accept, retry with backoff, split, reject, stop on a configuration
// error, give up), over a real socket and, with exact timing, inside
// testing/synctest bubbles. The 429 rows are in ratelimit_test.go.

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
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
