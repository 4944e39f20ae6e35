package sink_test

// Isolating splits and the batch-wide stop (DESIGN.md invariant 7): a
// member is rejected only with evidence that the fault is its own; a 4xx
// that hits every part of a batch alike stops the line.

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

// isolationBudget is the most requests an isolating split may take to find
// one bad member among n: the failing request, both halves at every level,
// then at most two to bracket the failure with acceptances (the member
// sent alone again if it failed before any acceptance, and a canary if none
// came after).
func isolationBudget(n int) int { return 1 + 2*int(math.Ceil(math.Log2(float64(n)))) + 2 }

// TestBatchWide4xxStopsLine: every request gets the same 4xx, with no
// attribute or one naming no member: nothing is rejected, Send keeps
// retrying (every AuthRetryInterval), LineStopped and the gauge are set,
// the isolating split costs at most 1 + 2·ceil(log2 n) requests per round;
// once the API takes the batch again, every member is accepted and the stop
// clears.
func TestBatchWide4xxStopsLine(t *testing.T) {
	t.Parallel()
	malformed := fail(400, "Malformed JSON", "Could not decode the request body. The JSON was incorrect or not encoded as UTF-8.", "")
	for _, tc := range []struct {
		name    string
		members int
		rep     reply
	}{
		{"400 Malformed JSON, 1000 members", 1000, malformed},
		{"400 Malformed JSON, 2 members", 2, malformed},
		{"400 Malformed JSON, 1 member", 1, malformed},
		{"400 no body, 37 members", 37, reply{status: 400}},
		{"400 Bad Request without attribute, 64 members", 64, fail(400, "Bad Request", "The request parameters are invalid", "")},
		{"422 attribute naming no field of the request, 10 members", 10, fail(422, "MissingAttributeError", "identifiers is not found in the payload", "identifiers")},
		{"409 no attribute, 5 members", 5, fail(409, "Conflict", "conflict", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var (
				recovered atomic.Bool
				mu        sync.Mutex
				firstStop = -1 // the request during which LineStopped was first seen
				e         *env
			)
			mu.Lock()
			e = newEnv(t, "http", func(n int, _ call) reply {
				mu.Lock()
				defer mu.Unlock()
				if firstStop < 0 && e.client.LineStopped() {
					firstStop = n
				}
				if recovered.Load() {
					return ok()
				}
				return tc.rep
			}, nil)
			mu.Unlock()
			req := request(tc.members)
			res := e.goSend(e.ctx(), req)

			// Three rounds at least: the first isolating split and two slow retries.
			deadline := time.Now().Add(10 * time.Second)
			for testutil.ToFloat64(e.m.Retries.WithLabelValues("invalid")) < float64(isolationBudget(tc.members)+2) {
				if time.Now().After(deadline) {
					t.Fatalf("Send did not keep retrying: %d requests", len(e.api.got()))
				}
				time.Sleep(time.Millisecond)
			}
			select {
			case r := <-res:
				t.Fatalf("Send returned %v, %v while every request fails", r.rej, r.err)
			default:
			}
			if !e.client.LineStopped() {
				t.Fatal("LineStopped() = false while the batch fails alike")
			}
			if g := testutil.ToFloat64(e.m.LineStopped.WithLabelValues("invalid_batch")); g != 1 {
				t.Fatalf("line_stopped{reason=invalid_batch} = %v, want 1", g)
			}
			if g := testutil.ToFloat64(e.m.AuthFailing); g != 0 {
				t.Fatalf("auth_failing = %v for a batch-wide 4xx, want 0", g)
			}
			mu.Lock()
			first := firstStop
			mu.Unlock()
			if budget := isolationBudget(tc.members); first < 1 || first > budget {
				t.Fatalf("the line stopped after %d requests, want 1..%d", first, budget)
			}
			t.Logf("%d members: the line stopped after %d requests", tc.members, first)

			recovered.Store(true)
			r := <-res
			if r.err != nil || len(r.rej) != 0 {
				t.Fatalf("Send = %v, %v; want no rejections, nil", r.rej, r.err)
			}
			calls := e.api.got()
			checkBodies(t, calls, req)
			// The recovery may come in the middle of an isolating split:
			// parts are then accepted out of order.
			if got := acceptedOnce(t, calls, req.UIDs); !slices.Equal(got, req.UIDs) {
				t.Fatalf("accepted %d members, want the %d of the batch, each once", len(got), len(req.UIDs))
			}
			if e.client.LineStopped() || testutil.ToFloat64(e.m.LineStopped.WithLabelValues("invalid_batch")) != 0 {
				t.Fatal("the line is still stopped after the batch was accepted")
			}
			if n := len(e.logs.lines(t, "every part of the batch alike")); n != 1 {
				t.Fatalf("%d error lines for the stop, want 1 (logged when it changes):\n%s", n, e.logs)
			}
			if n := len(e.logs.lines(t, "sending resumed")); n != 1 {
				t.Fatalf("%d recovery lines, want 1", n)
			}
		})
	}
}

// TestBatchWideStopIsPerBatch: another Send's 2xx does not clear the stop
// of a batch that still fails alike; the stop ends with its Send.
func TestBatchWideStopIsPerBatch(t *testing.T) {
	e := newEnv(t, "http", func(_ int, c call) reply {
		if c.req.CohortID == "broken" {
			return fail(400, "Bad Request", "The request parameters are invalid", "")
		}
		return ok()
	}, nil)
	ctx, cancel := contextWithCancel(e)
	broken := request(8)
	broken.CohortID = "broken"
	res := e.goSend(ctx, broken)
	waitFor(t, "the line to stop", e.client.LineStopped)
	for range 3 {
		if rej, err := e.client.Send(e.ctx(), request(4)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v", rej, err)
		}
		if !e.client.LineStopped() {
			t.Fatal("another cohort's 2xx cleared the stop of a batch that still fails")
		}
	}
	cancel()
	if r := <-res; r.err == nil {
		t.Fatal("the cancelled Send returned nil")
	}
	if e.client.LineStopped() || testutil.ToFloat64(e.m.LineStopped.WithLabelValues("invalid_batch")) != 0 {
		t.Fatal("the stop outlived its Send")
	}
}

// TestIsolatesOnePoisonedMember: the API answers 400 to any request that
// holds one poisoned member, with attribute uid or none. Only that member
// is rejected, every other is accepted once, and the split takes at most
// 1 + 2·ceil(log2 1000) = 21 requests.
func TestIsolatesOnePoisonedMember(t *testing.T) {
	t.Parallel()
	const members = 1000
	for _, attr := range []string{"uid", ""} {
		for _, poison := range []int{0, 1, 313, 499, 500, 998, 999} {
			t.Run(fmt.Sprintf("attribute %q, member %d", attr, poison), func(t *testing.T) {
				t.Parallel()
				modes(t, func(t *testing.T, mode string) {
					req := request(members)
					bad := req.UIDs[poison]
					e := newEnv(t, mode, func(_ int, c call) reply {
						if slices.Contains(c.req.UIDs, bad) {
							return fail(400, "Bad Request", "The request parameters are invalid", attr)
						}
						return ok()
					}, nil)
					rej, err := e.client.Send(t.Context(), req)
					if err != nil {
						t.Fatalf("Send: %v", err)
					}
					if len(rej) != 1 || rej[0].UID != bad || rej[0].Reason != "400 Bad Request: The request parameters are invalid" {
						t.Fatalf("rejections %+v, want only %s", rej, bad)
					}
					calls := e.api.got()
					checkBodies(t, calls, req)
					want := slices.Delete(slices.Clone(req.UIDs), poison, poison+1)
					if got := acceptedOnce(t, calls, req.UIDs); !slices.Equal(got, want) {
						t.Fatalf("accepted %d members, want the %d others, each once", len(got), len(want))
					}
					if budget := isolationBudget(members); len(calls) > budget {
						t.Fatalf("%d requests to isolate one member among %d, want <= %d", len(calls), members, budget)
					}
					if mode == "http" {
						t.Logf("isolating member %d among %d took %d requests (budget %d)", poison, members, len(calls), isolationBudget(members))
					}
					if e.client.LineStopped() {
						t.Fatal("the line stopped")
					}
				})
			})
		}
	}
}

// TestIsolationEvidence: who is rejected when several members fail, with
// and without the uid attribute.
func TestIsolationEvidence(t *testing.T) {
	t.Parallel()
	const reason = "400 Bad Request: bad"
	for _, tc := range []struct {
		name    string
		members int
		bad     []int
		attr    string
		// wantRej are the members rejected; nil with stop: the line stops
		// (and the test ends it) with nothing rejected.
		wantRej []int
		stop    bool
	}{
		// The first half's failure is followed down to one member without
		// evidence, then its sibling is accepted: evidence for it.
		{"no attribute, first member", 8, []int{0}, "", []int{0}, false},
		// Both halves fail; the first one's subtree finds evidence, and
		// the second is then split too.
		{"no attribute, one bad member in each half", 16, []int{3, 12}, "", []int{3, 12}, false},
		// A pair of adjacent bad members: the leaves fail alike, but their
		// parent's sibling was accepted.
		{"no attribute, adjacent pair", 16, []int{6, 7}, "", []int{6, 7}, false},
		// The first quarter fails down to a pair that fails alike, with no
		// evidence yet, and the next pair is set aside; evidence comes from
		// the second quarter, and the pair set aside is split then.
		{"no attribute, a dense first quarter", 16, []int{0, 1, 2, 3, 13}, "", []int{0, 1, 2, 3, 13}, false},
		// All bad, with the uid attribute: each one fails alone, naming a
		// member: rejected on that evidence.
		{"uid attribute, all of them", 6, []int{0, 1, 2, 3, 4, 5}, "uid", []int{0, 1, 2, 3, 4, 5}, false},
		// All bad, no attribute: no part is ever accepted: batch-wide.
		{"no attribute, all of them", 6, []int{0, 1, 2, 3, 4, 5}, "", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := request(tc.members)
			bad := map[string]bool{}
			for _, i := range tc.bad {
				bad[req.UIDs[i]] = true
			}
			e := newEnv(t, "http", func(_ int, c call) reply {
				if slices.ContainsFunc(c.req.UIDs, func(u string) bool { return bad[u] }) {
					return fail(400, "Bad Request", "bad", tc.attr)
				}
				return ok()
			}, nil)
			ctx, cancel := contextWithCancel(e)
			res := e.goSend(ctx, req)
			if tc.stop {
				waitFor(t, "the line to stop", e.client.LineStopped)
				cancel()
				if r := <-res; r.err == nil || len(r.rej) != 0 {
					t.Fatalf("Send = %v, %v; want an error and no rejections", r.rej, r.err)
				}
				return
			}
			r := <-res
			if r.err != nil {
				t.Fatalf("Send: %v", r.err)
			}
			var got []string
			for _, rj := range r.rej {
				got = append(got, rj.UID)
				if rj.Reason != reason {
					t.Fatalf("rejection %+v, want reason %q", rj, reason)
				}
			}
			var want []string
			for _, i := range tc.wantRej {
				want = append(want, req.UIDs[i])
			}
			if !slices.Equal(got, want) {
				t.Fatalf("rejected %v, want %v", got, want)
			}
			var others []string
			for _, u := range req.UIDs {
				if !bad[u] {
					others = append(others, u)
				}
			}
			if acc := acceptedOnce(t, e.api.got(), req.UIDs); !slices.Equal(acc, others) {
				t.Fatalf("accepted %v, want %v, each once", acc, others)
			}
			if e.client.LineStopped() {
				t.Fatal("the line stopped")
			}
		})
	}
}

// TestCohortAttributeStillRejectsAll: a 400 naming a cohort field rejects
// the batch after one request, and does not stop the line.
func TestCohortAttributeStillRejectsAll(t *testing.T) {
	e := newEnv(t, "http", func(int, call) reply {
		return fail(400, "Bad Request", "cohort_name has forbidden characters", "cohort_name")
	}, nil)
	rej, err := e.client.Send(e.ctx(), request(3))
	if err != nil || len(rej) != 3 || e.client.LineStopped() || len(e.api.got()) != 1 {
		t.Fatalf("Send = %v, %v after %d requests; stopped %v", rej, err, len(e.api.got()), e.client.LineStopped())
	}
}

// TestHeaderAttributeStopsLine: a 4xx naming a request header is the
// worker's fault, never the data's: the line stops (reason config).
func TestHeaderAttributeStopsLine(t *testing.T) {
	var accept atomic.Bool
	e := newEnv(t, "http", func(int, call) reply {
		if accept.Load() {
			return ok()
		}
		return fail(400, "MissingAttributeError", "MOE-APPKEY is not found", "MOE-APPKEY")
	}, nil)
	res := e.goSend(e.ctx(), request(3))
	waitFor(t, "the line to stop", e.client.LineStopped)
	if g := testutil.ToFloat64(e.m.LineStopped.WithLabelValues("config")); g != 1 {
		t.Fatalf("line_stopped{reason=config} = %v, want 1", g)
	}
	accept.Store(true)
	if r := <-res; r.err != nil || len(r.rej) != 0 {
		t.Fatalf("Send = %v, %v", r.rej, r.err)
	}
	if e.client.LineStopped() {
		t.Fatal("still stopped")
	}
	if !strings.Contains(e.logs.String(), "request header") {
		t.Fatalf("no log line naming the header fault:\n%s", e.logs)
	}
}

// acceptedOnce returns the members accepted, in the order of all, and fails
// the test if one was accepted twice, except by a canary: a request for one
// member already accepted, at most one per isolating split (a Send here).
func acceptedOnce(t *testing.T, calls []call, all []string) []string {
	t.Helper()
	seen := map[string]bool{}
	var out []string
	canaries := 0
	for i, c := range calls {
		if !c.decoded || !c.canonical {
			t.Fatalf("call %d: body is not a valid canonical request: %s", i, c.body)
		}
		if c.status < 200 || c.status >= 300 || !c.answered {
			continue
		}
		if len(c.req.UIDs) == 1 && seen[c.req.UIDs[0]] {
			canaries++
			continue
		}
		for _, u := range c.req.UIDs {
			if seen[u] {
				t.Fatalf("call %d: %s accepted twice", i, u)
			}
			seen[u] = true
			out = append(out, u)
		}
	}
	if canaries > 1 {
		t.Fatalf("%d canaries, want at most 1", canaries)
	}
	slices.SortFunc(out, func(a, b string) int { return slices.Index(all, a) - slices.Index(all, b) })
	return out
}

// waitFor polls cond (real time) for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	rig.WaitFor(t, 10*time.Second, what, cond)
}

// contextWithCancel is e.ctx() with a cancel func.
func contextWithCancel(e *env) (context.Context, context.CancelFunc) {
	return context.WithCancel(e.ctx())
}
