package sink_test

import (
	"errors"
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

// TestStatusFailGivesUp: a 2xx "fail" that persists ends in ErrGaveUp
// under MaxElapsed, like a 5xx, wrapping the answer.
func TestStatusFailGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", func(int, call) reply {
			return fail(200, "Bad Request", "The request parameters are invalid", "")
		}, func(c *sink.Config) { c.MaxElapsed = 3 * time.Second })
		_, err := e.client.Send(t.Context(), request(2))
		var se *sink.StatusError
		if !errors.Is(err, sink.ErrGaveUp) || !errors.As(err, &se) || se.Code != 200 {
			t.Fatalf("err = %v, want ErrGaveUp wrapping the 200 fail", err)
		}
	})
}
