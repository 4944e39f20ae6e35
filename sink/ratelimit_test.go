package sink_test

// Rate limiting in Send: the delay a 429 asks for (Retry-After, else
// x-ratelimit-reset), the Limiter pause it causes, the permits every retry
// and every part of a split take, and the order and concurrency of the
// requests. Exact timing is checked inside testing/synctest bubbles.

import (
	"net/http"
	"slices"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// Test429Delay: after a 429 the next attempt comes exactly when the server
// asked (Retry-After, else x-ratelimit-reset as delta or epoch), or after a
// backoff interval when it did not say; with a Limiter (which the 429
// pauses) and without one (Send sleeps).
func Test429Delay(t *testing.T) {
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
					var lim *ratelimit.Limiter
					if withLimiter {
						lim = ratelimit.NewLimiter(tc.rpm)
					}
					// newEnv moves the clock to memEpoch: epoch seconds are
					// then above 1e9, not read as delta seconds.
					e := newEnv(t, "mem", func(n int, c call) reply {
						if n == 0 {
							return reply{status: 429, header: tc.header(c.at),
								body: `{"status":"fail","error":{"message":"Rate limits for customers exceeded. Please Try After Some Time","type":"Rate Limits Exceeded","request_id":"onqucLYL"}}`}
						}
						return ok()
					}, func(c *sink.Config) {
						c.InitialInterval = initial
						if lim != nil {
							c.Limiter = lim
						}
					})
					rej, err := e.client.Send(t.Context(), request(3))
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
					if w := time.Duration(testutil.ToFloat64(e.m.RateLimitWait) * float64(time.Second)); w.Round(time.Millisecond) != gap.Round(time.Millisecond) {
						t.Fatalf("rate_limit_wait_seconds_total = %v, want the %v waited", w, gap)
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

// Test429DelayOverSockets is one row of Test429Delay over a real socket,
// measured with the wall clock.
func Test429DelayOverSockets(t *testing.T) {
	t.Parallel()
	for _, header := range []string{"Retry-After", "x-ratelimit-reset"} {
		t.Run(header, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "http", func(n int, _ call) reply {
				if n == 0 {
					return reply{status: 429, header: map[string]string{header: "1"}}
				}
				return ok()
			}, func(c *sink.Config) { c.Limiter = ratelimit.NewLimiter(0) })
			if rej, err := e.client.Send(e.ctx(), request(2)); err != nil || len(rej) != 0 {
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

// Test429PausesTheReplica: a 429 pauses the shared Limiter, so every user
// of it (another Send taking its next permit) waits too, not only the Send
// that got it.
func Test429PausesTheReplica(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header map[string]string
		pause  time.Duration
	}{
		{"Retry-After", map[string]string{"Retry-After": "10"}, 10 * time.Second},
		{"x-ratelimit-reset", map[string]string{"X-Ratelimit-Reset": "42"}, 42 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lim := ratelimit.NewLimiter(0)
				e := newEnv(t, "mem", func(n int, _ call) reply {
					if n == 0 {
						return reply{status: 429, header: tc.header}
					}
					return ok()
				}, func(c *sink.Config) { c.Limiter = lim })
				start := time.Now()
				res := e.goSend(t.Context(), request(2))
				synctest.Wait() // the 429 is in, the Send waits for a permit
				if err := lim.Wait(t.Context()); err != nil {
					t.Fatal(err)
				}
				if d := time.Since(start); d != tc.pause {
					t.Fatalf("another sender got a permit after %v, want the %v pause", d, tc.pause)
				}
				r := <-res
				if r.err != nil || r.at.Sub(start) != tc.pause {
					t.Fatalf("Send returned %v after %v, want nil after %v", r.err, r.at.Sub(start), tc.pause)
				}
			})
		})
	}
}

// Test429WithoutLimiter: with no Limiter, the Send that got the 429 sleeps
// the delay itself, and counts it as rate-limit wait.
func Test429WithoutLimiter(t *testing.T) {
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

// TestRetryAfter: the delay a response asks for.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   time.Duration
	}{
		{"none", nil, 0},
		{"Retry-After seconds", map[string]string{"Retry-After": "30"}, 30 * time.Second},
		{"Retry-After 5", map[string]string{"Retry-After": "5"}, 5 * time.Second},
		{"Retry-After spaces", map[string]string{"Retry-After": " 30 "}, 30 * time.Second},
		{"Retry-After fraction", map[string]string{"Retry-After": "0.25"}, 250 * time.Millisecond},
		{"Retry-After fraction and spaces", map[string]string{"Retry-After": " 1.5 "}, 1500 * time.Millisecond},
		{"Retry-After zero", map[string]string{"Retry-After": "0"}, 0},
		{"Retry-After negative", map[string]string{"Retry-After": "-5"}, 0},
		{"Retry-After -3", map[string]string{"Retry-After": "-3"}, 0},
		{"Retry-After garbage", map[string]string{"Retry-After": "soon"}, 0},
		{"Retry-After HTTP-date", map[string]string{"Retry-After": "Sat, 28 Nov 2026 10:00:42 GMT"}, 42 * time.Second},
		{"Retry-After HTTP-date +9s", map[string]string{"Retry-After": now.Add(9 * time.Second).Format(http.TimeFormat)}, 9 * time.Second},
		{"Retry-After past date", map[string]string{"Retry-After": "Sat, 28 Nov 2026 09:00:00 GMT"}, 0},
		{"Retry-After HTTP-date -9s", map[string]string{"Retry-After": now.Add(-9 * time.Second).Format(http.TimeFormat)}, 0},
		{"Retry-After a day: capped", map[string]string{"Retry-After": "86400"}, 15 * time.Minute},
		{"Retry-After capped", map[string]string{"Retry-After": "999999999999"}, 15 * time.Minute},
		{"Retry-After garbage, reset delta", map[string]string{"Retry-After": "later", "X-Ratelimit-Reset": "12"}, 12 * time.Second},
		{"Retry-After junk, reset delta 30", map[string]string{"Retry-After": "junk", "X-Ratelimit-Reset": "30"}, 30 * time.Second},
		{"reset delta", map[string]string{"x-ratelimit-reset": "59"}, 59 * time.Second},
		{"reset delta 30", map[string]string{"X-Ratelimit-Reset": "30"}, 30 * time.Second},
		{"reset epoch", map[string]string{"x-ratelimit-reset": "1795860020"}, 20 * time.Second}, // now + 20s
		{"reset epoch +42s", map[string]string{"X-Ratelimit-Reset": strconv.FormatInt(now.Unix()+42, 10)}, 42 * time.Second},
		{"reset epoch past", map[string]string{"x-ratelimit-reset": "1795850000"}, 0},
		{"reset epoch -42s", map[string]string{"X-Ratelimit-Reset": strconv.FormatInt(now.Unix()-42, 10)}, 0},
		{"reset epoch in ms: capped", map[string]string{"x-ratelimit-reset": "1795860020000"}, 15 * time.Minute},
		{"reset now in ms: capped", map[string]string{"X-Ratelimit-Reset": strconv.FormatInt(now.UnixMilli(), 10)}, 15 * time.Minute},
		{"reset garbage", map[string]string{"x-ratelimit-reset": "soon"}, 0},
		{"Retry-After over reset", map[string]string{"Retry-After": "2", "x-ratelimit-reset": "40"}, 2 * time.Second},
		{"Retry-After over reset 30", map[string]string{"Retry-After": "2", "X-Ratelimit-Reset": "30"}, 2 * time.Second},
	} {
		h := http.Header{}
		for k, v := range tc.header {
			h.Set(k, v)
		}
		if got := sink.RetryAfter(h, now); got != tc.want {
			t.Errorf("%s: RetryAfter(%v) = %v, want %v", tc.name, tc.header, got, tc.want)
		}
	}
}

// TestPermitsForRetriesAndParts: the first attempt, every retry and every
// part of a split takes its own permit, so a Send never goes faster than
// the Limiter.
func TestPermitsForRetriesAndParts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := ratelimit.NewLimiter(60) // one permit a second
		e := newEnv(t, "mem", func(n int, c call) reply {
			switch {
			case len(c.req.UIDs) > 2:
				return reply{status: 413}
			case n == 1:
				return reply{status: 500}
			}
			return ok()
		}, func(c *sink.Config) { c.Limiter = lim; c.InitialInterval = time.Nanosecond })
		start := time.Now()
		// 0: 413, 1: first half 500, 2: first half 200, 3: second half 200.
		if rej, err := e.client.Send(t.Context(), request(4)); err != nil || len(rej) != 0 {
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

// TestOrderAndPermits: parts of a split go in member order, one at a time,
// each after a Limiter permit, like the first attempt.
func TestOrderAndPermits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := ratelimit.NewLimiter(60) // one permit a second
		e := newEnv(t, "mem", func(_ int, c call) reply {
			if len(c.req.UIDs) > 2 {
				return fail(413, "Payload too large", "", "")
			}
			return ok()
		}, func(c *sink.Config) { c.Limiter = lim })
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

// TestOneInFlight: concurrent Sends for different cohorts, each splitting
// and retrying; no Send ever has two requests in flight.
func TestOneInFlight(t *testing.T) {
	e := newEnv(t, "http", func(n int, c call) reply {
		r := ok()
		switch {
		case len(c.req.UIDs) > 3:
			r = fail(413, "Payload too large", "", "")
		case n%3 == 0:
			r = reply{status: 502}
		}
		r.sleep = 2 * time.Millisecond // in flight for a while
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
	if n := e.api.mostInFlight(); n != 1 {
		t.Fatalf("max requests in flight for one Send = %d, want 1", n)
	}
	cohorts := map[string]bool{}
	for _, c := range e.api.got() {
		cohorts[c.req.CohortID] = true
	}
	if len(cohorts) != 8 {
		t.Fatalf("%d cohorts seen, want 8", len(cohorts))
	}
}

// TestWindowSpentPausesTheReplica: an acceptance that says the API's window
// is spent (x-ratelimit-remaining: 0) pauses the Limiter until the reset;
// one with requests left does not.
func TestWindowSpentPausesTheReplica(t *testing.T) {
	for _, tc := range []struct {
		name      string
		remaining string
		pause     time.Duration
	}{
		{"spent", "0", 20 * time.Second},
		{"requests left", "5", 0},
		{"no header", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lim := ratelimit.NewLimiter(0)
				e := newEnv(t, "mem", func(int, call) reply {
					h := map[string]string{"X-Ratelimit-Reset": "20"}
					if tc.remaining != "" {
						h["X-Ratelimit-Remaining"] = tc.remaining
					}
					return reply{status: 200, body: okBody, header: h}
				}, func(c *sink.Config) { c.Limiter = lim })
				start := time.Now()
				if rej, err := e.client.Send(t.Context(), request(2)); err != nil || len(rej) != 0 {
					t.Fatalf("Send = %v, %v", rej, err)
				}
				if err := lim.Wait(t.Context()); err != nil {
					t.Fatal(err)
				}
				if d := time.Since(start); d != tc.pause {
					t.Fatalf("the next permit came after %v, want %v", d, tc.pause)
				}
			})
		})
	}
}
