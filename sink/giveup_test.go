package sink_test

// MaxElapsed: Send gives up (ErrGaveUp) after a failure that persists
// without progress, never on a stopped line.

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
	"github.com/cohortsync/cohortsync-worker/sink"
)

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
