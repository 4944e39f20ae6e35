package sink_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestStatusFailIn2xxIsNotAcceptance: a 2xx whose body says "status":
// "fail" is retried with backoff and counted (requests_total code
// "200_fail", retries_total reason status_fail); the members are accepted
// only by the next, real, acceptance.
func TestStatusFailIn2xxIsNotAcceptance(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		rep  reply
		code string
	}{
		{"200 error envelope", fail(200, "Bad Request", "The request parameters are invalid", ""), "200_fail"},
		{"202 status fail only", reply{status: 202, body: `{"status":"fail"}`}, "202_fail"},
		{"200 status FAIL, spaces", reply{status: 200, body: `{ "status" : "FAIL", "message": "x" }`}, "200_fail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, mode string) {
				e := newEnv(t, mode, func(n int, _ call) reply {
					if n < 2 {
						return tc.rep
					}
					return ok()
				}, nil)
				req := request(3)
				start := time.Now()
				rej, err := e.client.Send(t.Context(), req)
				if err != nil || len(rej) != 0 {
					t.Fatalf("Send = %v, %v", rej, err)
				}
				if n := len(e.api.got()); n != 3 {
					t.Fatalf("%d requests, want 3", n)
				}
				if got := e.retries("status_fail"); got != 2 {
					t.Fatalf("retries_total{status_fail} = %v, want 2", got)
				}
				if got := e.requests(tc.code); got != 2 {
					t.Fatalf("requests_total{code=%s} = %v, want 2", tc.code, got)
				}
				if got := e.requests("200"); got != 1 {
					t.Fatalf("requests_total{code=200} = %v, want 1", got)
				}
				if mode == "mem" {
					// two backoff intervals: 500ms ±50%, then 750ms ±50%
					if d := time.Since(start); d < 500*time.Millisecond || d > 2*time.Second {
						t.Fatalf("Send took %v, want two backoff intervals", d)
					}
				}
			})
		})
	}
}

// TestStatusFailTakes4xxPath: a 2xx "status": "fail" is not retried
// forever. From its third identical answer within a Send it takes the path
// of a 400 with the same envelope: an isolating split that rejects, with
// evidence, the one member every request with it fails for; or, when every
// part fails alike, a stopped line (nothing rejected). Under a MaxElapsed
// that the old endless retries run into (ErrGaveUp).
func TestStatusFailTakes4xxPath(t *testing.T) {
	bad := fail(200, "Bad Request", "The request parameters are invalid", "")
	t.Run("one bad member", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, "mem", func(_ int, c call) reply {
				if slices.Contains(c.req.UIDs, "u1") {
					return bad
				}
				return ok()
			}, func(c *sink.Config) { c.MaxElapsed = 10 * time.Minute })
			rej, err := e.client.Send(t.Context(), request(4))
			if err != nil || len(rej) != 1 || rej[0].UID != "u1" {
				t.Fatalf("Send = %v, %v; want u1 rejected", rej, err)
			}
			if got, want := accepted(t, e.api.got()), []string{"u0", "u2", "u3"}; !slices.Equal(got, want) {
				t.Fatalf("accepted %v, want %v", got, want)
			}
			if got := e.retries("status_fail"); got != 2 {
				t.Fatalf("retries_total{status_fail} = %v, want 2 (then the 4xx path)", got)
			}
		})
	})
	t.Run("every part fails alike", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, "mem", func(int, call) reply { return bad },
				func(c *sink.Config) { c.MaxElapsed = 10 * time.Minute })
			ctx, cancel := context.WithCancel(t.Context())
			res := e.goSend(ctx, request(2))
			time.Sleep(20 * time.Minute)
			synctest.Wait()
			if !e.client.LineStopped() {
				t.Fatalf("line not stopped after 20 minutes of identical status fail answers")
			}
			n := len(e.api.got())
			cancel()
			r := <-res
			if r.err == nil || errors.Is(r.err, sink.ErrGaveUp) || len(r.rej) != 0 {
				t.Fatalf("Send = %v, %v; want stopped by ctx, nothing rejected", r.rej, r.err)
			}
			// 3 answers, then 3 per AuthRetryInterval (the batch, its two
			// halves): 40 intervals of 30 s in 20 minutes.
			if n > 3+3*41 {
				t.Fatalf("%d requests in 20 minutes, want a slow, stopped line", n)
			}
		})
	})
}
