package sink_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

func TestSendAccepts2xx(t *testing.T) {
	answers := []reply{
		ok(),
		{status: 200},
		{status: 200, body: `{"status":"success","message":"ok","request_id":"abcdefgh","extra":{"nested":[1,2]}}`},
		{status: 201, body: `<html>created</html>`},
		{status: 202, body: `not json`},
		{status: 204},
	}
	modes(t, func(t *testing.T, mode string) {
		for i, a := range answers {
			e := newEnv(t, mode, func(int, call) reply { return a }, nil)
			rej, err := e.client.Send(t.Context(), request(3))
			if err != nil || len(rej) != 0 {
				t.Fatalf("answer %d (%d %q): rejections %v, err %v", i, a.status, a.body, rej, err)
			}
			if n := len(e.api.got()); n != 1 {
				t.Fatalf("answer %d: %d requests, want 1", i, n)
			}
			if got := e.requests(strconv.Itoa(a.status)); got != 1 {
				t.Fatalf("answer %d: requests_total{code=%d} = %v, want 1", i, a.status, got)
			}
		}
	})
}

// TestSendRetryTable: every retryable row of the retry table, then success.
// The delay before the second attempt must be the documented one.
func TestSendRetryTable(t *testing.T) {
	const (
		httpInitial = 20 * time.Millisecond // newEnv's http-mode backoff
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
		{name: "connection reset", first: func(time.Time) reply { return reply{reset: true} }, reason: "network", code: "0"},
		{name: "attempt timeout", first: func(time.Time) reply { return reply{hang: true} }, reason: "timeout", code: "0", hang: true},
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
				lim := sink.NewLimiter(0) // unlimited, but a 429 pauses it
				e := newEnv(t, mode, func(n int, c call) reply {
					if n == 0 {
						return tc.first(c.at)
					}
					return ok()
				}, func(c *sink.Config) { c.Limiter = lim })
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
					initial, timeout = httpInitial, 500*time.Millisecond
				}
				lo, hi := initial/2, initial*3/2 // first backoff interval, ±50% jitter
				if tc.fixed > 0 {
					lo, hi = tc.fixed, tc.fixed
					if mode == "http" && tc.minHTTP > 0 {
						lo = tc.minHTTP
					}
				}
				if tc.hang {
					lo, hi = lo+timeout, hi+timeout
				}
				if mode == "http" {
					hi += 2 * time.Second // scheduling slack on real time
				}
				if gap < lo || gap > hi {
					t.Fatalf("gap between attempts %v, want [%v, %v]", gap, lo, hi)
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

// TestRateLimited429PausesTheReplica: a 429 pauses the shared Limiter, so
// another sender (the batcher taking its next permit) waits too.
func TestRateLimited429PausesTheReplica(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := sink.NewLimiter(0)
		e := newEnv(t, "mem", func(n int, c call) reply {
			if n == 0 {
				return reply{status: 429, header: map[string]string{"X-Ratelimit-Reset": "42"}}
			}
			return ok()
		}, func(c *sink.Config) { c.Limiter = lim })
		start := time.Now()
		done := make(chan error)
		go func() {
			_, err := e.client.Send(t.Context(), request(2))
			done <- err
		}()
		synctest.Wait() // Send is parked on the limiter after the 429
		if err := lim.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 42*time.Second {
			t.Fatalf("another permit came after %v, want the 42s pause", d)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 42*time.Second {
			t.Fatalf("Send finished after %v, want 42s", d)
		}
	})
}

// TestRateLimited429WithoutLimiter: with no Limiter, the Send that got the
// 429 sleeps the delay itself, and counts it as rate-limit wait.
func TestRateLimited429WithoutLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", func(n int, c call) reply {
			if n == 0 {
				return reply{status: 429, header: map[string]string{"Retry-After": "7"}}
			}
			return ok()
		}, nil)
		start := time.Now()
		if _, err := e.client.Send(t.Context(), request(2)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 7*time.Second {
			t.Fatalf("Send took %v, want 7s", d)
		}
		if w := testutil.ToFloat64(e.m.RateLimitWait); w != 7 {
			t.Fatalf("rate_limit_wait_seconds_total = %v, want 7", w)
		}
	})
}

// TestSendSplits413: the server rejects bodies with more than k members;
// every member ends accepted, once, in order, by valid requests.
func TestSendSplits413(t *testing.T) {
	const n, k = 23, 3
	modes(t, func(t *testing.T, mode string) {
		e := newEnv(t, mode, func(_ int, c call) reply {
			if len(c.req.UIDs) > k {
				return fail(413, "Payload too large", "Payload can not exceed 128KB", "")
			}
			return ok()
		}, nil)
		req := request(n)
		rej, err := e.client.Send(t.Context(), req)
		if err != nil || len(rej) != 0 {
			t.Fatalf("rejections %v, err %v", rej, err)
		}
		calls := e.api.got()
		checkBodies(t, calls, req)
		var accepted []string
		for _, c := range calls {
			if len(c.req.UIDs) <= k {
				accepted = append(accepted, c.req.UIDs...)
			}
		}
		if !slices.Equal(accepted, req.UIDs) {
			t.Fatalf("accepted %v, want %v in order", accepted, req.UIDs)
		}
		if got, want := e.retries("too_large"), float64(len(calls)-1); got != want {
			t.Fatalf("retries_total{too_large} = %v, want %v (every request after the first)", got, want)
		}
	})
}

func TestSend413SingleMemberRejected(t *testing.T) {
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

// TestSendIsolatesInvalidMembers: the server answers 400 attribute uid to
// any body holding a bad uid; exactly the bad uids come back rejected.
func TestSendIsolatesInvalidMembers(t *testing.T) {
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

// TestSendEnvelopeErrorRejectsAll: a 400 about an envelope field cannot be
// isolated: every member is rejected after one request.
func TestSendEnvelopeErrorRejectsAll(t *testing.T) {
	for _, attr := range []string{"cohort_name", "action", "partner", "parameters", "cohort_id", "cohort_description"} {
		t.Run(attr, func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, mode string) {
				e := newEnv(t, mode, func(int, call) reply {
					return fail(400, "InvalidAttributeError", attr+" is invalid", attr)
				}, nil)
				req := request(9)
				rej, err := e.client.Send(t.Context(), req)
				if err != nil {
					t.Fatal(err)
				}
				if n := len(e.api.got()); n != 1 {
					t.Fatalf("%d requests, want 1", n)
				}
				if len(rej) != len(req.UIDs) {
					t.Fatalf("%d rejections, want %d", len(rej), len(req.UIDs))
				}
				for i, r := range rej {
					if r.UID != req.UIDs[i] || r.Reason != "400 InvalidAttributeError: "+attr+" is invalid" {
						t.Fatalf("rejection %d = %+v", i, r)
					}
				}
			})
		})
	}
}

// TestSendSingleMember4xxRejected: one member, a 400 with no attribute (and
// no body at all): rejected at once, the reason built from the status.
func TestSendSingleMember4xxRejected(t *testing.T) {
	modes(t, func(t *testing.T, mode string) {
		e := newEnv(t, mode, func(n int, _ call) reply {
			if n == 0 {
				return fail(400, "Malformed JSON", "Could not decode the request body. The JSON was incorrect or not encoded as UTF-8.", "")
			}
			return reply{status: 400}
		}, nil)
		rej, err := e.client.Send(t.Context(), request(1))
		if err != nil || len(rej) != 1 || rej[0].Reason != "400 Malformed JSON: Could not decode the request body. The JSON was incorrect or not encoded as UTF-8." {
			t.Fatalf("rejections %+v, err %v", rej, err)
		}
		rej, err = e.client.Send(t.Context(), request(1))
		if err != nil || len(rej) != 1 || rej[0].Reason != "400 Bad Request: no error message" {
			t.Fatalf("rejections %+v, err %v", rej, err)
		}
	})
}

// TestSendAuthFailure: 401, 403, 415 (and 404, 405, a redirect, a 409
// Authentication Mismatch) stop sending and retry every AuthRetryInterval,
// never rejecting; AuthFailing is true meanwhile and clears on the 2xx.
func TestSendAuthFailure(t *testing.T) {
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
						failingSeen = append(failingSeen, e.client.AuthFailing())
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
				if e.client.AuthFailing() || testutil.ToFloat64(e.m.AuthFailing) != 0 {
					t.Fatal("AuthFailing still set after the 2xx")
				}
				if mode == "mem" {
					if d := time.Since(start); d != failures*sink.DefaultAuthRetryInterval {
						t.Fatalf("Send took %v, want %d × AuthRetryInterval", d, failures)
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

// TestSendCancelledBetweenRetries: Send returns at once, with the ctx error
// and the last failure, when ctx ends while it waits to retry.
func TestSendCancelledBetweenRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", func(int, call) reply { return fail(503, "Server Error", "down", "") },
			func(c *sink.Config) { c.InitialInterval = time.Hour; c.MaxInterval = time.Hour })
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() {
			_, err := e.client.Send(ctx, request(2))
			done <- err
		}()
		synctest.Wait() // asleep in the backoff
		start := time.Now()
		cancel()
		err := <-done
		if time.Since(start) != 0 {
			t.Fatalf("Send returned after %v", time.Since(start))
		}
		var se *sink.StatusError
		if !errors.Is(err, context.Canceled) || !errors.As(err, &se) || se.Code != 503 {
			t.Fatalf("err = %v, want context.Canceled wrapping the 503", err)
		}
		if n := len(e.api.got()); n != 1 {
			t.Fatalf("%d requests, want 1", n)
		}
	})
}

func TestSendCancelledBetweenRetriesHTTP(t *testing.T) {
	first := make(chan struct{})
	e := newEnv(t, "http", func(n int, _ call) reply {
		if n == 0 {
			close(first)
		}
		return reply{status: 500}
	}, func(c *sink.Config) { c.InitialInterval = time.Hour; c.MaxInterval = time.Hour })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() {
		_, err := e.client.Send(ctx, request(2))
		done <- err
	}()
	<-first
	time.Sleep(20 * time.Millisecond) // let the answer arrive
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Send did not return promptly after cancellation")
	}
}

// TestSendDoesNotAbortAttemptUnderWay: cancelling ctx during an attempt lets
// the attempt finish (its context is not cancelled); an accepted answer
// completes the Send, a failure ends it without another attempt.
func TestSendDoesNotAbortAttemptUnderWay(t *testing.T) {
	for _, answer := range []reply{ok(), {status: 500}} {
		t.Run(strconv.Itoa(answer.status), func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, mode string) {
				started, release := make(chan struct{}), make(chan struct{})
				ctxErrAtAnswer := make(chan error, 1)
				e := newEnv(t, mode, func(int, call) reply {
					r := answer
					r.before = func(hr *http.Request) {
						close(started)
						<-release
						ctxErrAtAnswer <- hr.Context().Err()
					}
					return r
				}, func(c *sink.Config) { c.AttemptTimeout = time.Minute })
				var once sync.Once
				releaseOnce := func() { once.Do(func() { close(release) }) }
				t.Cleanup(releaseOnce) // before the server closes, even on failure
				ctx, cancel := context.WithCancel(t.Context())
				type result struct {
					rej []wire.Rejection
					err error
				}
				done := make(chan result, 1)
				go func() {
					rej, err := e.client.Send(ctx, request(3))
					done <- result{rej, err}
				}()
				<-started
				cancel()
				if mode == "mem" {
					synctest.Wait()
				} else {
					time.Sleep(50 * time.Millisecond)
				}
				select {
				case r := <-done:
					t.Fatalf("Send returned during the attempt: %v", r.err)
				default:
				}
				releaseOnce()
				r := <-done
				if err := <-ctxErrAtAnswer; err != nil {
					t.Fatalf("the attempt's context ended with the caller's: %v", err)
				}
				if answer.status == 200 {
					if r.err != nil || len(r.rej) != 0 {
						t.Fatalf("accepted attempt: rejections %v, err %v; want success", r.rej, r.err)
					}
				} else if !errors.Is(r.err, context.Canceled) {
					t.Fatalf("err = %v, want context.Canceled", r.err)
				}
				if n := len(e.api.got()); n != 1 {
					t.Fatalf("%d requests, want 1", n)
				}
			})
		})
	}
}

// TestSendCancelledBetweenSplitParts: without a Limiter, no part of a split
// is sent once ctx has ended.
func TestSendCancelledBetweenSplitParts(t *testing.T) {
	modes(t, func(t *testing.T, mode string) {
		ctx, cancel := context.WithCancel(t.Context())
		e := newEnv(t, mode, func(n int, c call) reply {
			if n == 0 {
				return fail(413, "Payload too large", "Payload can not exceed 128KB", "")
			}
			cancel() // the first half is being accepted when ctx ends
			return ok()
		}, nil)
		_, err := e.client.Send(ctx, request(4))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if n := len(e.api.got()); n != 2 {
			t.Fatalf("%d requests, want 2 (the whole, then the first half only)", n)
		}
	})
}

func TestSendCancelledBeforeStart(t *testing.T) {
	e := newEnv(t, "http", nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := e.client.Send(ctx, request(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if n := len(e.api.got()); n != 0 {
		t.Fatalf("%d requests after cancellation", n)
	}
}

// TestSendGivesUp: with MaxElapsed, Send returns ErrGaveUp wrapping the last
// failure, no later than MaxElapsed.
func TestSendGivesUp(t *testing.T) {
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

// TestSendGivesUpOnNetworkErrors: the last failure may be a network error.
func TestSendGivesUpOnNetworkErrors(t *testing.T) {
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

// TestSendOrderAndPermits: parts of a split go in member order, one at a
// time, each after a Limiter permit; the caller's permit covers only the
// first attempt.
func TestSendOrderAndPermits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := sink.NewLimiter(60) // one permit a second
		e := newEnv(t, "mem", func(_ int, c call) reply {
			if len(c.req.UIDs) > 2 {
				return fail(413, "Payload too large", "", "")
			}
			return ok()
		}, func(c *sink.Config) { c.Limiter = lim })
		if err := lim.Wait(t.Context()); err != nil { // the caller's permit
			t.Fatal(err)
		}
		start := time.Now()
		req := request(8)
		if _, err := e.client.Send(t.Context(), req); err != nil {
			t.Fatal(err)
		}
		calls := e.api.got()
		// 8 → 4+4 → 2+2, 2+2: 7 requests, the first at once, then 1/s.
		if len(calls) != 7 {
			t.Fatalf("%d requests, want 7", len(calls))
		}
		for i, c := range calls {
			if want := start.Add(time.Duration(i) * time.Second); !c.at.Equal(want) {
				t.Fatalf("request %d at +%v, want +%v", i, c.at.Sub(start), want.Sub(start))
			}
		}
		var order []string
		for _, c := range calls {
			if len(c.req.UIDs) <= 2 {
				order = append(order, c.req.UIDs...)
			}
		}
		if !slices.Equal(order, req.UIDs) {
			t.Fatalf("accepted in order %v, want %v", order, req.UIDs)
		}
		if w := testutil.ToFloat64(e.m.RateLimitWait); w != 6 {
			t.Fatalf("rate_limit_wait_seconds_total = %v, want 6", w)
		}
	})
}

// TestSendOneInFlight: concurrent Sends for different cohorts, each splitting
// and retrying; no Send ever has two requests in flight.
func TestSendOneInFlight(t *testing.T) {
	var (
		mu          sync.Mutex
		inFlight    = map[string]int{}
		maxInFlight int
	)
	e := newEnv(t, "http", func(n int, c call) reply {
		r := ok()
		switch {
		case len(c.req.UIDs) > 3:
			r = fail(413, "Payload too large", "", "")
		case n%3 == 0:
			r = reply{status: 502}
		}
		r.before = func(*http.Request) {
			mu.Lock()
			inFlight[c.req.CohortID]++
			maxInFlight = max(maxInFlight, inFlight[c.req.CohortID])
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
			mu.Lock()
			inFlight[c.req.CohortID]--
			mu.Unlock()
		}
		return r
	}, nil)
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			req := request(13)
			req.CohortID = "cohort" + strconv.Itoa(i)
			_, err := e.client.Send(t.Context(), req)
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if maxInFlight != 1 {
		t.Fatalf("max requests in flight for one Send = %d, want 1", maxInFlight)
	}
	if len(inFlight) != 8 {
		t.Fatalf("%d cohorts seen, want 8", len(inFlight))
	}
}
