package sink_test

// The 4xx rows of DESIGN.md's "Retry policy" that reject members: an
// isolating split finds the members at fault; a 4xx naming a field of the
// cohort rejects them all.

import (
	"slices"
	"strconv"
	"testing"
)

// TestIsolatesInvalidMembers: a 400 naming the uid attribute is split until
// the bad members are alone; exactly those are rejected.
func TestIsolatesInvalidMembers(t *testing.T) {
	t.Parallel()
	const (
		typ    = "InvalidAttributeError"
		msg    = "uid is invalid"
		reason = "400 " + typ + ": " + msg
	)
	for _, tc := range []struct {
		name    string
		members int
		bad     []int
	}{
		{"one in the middle", 37, []int{17}},
		{"first and last", 37, []int{0, 36}},
		{"a run", 40, []int{9, 10, 11, 12}},
		{"scattered", 64, []int{1, 5, 22, 23, 40, 63}},
		{"all of them", 6, []int{0, 1, 2, 3, 4, 5}},
		{"single member", 1, []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := request(tc.members)
			bad := map[string]bool{}
			var wantRej, wantOK []string
			for i, u := range req.UIDs {
				if slices.Contains(tc.bad, i) {
					bad[u] = true
					wantRej = append(wantRej, u)
				} else {
					wantOK = append(wantOK, u)
				}
			}
			e := newEnv(t, "http", func(_ int, c call) reply {
				if slices.ContainsFunc(c.req.UIDs, func(u string) bool { return bad[u] }) {
					return fail(400, typ, msg, "uid")
				}
				return ok()
			}, nil)
			rej, err := e.client.Send(e.ctx(), req)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			var gotRej []string
			for _, r := range rej {
				gotRej = append(gotRej, r.UID)
				if r.Reason != reason {
					t.Fatalf("rejection %s: reason %q, want %q", r.UID, r.Reason, reason)
				}
			}
			if !slices.Equal(gotRej, wantRej) {
				t.Fatalf("rejected %v, want %v", gotRej, wantRej)
			}
			calls := e.api.got()
			if got := accepted(t, calls); !slices.Equal(got, wantOK) {
				t.Fatalf("accepted, in order:\n%v\nwant\n%v", got, wantOK)
			}
			if len(calls) > 2*tc.members {
				t.Fatalf("%d requests for %d members", len(calls), tc.members)
			}
			if got, want := e.allRetries(), len(calls)-1; got["invalid"] != float64(want) || len(got) > 1 {
				t.Fatalf("retries_total = %v, want invalid=%d", got, want)
			}
		})
	}
}

// TestIsolatesInvalidMembersPerStatus: the server answers 400, 409 or 422
// attribute uid to any body holding a bad uid; exactly the bad uids come
// back rejected, each with the reason the server gave for it.
func TestIsolatesInvalidMembersPerStatus(t *testing.T) {
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

// TestEnvelopeErrorRejectsAll: a 4xx naming a field outside the members
// concerns the whole batch: it cannot be isolated, and every member is
// rejected after one request.
func TestEnvelopeErrorRejectsAll(t *testing.T) {
	t.Parallel()
	for _, attr := range []string{"cohort_name", "action", "partner", "parameters", "cohort_id", "cohort_description"} {
		t.Run(attr, func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, mode string) {
				msg := attr + " is not valid"
				e := newEnv(t, mode, func(int, call) reply {
					return fail(400, "MissingAttributeError", msg, attr)
				}, nil)
				req := request(20)
				rej, err := e.client.Send(e.ctx(), req)
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				if n := len(e.api.got()); n != 1 {
					t.Fatalf("%d requests, want 1", n)
				}
				want := "400 MissingAttributeError: " + msg
				if len(rej) != len(req.UIDs) {
					t.Fatalf("%d rejections, want %d", len(rej), len(req.UIDs))
				}
				for i, r := range rej {
					if r.UID != req.UIDs[i] || r.Reason != want {
						t.Fatalf("rejection %d = %+v, want {%s %q}", i, r, req.UIDs[i], want)
					}
				}
				if r := e.allRetries(); len(r) != 0 {
					t.Fatalf("retries_total = %v, want none", r)
				}
			})
		})
	}
}
