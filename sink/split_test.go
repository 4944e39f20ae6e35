package sink_test

// The 413 rows of DESIGN.md's "Retry policy": a request too large for the
// server is split in halves; a member too large alone is rejected.

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestSplits413: a 413 halves the request until the server takes it; every
// member ends accepted, once, in order, by valid requests.
func TestSplits413(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ members, maxMembers int }{
		{2, 1}, {10, 1}, {23, 3}, {37, 3}, {37, 7}, {64, 16}, {100, 99},
	} {
		t.Run(fmt.Sprintf("%d members, server takes %d", tc.members, tc.maxMembers), func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, mode string) {
				e := newEnv(t, mode, func(_ int, c call) reply {
					if len(c.req.UIDs) > tc.maxMembers {
						return fail(413, "Payload too large", "Payload can not exceed 128KB", "")
					}
					return ok()
				}, nil)
				req := request(tc.members)
				rej, err := e.client.Send(e.ctx(), req)
				if err != nil || len(rej) != 0 {
					t.Fatalf("Send = %v, %v; want no rejections, nil", rej, err)
				}
				calls := e.api.got()
				// Every member accepted exactly once, the accepted requests in
				// member order.
				if got := accepted(t, calls); !slices.Equal(got, req.UIDs) {
					t.Fatalf("accepted, in order:\n%v\nwant\n%v", got, req.UIDs)
				}
				checkBodies(t, calls, req)
				for i, c := range calls {
					if !contiguous(c.req.UIDs, req.UIDs) {
						t.Fatalf("call %d: members %v are not a run of the request", i, c.req.UIDs)
					}
				}
				// Every request but the first is the first attempt of a half.
				if got, want := e.allRetries(), len(calls)-1; got["too_large"] != float64(want) || len(got) > 1 {
					t.Fatalf("retries_total = %v, want too_large=%d (every request after the first)", got, want)
				}
				if got, want := e.requests("413")+e.requests("200"), float64(len(calls)); got != want {
					t.Fatalf("requests_total 413+200 = %v, want %v", got, want)
				}
			})
		})
	}
}

func Test413SingleMemberRejected(t *testing.T) {
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
