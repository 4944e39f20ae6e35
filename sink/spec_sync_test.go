package sink_test

// Exact timing of Send, inside testing/synctest bubbles with the in-memory
// transport (specMem): 429 delays, backoff, Limiter permits, cancellation,
// and the request metrics.

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestSpecSync429Delay: after a 429 the next attempt comes exactly when the
// server asked (Retry-After, else x-ratelimit-reset as delta or epoch), or
// after a backoff interval when it did not say; with a Limiter (which the
// 429 pauses) and without one (Send sleeps).
func TestSpecSync429Delay(t *testing.T) {
	const initial = 2 * time.Second
	type row struct {
		name   string
		header func(now time.Time) map[string]string
		want   func(now time.Time) time.Duration // 0: backoff, in [initial/2, initial*3/2]
		rpm    float64                           // the Limiter's rate
	}
	h := func(kv ...string) func(time.Time) map[string]string {
		return func(time.Time) map[string]string {
			m := map[string]string{}
			for i := 0; i < len(kv); i += 2 {
				m[kv[i]] = kv[i+1]
			}
			return m
		}
	}
	fixed := func(d time.Duration) func(time.Time) time.Duration { return func(time.Time) time.Duration { return d } }
	httpDate := func(now time.Time) time.Time { return now.Add(9 * time.Second).Truncate(time.Second) }
	epoch := func(now time.Time) int64 { return now.Add(12 * time.Second).Unix() }
	rows := []row{
		{name: "Retry-After seconds", header: h("Retry-After", "7"), want: fixed(7 * time.Second)},
		{name: "Retry-After fractional seconds", header: h("Retry-After", "1.5"), want: fixed(1500 * time.Millisecond)},
		{name: "Retry-After HTTP-date", header: func(now time.Time) map[string]string {
			return map[string]string{"Retry-After": httpDate(now).UTC().Format(http.TimeFormat)}
		}, want: func(now time.Time) time.Duration { return httpDate(now).Sub(now) }},
		{name: "x-ratelimit-reset delta", header: h("x-ratelimit-limit", "300", "x-ratelimit-remaining", "0", "x-ratelimit-reset", "5"),
			want: fixed(5 * time.Second)},
		{name: "x-ratelimit-reset epoch", header: func(now time.Time) map[string]string {
			return map[string]string{"x-ratelimit-reset": strconv.FormatInt(epoch(now), 10)}
		}, want: func(now time.Time) time.Duration { return time.Unix(epoch(now), 0).Sub(now) }},
		{name: "Retry-After wins over x-ratelimit-reset", header: h("Retry-After", "3", "x-ratelimit-reset", "30"), want: fixed(3 * time.Second)},
		{name: "unusable Retry-After, x-ratelimit-reset", header: h("Retry-After", "soon", "x-ratelimit-reset", "4"), want: fixed(4 * time.Second)},
		{name: "far future capped at 15m", header: h("Retry-After", "86400"), want: fixed(15 * time.Minute)},
		{name: "no header: backoff", header: h()},
		{name: "past epoch: backoff", header: func(now time.Time) map[string]string {
			return map[string]string{"x-ratelimit-reset": strconv.FormatInt(now.Add(-time.Hour).Unix(), 10)}
		}},
		{name: "Retry-After shorter than the spacing", header: h("Retry-After", "7"), want: fixed(10 * time.Second), rpm: 6},
		{name: "Retry-After longer than the spacing", header: h("Retry-After", "15"), want: fixed(15 * time.Second), rpm: 6},
	}
	for _, tc := range rows {
		for _, withLimiter := range []bool{true, false} {
			if tc.rpm != 0 && !withLimiter {
				continue
			}
			name := tc.name + "/without Limiter"
			if withLimiter {
				name = tc.name + "/Limiter"
			}
			t.Run(name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					// The bubble starts in 2000, when epoch seconds were
					// still below 1e9 and so read as delta seconds.
					time.Sleep(time.Until(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)))
					var lim *sink.Limiter
					if withLimiter {
						lim = sink.NewLimiter(tc.rpm)
					}
					e := specMem(t, func(n int, c specCall) specReply {
						if n == 0 {
							return specReply{status: 429, header: tc.header(c.at),
								body: `{"status":"fail","error":{"message":"Rate limits for customers exceeded. Please Try After Some Time","type":"Rate Limits Exceeded","request_id":"onqucLYL"}}`}
						}
						return specOK()
					}, func(c *sink.Config) { c.Limiter = lim; c.InitialInterval = initial })
					if lim != nil {
						if err := lim.Wait(t.Context()); err != nil { // the caller's permit
							t.Fatal(err)
						}
					}
					rej, err := e.client.Send(t.Context(), specRequest(3))
					if err != nil || len(rej) != 0 {
						t.Fatalf("Send = %v, %v", rej, err)
					}
					calls := e.api.got()
					if len(calls) != 2 {
						t.Fatalf("%d requests, want 2", len(calls))
					}
					gap := calls[1].at.Sub(calls[0].at)
					if tc.want == nil {
						if gap < initial/2 || gap > initial*3/2 {
							t.Fatalf("retried after %v, want a backoff interval in [%v, %v]", gap, initial/2, initial*3/2)
						}
					} else if want := tc.want(calls[0].at); gap != want {
						t.Fatalf("retried after %v, want exactly %v", gap, want)
					}
					{
						if w := time.Duration(testutil.ToFloat64(e.m.RateLimitWait) * float64(time.Second)); w.Round(time.Millisecond) != gap.Round(time.Millisecond) {
							t.Fatalf("rate_limit_wait_seconds_total = %v, want the %v waited", w, gap)
						}
					}
					if got := e.retries("rate_limited"); got != 1 {
						t.Fatalf("retries_total{rate_limited} = %v, want 1", got)
					}
					if got := e.requests("429"); got != 1 {
						t.Fatalf("requests_total{code=429} = %v, want 1", got)
					}
				})
			})
		}
	}
}

// TestSpec429DelayOverSockets is one row of TestSpecSync429Delay over a real
// socket, measured with the wall clock.
func TestSpec429DelayOverSockets(t *testing.T) {
	t.Parallel()
	for _, header := range []string{"Retry-After", "x-ratelimit-reset"} {
		t.Run(header, func(t *testing.T) {
			t.Parallel()
			e := specSocket(t, func(n int, _ specCall) specReply {
				if n == 0 {
					return specReply{status: 429, header: map[string]string{header: "1"}}
				}
				return specOK()
			}, func(c *sink.Config) { c.Limiter = sink.NewLimiter(0) })
			if rej, err := e.client.Send(specCtx(t), specRequest(2)); err != nil || len(rej) != 0 {
				t.Fatalf("Send = %v, %v", rej, err)
			}
			calls := e.api.got()
			if len(calls) != 2 {
				t.Fatalf("%d requests, want 2", len(calls))
			}
			if gap := calls[1].at.Sub(calls[0].at); gap < time.Second {
				t.Fatalf("retried after %v, before the requested 1s", gap)
			}
		})
	}
}

// TestSpecSync429PausesTheReplica: a 429 pauses every user of the Limiter,
// not only the Send that got it.
func TestSpecSync429PausesTheReplica(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := sink.NewLimiter(0)
		e := specMem(t, func(n int, _ specCall) specReply {
			if n == 0 {
				return specReply{status: 429, header: map[string]string{"Retry-After": "10"}}
			}
			return specOK()
		}, func(c *sink.Config) { c.Limiter = lim })
		start := time.Now()
		res := specGo(func() ([]wire.Rejection, error) { return e.client.Send(t.Context(), specRequest(2)) })
		synctest.Wait() // the 429 is in, the Send waits for a permit
		if err := lim.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 10*time.Second {
			t.Fatalf("another sender got a permit after %v, want 10s", d)
		}
		r := <-res
		if r.err != nil || r.at.Sub(start) != 10*time.Second {
			t.Fatalf("Send returned %v after %v, want nil after 10s", r.err, r.at.Sub(start))
		}
	})
}

// TestSpecSyncServerDelayOn5xx: a Retry-After on a 5xx raises the backoff
// interval to it, never lowers it.
func TestSpecSyncServerDelayOn5xx(t *testing.T) {
	for _, tc := range []struct {
		retryAfter string
		min, max   time.Duration
	}{
		{"8", 8 * time.Second, 8 * time.Second},
		{"0.1", 500 * time.Millisecond, 1500 * time.Millisecond}, // the backoff, InitialInterval 1s ±50%
	} {
		t.Run(tc.retryAfter, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := specMem(t, func(n int, _ specCall) specReply {
					if n == 0 {
						return specReply{status: 503, header: map[string]string{"Retry-After": tc.retryAfter}}
					}
					return specOK()
				}, func(c *sink.Config) { c.InitialInterval = time.Second })
				if rej, err := e.client.Send(t.Context(), specRequest(2)); err != nil || len(rej) != 0 {
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

// TestSpecSyncBackoff: the delays between retries grow by 1.5 from
// InitialInterval, with ±50% jitter, up to MaxInterval, and start again
// after progress.
func TestSpecSyncBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const failures = 8
		e := specMem(t, func(n int, c specCall) specReply {
			switch {
			case len(c.req.UIDs) > 1:
				return specReply{status: 413}
			case n <= failures, n == failures+2:
				return specReply{status: 500}
			}
			return specOK()
		}, func(c *sink.Config) { c.InitialInterval, c.MaxInterval = time.Second, 4*time.Second })
		// call 0: 413; calls 1..8: 500 for the first half; 9: accepted;
		// 10: the second half, 500; 11: accepted.
		if rej, err := e.client.Send(t.Context(), specRequest(2)); err != nil || len(rej) != 0 {
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

// TestSpecSyncPermitsForRetriesAndParts: the caller's permit covers the
// first attempt; every retry and every part of a split takes its own, so a
// Send never goes faster than the Limiter.
func TestSpecSyncPermitsForRetriesAndParts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := sink.NewLimiter(60) // one permit a second
		e := specMem(t, func(n int, c specCall) specReply {
			switch {
			case len(c.req.UIDs) > 2:
				return specReply{status: 413}
			case n == 1:
				return specReply{status: 500}
			}
			return specOK()
		}, func(c *sink.Config) { c.Limiter = lim; c.InitialInterval = time.Nanosecond })
		start := time.Now()
		if err := lim.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		// 0: 413, 1: first half 500, 2: first half 200, 3: second half 200.
		if rej, err := e.client.Send(t.Context(), specRequest(4)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v", rej, err)
		}
		calls := e.api.got()
		if len(calls) != 4 {
			t.Fatalf("%d requests, want 4", len(calls))
		}
		for i, c := range calls {
			if want := time.Duration(i) * time.Second; c.at.Sub(start) != want {
				t.Fatalf("request %d at %v, want %v", i, c.at.Sub(start), want)
			}
		}
		if w := testutil.ToFloat64(e.m.RateLimitWait); w < 2.99 || w > 3 {
			t.Fatalf("rate_limit_wait_seconds_total = %v, want about 3", w)
		}
	})
}

// TestSpecSyncCancelWhileWaiting: ending ctx while Send waits (backoff,
// auth retry, 429 pause, Limiter permit) returns at that very instant.
func TestSpecSyncCancelWhileWaiting(t *testing.T) {
	for _, tc := range []struct {
		name string
		rep  specReply
		rpm  float64 // the Limiter's rate (-1: no Limiter)
	}{
		{"backoff", specReply{status: 500}, -1},
		{"network backoff", specReply{reset: true}, -1},
		{"auth retry", specReply{status: 403}, -1},
		{"429 pause", specReply{status: 429, header: map[string]string{"Retry-After": "30"}}, 0},
		{"429 without Limiter", specReply{status: 429, header: map[string]string{"Retry-After": "30"}}, -1},
		{"Limiter permit", specReply{status: 500}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var lim *sink.Limiter
				if tc.rpm >= 0 {
					lim = sink.NewLimiter(tc.rpm)
					if err := lim.Wait(t.Context()); err != nil { // the caller's permit
						t.Fatal(err)
					}
				}
				e := specMem(t, func(int, specCall) specReply { return tc.rep },
					func(c *sink.Config) {
						c.Limiter = lim
						if tc.rpm > 0 {
							c.InitialInterval = time.Millisecond // then wait for the permit
						}
					})
				ctx, cancel := context.WithCancel(t.Context())
				res := specGo(func() ([]wire.Rejection, error) { return e.client.Send(ctx, specRequest(2)) })
				time.Sleep(100 * time.Millisecond)
				synctest.Wait()
				select {
				case r := <-res:
					t.Fatalf("Send returned early: %v, %v", r.rej, r.err)
				default:
				}
				cancel()
				cancelled := time.Now()
				synctest.Wait()
				var r specSendResult
				select {
				case r = <-res:
				default:
					t.Fatal("Send still waits after the cancellation")
				}
				if r.at.Sub(cancelled) != 0 {
					t.Fatalf("Send returned %v after the cancellation", r.at.Sub(cancelled))
				}
				if !errors.Is(r.err, context.Canceled) {
					t.Fatalf("Send error %v does not wrap context.Canceled", r.err)
				}
				if n := len(e.api.got()); n != 1 {
					t.Fatalf("%d requests, want 1", n)
				}
			})
		})
	}
}

// TestSpecSyncCancelDoesNotAbortAttempt: an attempt under way when ctx ends
// is neither aborted nor shortened: it ends with its answer, or with
// AttemptTimeout; then Send returns.
func TestSpecSyncCancelDoesNotAbortAttempt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  time.Duration // when the server answers, after the request arrived (0: never)
		status  int
		wantErr bool
	}{
		{"accepted", 10 * time.Second, 200, false},
		{"500", 10 * time.Second, 500, true},
		{"timeout", 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const attemptTimeout = 15 * time.Second
				release := make(chan struct{})
				e := specMem(t, func(int, specCall) specReply {
					return specReply{status: tc.status, body: specSuccess, hold: release}
				}, func(c *sink.Config) { c.AttemptTimeout = attemptTimeout })
				ctx, cancel := context.WithCancel(t.Context())
				start := time.Now()
				res := specGo(func() ([]wire.Rejection, error) { return e.client.Send(ctx, specRequest(3)) })
				synctest.Wait()
				cancel()
				if tc.answer > 0 {
					time.Sleep(tc.answer)
					synctest.Wait()
					select {
					case r := <-res:
						t.Fatalf("Send returned %v, %v before the attempt's answer", r.rej, r.err)
					default:
					}
					close(release)
				}
				r := <-res
				calls := e.api.got()
				if len(calls) != 1 {
					t.Fatalf("%d requests, want 1", len(calls))
				}
				if tc.answer == 0 {
					if d := r.at.Sub(start); d != attemptTimeout {
						t.Fatalf("Send returned after %v, want the AttemptTimeout %v", d, attemptTimeout)
					}
				} else if !calls[0].answered || r.at.Sub(start) != tc.answer {
					t.Fatalf("the attempt was not answered (%v) or Send returned after %v, want %v",
						calls[0].answered, r.at.Sub(start), tc.answer)
				}
				if !tc.wantErr {
					if r.err != nil || len(r.rej) != 0 {
						t.Fatalf("Send = %v, %v; want nil: the attempt under way was accepted", r.rej, r.err)
					}
					return
				}
				if !errors.Is(r.err, context.Canceled) {
					t.Fatalf("Send error %v does not wrap context.Canceled", r.err)
				}
			})
		})
	}
}

// TestSpecSyncCancelledBeforeSend: a Send whose ctx has already ended sends
// nothing.
func TestSpecSyncCancelledBeforeSend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := specMem(t, nil, nil)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := e.client.Send(ctx, specRequest(2)); !errors.Is(err, context.Canceled) {
			t.Fatalf("Send error %v, want context.Canceled", err)
		}
		if n := len(e.api.got()); n != 0 {
			t.Fatalf("%d requests after cancellation", n)
		}
	})
}

// TestSpecSyncMetrics: requests_total counts every attempt by action and
// code ("0": no answer), retries_total every repeated attempt by reason,
// request_duration_seconds every attempt, rate_limit_wait_seconds_total the
// 429 pause.
func TestSpecSyncMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		script := []specReply{
			{status: 500}, // 0
			{reset: true}, // 1: code 0, network
			{status: 429, header: map[string]string{"Retry-After": "2"}}, // 2
			{status: 408},               // 3
			{hold: make(chan struct{})}, // 4: no answer: attempt timeout, code 0
			{status: 413},               // 5: split [m000 m001] [m002 m003]
			{status: 401},               // 6: first half
			specOK(),                    // 7: first half accepted
			specFail(400, "InvalidAttributeError", "bad uid", "uid"), // 8: second half
			specOK(), // 9: m002
			specFail(400, "InvalidAttributeError", "bad uid", "uid"), // 10: m003 rejected
		}
		e := specMem(t, func(n int, _ specCall) specReply { return script[n] },
			func(c *sink.Config) { c.AttemptTimeout = 3 * time.Second })
		req := specRequest(4)
		req.Action = event.Remove
		rej, err := e.client.Send(t.Context(), req)
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		if want := []wire.Rejection{{UID: "m003", Reason: "400 InvalidAttributeError: bad uid"}}; !slices.Equal(rej, want) {
			t.Fatalf("rejections %v, want %v", rej, want)
		}
		if n := len(e.api.got()); n != len(script) {
			t.Fatalf("%d requests, want %d", n, len(script))
		}
		wantRequests := map[string]float64{"500": 1, "0": 2, "429": 1, "408": 1, "413": 1, "401": 1, "200": 2, "400": 2}
		for code, want := range wantRequests {
			if got := testutil.ToFloat64(e.m.Requests.WithLabelValues(string(event.Remove), code)); got != want {
				t.Errorf("requests_total{action=remove_members,code=%s} = %v, want %v", code, got, want)
			}
		}
		if n := testutil.CollectAndCount(e.m.Requests); n != len(wantRequests) {
			t.Errorf("requests_total has %d series, want %d", n, len(wantRequests))
		}
		wantRetries := map[string]float64{"server_error": 1, "network": 1, "rate_limited": 1, "timeout": 2,
			"too_large": 2, "auth": 1, "invalid": 2}
		if got := e.allRetries(); !maps.Equal(got, wantRetries) {
			t.Errorf("retries_total = %v, want %v", got, wantRetries)
		}
		var m dto.Metric
		if err := e.m.RequestDuration.Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetHistogram().GetSampleCount(); got != uint64(len(script)) {
			t.Errorf("request_duration_seconds count = %d, want %d", got, len(script))
		}
		if got := m.GetHistogram().GetSampleSum(); got != 3 { // only the timed-out attempt took time
			t.Errorf("request_duration_seconds sum = %v, want 3 (the attempt timeout)", got)
		}
		if got := testutil.ToFloat64(e.m.RateLimitWait); got != 2 {
			t.Errorf("rate_limit_wait_seconds_total = %v, want 2", got)
		}
		if got := testutil.ToFloat64(e.m.AuthFailing); got != 0 || e.client.AuthFailing() {
			t.Errorf("auth failing after acceptance: gauge %v, AuthFailing %v", got, e.client.AuthFailing())
		}
	})
}

// TestSpecRetryAfter: the delay a response asks for.
func TestSpecRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   time.Duration
	}{
		{"none", nil, 0},
		{"Retry-After seconds", map[string]string{"Retry-After": "30"}, 30 * time.Second},
		{"Retry-After spaces", map[string]string{"Retry-After": " 30 "}, 30 * time.Second},
		{"Retry-After fraction", map[string]string{"Retry-After": "0.25"}, 250 * time.Millisecond},
		{"Retry-After zero", map[string]string{"Retry-After": "0"}, 0},
		{"Retry-After negative", map[string]string{"Retry-After": "-5"}, 0},
		{"Retry-After HTTP-date", map[string]string{"Retry-After": "Sat, 28 Nov 2026 10:00:42 GMT"}, 42 * time.Second},
		{"Retry-After past date", map[string]string{"Retry-After": "Sat, 28 Nov 2026 09:00:00 GMT"}, 0},
		{"Retry-After capped", map[string]string{"Retry-After": "999999999999"}, 15 * time.Minute},
		{"Retry-After garbage, reset delta", map[string]string{"Retry-After": "later", "X-Ratelimit-Reset": "12"}, 12 * time.Second},
		{"reset delta", map[string]string{"x-ratelimit-reset": "59"}, 59 * time.Second},
		{"reset epoch", map[string]string{"x-ratelimit-reset": "1795860020"}, 20 * time.Second}, // now + 20s
		{"reset epoch past", map[string]string{"x-ratelimit-reset": "1795850000"}, 0},
		{"reset epoch in ms: capped", map[string]string{"x-ratelimit-reset": "1795860020000"}, 15 * time.Minute},
		{"reset garbage", map[string]string{"x-ratelimit-reset": "soon"}, 0},
		{"Retry-After over reset", map[string]string{"Retry-After": "2", "x-ratelimit-reset": "40"}, 2 * time.Second},
	} {
		h := http.Header{}
		for k, v := range tc.header {
			h.Set(k, v)
		}
		if got := sink.RetryAfter(h, now); got != tc.want {
			t.Errorf("%s: RetryAfter = %v, want %v", tc.name, got, tc.want)
		}
	}
}
