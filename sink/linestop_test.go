package sink_test

// The rows of DESIGN.md's "Retry policy" that stop the line: a 4xx with no
// evidence against a member, the credentials, the configuration; and the
// stop shared by concurrent Sends.

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/sink"
)

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
