package sink_test

// Many workspaces, one Client (issue 21, the send side): each batch goes to
// its own workspace's target, with the key as of its attempt.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// targets is a registry of workspaces for Config.Targets: ID → key, each
// at https://<id lowercased>.example. It is safe for concurrent use.
type targets struct {
	mu   sync.Mutex
	keys map[string]string
}

func newTargets(kv ...string) *targets {
	t := &targets{keys: map[string]string{}}
	for i := 0; i < len(kv); i += 2 {
		t.keys[kv[i]] = kv[i+1]
	}
	return t
}

func (t *targets) set(id, key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keys[id] = key
}

func (t *targets) lookup(id string) (sink.Target, error) {
	t.mu.Lock()
	_, ok := t.keys[id]
	t.mu.Unlock()
	if !ok {
		return sink.Target{}, fmt.Errorf("%s: %w", id, sink.ErrUnknownWorkspace)
	}
	return sink.Target{ID: id, BaseURL: "https://" + strings.ToLower(id) + ".example/",
		Key: func() (string, error) {
			t.mu.Lock()
			defer t.mu.Unlock()
			k, ok := t.keys[id]
			if !ok {
				return "", errors.New("removed")
			}
			return k, nil
		}}, nil
}

// basicFor is the Authorization header value of workspace ws with key.
func basicFor(ws, key string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(ws+":"+key))
}

// wsRequest is request(n) for workspace ws and cohort cohort.
func wsRequest(ws, cohort string, a event.Action, n int) wire.Request {
	r := request(n)
	r.Workspace, r.CohortID, r.Action = ws, cohort, a
	return r
}

// checkCall fails unless c went to ws's target with key.
func checkCall(t *testing.T, c call, ws, key string) {
	t.Helper()
	if got := c.header.Get("Authorization"); got != basicFor(ws, key) {
		t.Errorf("request for %s: Authorization %q, want %s with its key %q", ws, got, ws, key)
	}
	if got := c.header.Get("Moe-Appkey"); got != ws {
		t.Errorf("request for %s: MOE-APPKEY %q", ws, got)
	}
	if want := strings.ToLower(ws) + ".example"; c.host != want || c.path != sink.Path {
		t.Errorf("request for %s: went to %s%s, want %s%s", ws, c.host, c.path, want, sink.Path)
	}
}

// TestTargetsCarryEachWorkspaceCredentials: batches of two workspaces,
// sent by one Client, each go to their own workspace's base URL with its ID
// and key; a batch with no workspace goes to the default one.
func TestTargetsCarryEachWorkspaceCredentials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "key-a", "WS_B", "key-b", testWorkspace, "key-default")
		e := newEnv(t, "mem", nil, func(c *sink.Config) { c.Targets = reg.lookup })
		for _, ws := range []string{"WS_A", "WS_B", ""} {
			if rej, err := e.client.Send(e.ctx(), wsRequest(ws, "c1", event.Add, 2)); err != nil || len(rej) != 0 {
				t.Fatalf("Send for %q = %v, %v", ws, rej, err)
			}
		}
		calls := e.api.got()
		if len(calls) != 3 {
			t.Fatalf("%d requests, want 3", len(calls))
		}
		checkCall(t, calls[0], "WS_A", "key-a")
		checkCall(t, calls[1], "WS_B", "key-b")
		checkCall(t, calls[2], testWorkspace, "key-default")
		for _, c := range calls {
			if !c.canonical || strings.Contains(string(c.body), "WS_") {
				t.Errorf("body %s: not the canonical body, or it names a workspace", c.body)
			}
		}
	})
}

// TestTargetKeyRotationUsedNextAttempt: a workspace's key rotates in the
// registry. A Send after it uses the new key; and an attempt rejected (401)
// with the old key, the key having rotated meanwhile, is retried at once
// with the new one, not after the stop pause.
func TestTargetKeyRotationUsedNextAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "key-1")
		e := newEnv(t, "mem", func(n int, c call) reply {
			if c.header.Get("Authorization") == basicFor("WS_A", "key-3") {
				return ok()
			}
			if n == 1 { // the key rotates while the answer is on its way
				reg.set("WS_A", "key-3")
				return fail(401, "Authentication required", "App Secret key mismatch", "")
			}
			if n == 0 && c.header.Get("Authorization") == basicFor("WS_A", "key-1") {
				return ok()
			}
			return fail(401, "Authentication required", "App Secret key mismatch", "")
		}, func(c *sink.Config) { c.Targets = reg.lookup })
		if _, err := e.client.Send(e.ctx(), wsRequest("WS_A", "c1", event.Add, 1)); err != nil {
			t.Fatal(err)
		}
		reg.set("WS_A", "key-2") // rotated between two Sends: used by the next one
		start := time.Now()
		if rej, err := e.client.Send(e.ctx(), wsRequest("WS_A", "c1", event.Add, 1)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v", rej, err)
		}
		calls := e.api.got()
		if len(calls) != 3 {
			t.Fatalf("%d requests, want 3 (key-1, key-2 rejected, key-3)", len(calls))
		}
		checkCall(t, calls[0], "WS_A", "key-1")
		checkCall(t, calls[1], "WS_A", "key-2")
		checkCall(t, calls[2], "WS_A", "key-3")
		if d := time.Since(start); d != 0 {
			t.Fatalf("the rotated key was tried %v after the 401, want at once", d)
		}
	})
}

// TestUnknownWorkspaceStopsOnlyItsBatch: a batch for a workspace the
// registry does not know stops its own Send's line (no_key): nothing is
// sent for it, dropped or rejected, while another workspace's batch goes
// through. Once the workspace appears and TargetsChanged is called, the
// batch is delivered at once, not after the stop pause (30 s).
func TestUnknownWorkspaceStopsOnlyItsBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "key-a")
		e := newEnv(t, "mem", nil, func(c *sink.Config) { c.Targets = reg.lookup })
		ctx := e.ctx()
		stuck := e.goSend(ctx, wsRequest("WS_NEW", "c1", event.Add, 3))
		synctest.Wait()
		if !e.client.LineStopped() {
			t.Fatal("LineStopped is false while a batch has no credentials")
		}
		if got := testutil.ToFloat64(e.m.LineStopped.WithLabelValues("no_key")); got != 1 {
			t.Fatalf("line_stopped{no_key} = %v, want 1", got)
		}
		if rej, err := e.client.Send(ctx, wsRequest("WS_A", "c1", event.Add, 2)); err != nil || len(rej) != 0 {
			t.Fatalf("WS_A's Send = %v, %v; want delivered while WS_NEW is stopped", rej, err)
		}
		time.Sleep(10 * time.Second)
		select {
		case r := <-stuck:
			t.Fatalf("WS_NEW's Send returned %v, %v without a key", r.rej, r.err)
		default:
		}
		if calls := e.api.got(); len(calls) != 1 {
			t.Fatalf("%d requests, want only WS_A's", len(calls))
		}
		reg.set("WS_NEW", "key-new")
		added := time.Now()
		e.client.TargetsChanged()
		r := <-stuck
		if r.err != nil || len(r.rej) != 0 {
			t.Fatalf("WS_NEW's Send = %v, %v", r.rej, r.err)
		}
		if d := r.at.Sub(added); d > time.Second {
			t.Fatalf("delivered %v after TargetsChanged, want within 1s", d)
		}
		calls := e.api.got()
		checkCall(t, calls[len(calls)-1], "WS_NEW", "key-new")
		if e.client.LineStopped() || testutil.ToFloat64(e.m.LineStopped.WithLabelValues("no_key")) != 0 {
			t.Fatal("the line is still stopped after the batch went through")
		}
	})
}

// TestTargetsChangedWakesAuthStop: a workspace's key is revoked (401): its
// Send's line stops for auth. When the key is fixed in the registry and
// TargetsChanged is called, the next attempt goes at once with the new key.
func TestTargetsChangedWakesAuthStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "revoked")
		e := newEnv(t, "mem", func(_ int, c call) reply {
			if c.header.Get("Authorization") == basicFor("WS_A", "fixed") {
				return ok()
			}
			return fail(401, "Authentication required", "App Secret key mismatch", "")
		}, func(c *sink.Config) { c.Targets = reg.lookup })
		res := e.goSend(e.ctx(), wsRequest("WS_A", "c1", event.Add, 1))
		time.Sleep(5 * time.Second) // into the first 30 s stop pause
		if !e.client.LineStopped() {
			t.Fatal("the line is not stopped after a 401")
		}
		reg.set("WS_A", "fixed")
		fixed := time.Now()
		e.client.TargetsChanged()
		r := <-res
		if r.err != nil {
			t.Fatal(r.err)
		}
		if d := r.at.Sub(fixed); d > time.Second {
			t.Fatalf("delivered %v after TargetsChanged, want within 1s (the stop pause is 30s)", d)
		}
		calls := e.api.got()
		checkCall(t, calls[len(calls)-1], "WS_A", "fixed")
	})
}

// TestUnknownOutcomeHoldIsPerWorkspace: workspace A's "add" to cohort c1
// has an unknown outcome (the attempt timed out): A's "remove" of c1 waits
// MaxProcessingTime, but workspace B's "remove" of its own c1 (the same id,
// another customer) is sent at once.
func TestUnknownOutcomeHoldIsPerWorkspace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "key-a", "WS_B", "key-b")
		never := make(chan struct{})
		e := newEnv(t, "mem", func(n int, _ call) reply {
			if n == 0 {
				return reply{hold: never} // no answer: the attempt times out
			}
			return ok()
		}, func(c *sink.Config) { c.Targets = reg.lookup })
		ctx := e.ctx()
		start := time.Now()
		if _, err := e.client.Send(ctx, wsRequest("WS_A", "c1", event.Add, 1)); err != nil {
			t.Fatal(err)
		}
		bStart := time.Now()
		if _, err := e.client.Send(ctx, wsRequest("WS_B", "c1", event.Remove, 1)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(bStart); d != 0 {
			t.Fatalf("WS_B's remove of c1 waited %v behind WS_A's unknown add of c1", d)
		}
		if _, err := e.client.Send(ctx, wsRequest("WS_A", "c1", event.Remove, 1)); err != nil {
			t.Fatal(err)
		}
		if d, want := time.Since(start), 2*sink.DefaultAttemptTimeout; d < want {
			t.Fatalf("WS_A's remove went %v after its unknown add, want ≥ %v (MaxProcessingTime)", d, want)
		}
	})
}

// TestNoTargetsOtherWorkspaceStops: without Targets the Client serves only
// WorkspaceID: a batch naming it goes as before, a batch naming another
// workspace stops its line (config) and sends nothing, rejects nothing.
func TestNoTargetsOtherWorkspaceStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", nil, nil)
		if _, err := e.client.Send(e.ctx(), wsRequest(testWorkspace, "c1", event.Add, 1)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(e.ctx(), time.Minute)
		defer cancel()
		res := e.goSend(ctx, wsRequest("WS_OTHER", "c1", event.Add, 1))
		synctest.Wait()
		if !e.client.LineStopped() || testutil.ToFloat64(e.m.LineStopped.WithLabelValues("config")) != 1 {
			t.Fatal("a batch for another workspace does not stop the line (config)")
		}
		r := <-res
		if r.err == nil || !errors.Is(r.err, context.DeadlineExceeded) || len(r.rej) != 0 {
			t.Fatalf("Send = %v, %v; want the context's error and no rejection", r.rej, r.err)
		}
		calls := e.api.got()
		if len(calls) != 1 {
			t.Fatalf("%d requests, want only the default workspace's", len(calls))
		}
		if calls[0].header.Get("Authorization") != basic(testKey) {
			t.Fatal("the default workspace's batch did not carry its key")
		}
		if e.client.LineStopped() {
			t.Fatal("the line is still stopped after the Send returned")
		}
	})
}

// TestUnknownWorkspaceSpendsNoPermit: a batch whose workspace has no key
// takes no rate-limit permit while stopped (the budget is the other
// workspaces'), however many times it is woken; it takes one when it is
// finally sent.
func TestUnknownWorkspaceSpendsNoPermit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets()
		lim := &recordingLimiter{}
		e := newEnv(t, "mem", nil, func(c *sink.Config) { c.Targets = reg.lookup; c.Limiter = lim })
		res := e.goSend(e.ctx(), wsRequest("WS_LATE", "c1", event.Add, 1))
		for range 3 {
			time.Sleep(time.Hour) // every stop pause, up to 5 minutes, 12 times and more
			e.client.TargetsChanged()
			synctest.Wait()
		}
		if n := len(lim.got()); n != 0 {
			t.Fatalf("%d permits taken by a batch without a key, want 0", n)
		}
		reg.set("WS_LATE", "key")
		e.client.TargetsChanged()
		if r := <-res; r.err != nil {
			t.Fatal(r.err)
		}
		if n := len(lim.got()); n != 1 {
			t.Fatalf("%d permits, want 1 (the one request sent)", n)
		}
	})
}

// TestTargetKeyScrubbed: an answer that echoes a workspace's key (or its
// Basic credentials) has it replaced by [REDACTED] in the error and the
// logs, as with the single key.
func TestTargetKeyScrubbed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const key = "ws-b-S3CRET-key-never-logged"
		reg := newTargets("WS_B", key)
		e := newEnv(t, "mem", func(_ int, c call) reply {
			return fail(400, "Bad Request", "bad key "+key+" creds "+c.header.Get("Authorization"), "")
		}, func(c *sink.Config) { c.Targets = reg.lookup })
		ctx, cancel := context.WithTimeout(e.ctx(), 10*time.Minute)
		defer cancel()
		_, err := e.client.Send(ctx, wsRequest("WS_B", "c1", event.Add, 1))
		if err == nil {
			t.Fatal("Send returned nil")
		}
		cred := strings.TrimPrefix(basicFor("WS_B", key), "Basic ")
		for what, text := range map[string]string{"the error": err.Error(), "the logs": e.logs.String()} {
			if strings.Contains(text, key) || strings.Contains(text, cred) {
				t.Errorf("%s holds the workspace's key: %s", what, text)
			}
			if !strings.Contains(text, "[REDACTED]") {
				t.Errorf("%s shows no [REDACTED]: the answer was not seen", what)
			}
		}
	})
}
