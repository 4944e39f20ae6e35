package sink_test

// Cancellation: a Send whose ctx ends stops waiting at once, sends no
// further attempt nor part, and never aborts (nor shortens) an attempt
// already under way.

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestCancelledBetweenRetries: Send returns at once, with the ctx error
// and the last failure, when ctx ends while it waits to retry.
func TestCancelledBetweenRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", func(int, call) reply { return fail(503, "Server Error", "down", "") },
			func(c *sink.Config) { c.InitialInterval = time.Hour; c.MaxInterval = time.Hour })
		ctx, cancel := context.WithCancel(t.Context())
		res := e.goSend(ctx, request(2))
		synctest.Wait() // asleep in the backoff
		start := time.Now()
		cancel()
		err := (<-res).err
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

// TestCancelWhileWaiting: a Send waiting to retry over a real socket returns
// at once when its ctx ends, with an error wrapping ctx.Err() (and the last
// failure).
func TestCancelWhileWaiting(t *testing.T) {
	t.Parallel()
	const long = time.Minute
	slow := func(c *sink.Config) { c.InitialInterval, c.MaxInterval, c.AuthRetryInterval = long, long, long }
	for _, tc := range []struct {
		name   string
		rep    reply
		tweak  func(*sink.Config)
		status int // the *StatusError wrapped (0: none)
	}{
		{"500 backoff", reply{status: 500}, slow, 500},
		{"reset backoff", reply{reset: true}, slow, 0},
		{"401 auth retry", reply{status: 401}, slow, 401},
		{"429 paused Limiter", reply{status: 429, header: map[string]string{"Retry-After": "60"}},
			func(c *sink.Config) { slow(c); c.Limiter = ratelimit.NewLimiter(0) }, 429},
		{"429 without Limiter", reply{status: 429, header: map[string]string{"Retry-After": "60"}}, slow, 429},
		{"503 Retry-After", reply{status: 503, header: map[string]string{"Retry-After": "60"}}, nil, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "http", func(int, call) reply { return tc.rep }, tc.tweak)
			ctx, cancel := context.WithCancel(e.ctx())
			defer cancel()
			res := e.goSend(ctx, request(3))
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

// TestCancelWhileWaitingInBubble: ending ctx while Send waits (backoff,
// auth retry, 429 pause, Limiter permit) returns at that very instant.
func TestCancelWhileWaitingInBubble(t *testing.T) {
	for _, tc := range []struct {
		name string
		rep  reply
		rpm  float64 // the Limiter's rate (-1: no Limiter)
	}{
		{"backoff", reply{status: 500}, -1},
		{"network backoff", reply{reset: true}, -1},
		{"auth retry", reply{status: 403}, -1},
		{"429 pause", reply{status: 429, header: map[string]string{"Retry-After": "30"}}, 0},
		{"429 without Limiter", reply{status: 429, header: map[string]string{"Retry-After": "30"}}, -1},
		{"Limiter permit", reply{status: 500}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var lim *ratelimit.Limiter
				if tc.rpm >= 0 {
					lim = ratelimit.NewLimiter(tc.rpm)
				}
				e := newEnv(t, "mem", func(int, call) reply { return tc.rep },
					func(c *sink.Config) {
						if lim != nil {
							c.Limiter = lim
						}
						if tc.rpm > 0 {
							c.InitialInterval = time.Millisecond // then wait for the permit
						}
					})
				ctx, cancel := context.WithCancel(t.Context())
				res := e.goSend(ctx, request(2))
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
				var r sendResult
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

// TestCancelDoesNotAbortAttempt: an attempt under way when ctx ends runs to
// its end over a real socket: the server answers a client still connected,
// and Send returns that answer's outcome.
func TestCancelDoesNotAbortAttempt(t *testing.T) {
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
			e := newEnv(t, "http", func(int, call) reply {
				return reply{status: tc.status, hold: release}
			}, nil)
			ctx, cancel := context.WithCancel(e.ctx())
			defer cancel()
			res := e.goSend(ctx, request(5))
			<-e.api.arrived
			cancel()
			// That Send does not return before the attempt ends is proven,
			// without waiting in real time, by
			// TestCancelDoesNotAbortAttemptInBubble. Here, over a real socket
			// and the default client, the answer released after the
			// cancellation must reach a client still connected and decide
			// Send's result.
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

// TestCancelDoesNotAbortAttemptInBubble: an attempt under way when ctx ends
// is neither aborted nor shortened: it ends with its answer (to a request
// whose context is still live), or with AttemptTimeout; then Send returns.
func TestCancelDoesNotAbortAttemptInBubble(t *testing.T) {
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
				e := newEnv(t, "mem", func(int, call) reply {
					return reply{status: tc.status, body: okBody, hold: release}
				}, func(c *sink.Config) { c.AttemptTimeout = attemptTimeout })
				ctx, cancel := context.WithCancel(t.Context())
				start := time.Now()
				res := e.goSend(ctx, request(3))
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

// TestCancelledBetweenSplitParts: without a Limiter, no part of a split
// is sent once ctx has ended.
func TestCancelledBetweenSplitParts(t *testing.T) {
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

// TestCancelledBeforeSend: a Send whose ctx has already ended sends
// nothing.
func TestCancelledBeforeSend(t *testing.T) {
	modes(t, func(t *testing.T, mode string) {
		e := newEnv(t, mode, nil, nil)
		ctx, cancel := context.WithCancel(e.ctx())
		cancel()
		if _, err := e.client.Send(ctx, request(2)); !errors.Is(err, context.Canceled) {
			t.Fatalf("Send error %v, want context.Canceled", err)
		}
		if n := len(e.api.got()); n != 0 {
			t.Fatalf("%d requests after cancellation", n)
		}
	})
}
