package sink_test

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// revokedA answers 401 to every request of workspace WS_A (or with ws's
// key "bad" in general), 200 to the others.
func revokedA(_ int, c call) reply {
	if c.header.Get("Moe-Appkey") == "WS_A" {
		return fail(401, "Authentication required", "App Secret key mismatch", "")
	}
	return ok()
}

// TestAuthStopIsPerWorkspace: workspace A's 401 stops A's line only. B's
// batches go through meanwhile, and B's 2xx does not clear A's stop (the
// stop was client-wide before issue 21 item 4: one 2xx of anyone cleared
// it). Readiness (LineStopped): with Targets, not-ready only while the
// default workspace or every workspace sent for is stopped; A alone
// stopped while B flows is ready.
func TestAuthStopIsPerWorkspace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "key-a", "WS_B", "key-b")
		e := newEnv(t, "mem", revokedA, func(c *sink.Config) { c.Targets = reg.lookup; c.WorkspaceID = "" })
		ctx := e.ctx()
		stuck := e.goSend(ctx, wsRequest("WS_A", "c1", event.Add, 2))
		synctest.Wait()
		authStopped := func() bool {
			return testutil.ToFloat64(e.m.LineStopped.WithLabelValues("auth")) == 1 &&
				testutil.ToFloat64(e.m.AuthFailing) == 1
		}
		if !authStopped() || !e.client.LineStopped() {
			t.Fatal("A's 401 did not stop the line (A is the only workspace sent for)")
		}
		for i := range 3 {
			if _, err := e.client.Send(ctx, wsRequest("WS_B", "c1", event.Add, 1+i)); err != nil {
				t.Fatalf("WS_B: %v", err)
			}
			if !authStopped() {
				t.Fatalf("B's 2xx #%d cleared A's stop for the credentials", i+1)
			}
		}
		if e.client.LineStopped() {
			t.Fatal("LineStopped (not-ready) while only A is stopped and B flows")
		}
		time.Sleep(sink.DefaultAuthRetryInterval + time.Second) // A's probe: 401 again
		if !authStopped() {
			t.Fatal("A's stop ended without a 2xx of A")
		}
		select {
		case r := <-stuck:
			t.Fatalf("A's Send returned %v, %v with its key revoked", r.rej, r.err)
		default:
		}
		n := 0
		for _, c := range e.api.got() {
			if c.header.Get("Moe-Appkey") == "WS_A" && string(c.body) != "{}" { // not the blocked view's probes
				n++
			}
		}
		if n != 2 {
			t.Fatalf("%d requests of A's batch, want 2: the first and one retry after the stop pause", n)
		}
	})
}

// TestDefaultWorkspaceStopMakesNotReady: with Targets, the default
// workspace's stop makes the worker not-ready even while another flows.
func TestDefaultWorkspaceStopMakesNotReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "key-a", "WS_B", "key-b")
		e := newEnv(t, "mem", revokedA, func(c *sink.Config) { c.Targets = reg.lookup; c.WorkspaceID = "WS_A" })
		ctx := e.ctx()
		if _, err := e.client.Send(ctx, wsRequest("WS_B", "c1", event.Add, 1)); err != nil {
			t.Fatal(err)
		}
		e.goSend(ctx, wsRequest("", "c1", event.Add, 1)) // the default: WS_A
		synctest.Wait()
		if !e.client.LineStopped() {
			t.Fatal("the default workspace is stopped but LineStopped is false")
		}
	})
}

// TestTargetsDoNotReloadTheDefaultKey: with Targets, APIKeyFunc is not
// used (Config's contract): a 401 of a workspace does not re-read the
// default workspace's key, nor log that "the API key changed" (it did, for
// the default workspace, at another workspace's 401, since the Client's
// own key was "" with a registry).
func TestTargetsDoNotReloadTheDefaultKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "key-a", "WS_B", "key-b")
		var calls atomic.Int64
		var fixed atomic.Bool
		e := newEnv(t, "mem", func(_ int, c call) reply {
			if c.header.Get("Moe-Appkey") == "WS_A" && !fixed.Load() {
				return fail(401, "Authentication required", "App Secret key mismatch", "")
			}
			return ok()
		}, func(c *sink.Config) {
			c.Targets, c.WorkspaceID, c.APIKey = reg.lookup, "WS_B", ""
			c.APIKeyFunc = func() (string, error) { calls.Add(1); return "key-b", nil }
		})
		r := e.goSend(e.ctx(), wsRequest("WS_A", "c1", event.Add, 1))
		synctest.Wait()
		fixed.Store(true)
		if res := <-r; res.err != nil {
			t.Fatal(res.err)
		}
		if n := calls.Load(); n != 0 {
			t.Errorf("APIKeyFunc called %d times after WS_A's 401, want 0", n)
		}
		if lines := e.logs.lines(t, "the API key changed"); len(lines) != 0 {
			t.Errorf("logged %v", lines)
		}
	})
}
