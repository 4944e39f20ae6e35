package sink_test

// A budget per workspace (issue 21 item 3, the send side): each attempt
// takes its permit from its batch's workspace's Limiter, and a 429 or a
// spent window pauses that workspace's only.

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestLimitersPerWorkspace: WS_A's first request gets a 429 (Retry-After
// 30), WS_B's an acceptance that says its window is spent (reset 20):
// WS_A's Limiter is paused 30 s and WS_B's 20 s, each by its own answer
// only; a Send for the default workspace meanwhile is not held at all; and
// each attempt took its permit from its own workspace's Limiter.
func TestLimitersPerWorkspace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "key-a", "WS_B", "key-b", testWorkspace, "key-default")
		lims := map[string]*ratelimit.Limiter{"WS_A": ratelimit.NewLimiter(0), "WS_B": ratelimit.NewLimiter(0),
			testWorkspace: ratelimit.NewLimiter(0)}
		seenA := false
		e := newEnv(t, "mem", func(_ int, c call) reply {
			switch c.header.Get("Moe-Appkey") {
			case "WS_A":
				if !seenA {
					seenA = true
					return reply{status: 429, header: map[string]string{"Retry-After": "30"}}
				}
			case "WS_B":
				return reply{status: 200, body: okBody, header: map[string]string{"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "20"}}
			}
			return ok()
		}, func(c *sink.Config) {
			c.Targets = reg.lookup
			c.Limiters = func(ws string) sink.Limiter { return lims[ws] }
		})
		start := time.Now()
		resA := e.goSend(e.ctx(), wsRequest("WS_A", "c1", event.Add, 2))
		if _, err := e.client.Send(e.ctx(), wsRequest("WS_B", "c2", event.Add, 2)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if _, err := e.client.Send(e.ctx(), wsRequest("", "c3", event.Add, 2)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("the default workspace's Send took %v: held by another workspace's pause", d)
		}
		for ws, want := range map[string]time.Duration{"WS_A": 30 * time.Second, "WS_B": 20 * time.Second} {
			if p, _ := lims[ws].Paused(); p.Sub(start) != want {
				t.Errorf("%s's Limiter paused until +%v, want +%v", ws, p.Sub(start), want)
			}
		}
		if p, _ := lims[testWorkspace].Paused(); !p.IsZero() {
			t.Errorf("the default workspace's Limiter is paused until %v", p)
		}
		if r := <-resA; r.err != nil || r.at.Sub(start) != 30*time.Second {
			t.Errorf("WS_A's Send returned %v after %v, want nil after its 30 s pause", r.err, r.at.Sub(start))
		}
		for ws, want := range map[string]uint64{"WS_A": 2, "WS_B": 1, testWorkspace: 1} {
			if got, _ := lims[ws].Demand(); got != want {
				t.Errorf("%s's Limiter gave %d permits, want %d (one per attempt of its own)", ws, got, want)
			}
		}
	})
}
