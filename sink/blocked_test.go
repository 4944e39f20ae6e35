package sink_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// blockWatch records, from BlockedChanged, when each workspace became
// blocked and unblocked.
type blockWatch struct {
	mu     sync.Mutex
	events []blockEvent
	stop   chan struct{}
	done   chan struct{}
}

type blockEvent struct {
	ws      string
	blocked bool
	at      time.Time
}

// watchBlocked follows Blocked(ws) for each of wss until stopped.
func watchBlocked(c *sink.Client, wss ...string) *blockWatch {
	w := &blockWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		last := map[string]bool{}
		for {
			ch := c.BlockedChanged()
			for _, ws := range wss {
				if b := c.Blocked(ws); b != last[ws] {
					last[ws] = b
					w.mu.Lock()
					w.events = append(w.events, blockEvent{ws, b, time.Now()})
					w.mu.Unlock()
				}
			}
			select {
			case <-ch:
			case <-w.stop:
				return
			}
		}
	}()
	return w
}

func (w *blockWatch) end() []blockEvent {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.events
}

// flow sends a batch of ws every second until ctx ends.
func flow(ctx context.Context, t *testing.T, c *sink.Client, ws string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := c.Send(ctx, wsRequest(ws, "flow", event.Add, 1+i%5)); err != nil && ctx.Err() == nil {
				t.Errorf("%s: %v", ws, err)
			}
			time.Sleep(time.Second)
		}
	}()
	return done
}

// twoWorkspaces is an env with workspaces WS_A and WS_B (no default) whose
// answers respond decides per workspace.
func twoWorkspaces(t *testing.T, respond func(ws string) reply) *env {
	reg := newTargets("WS_A", "key-a", "WS_B", "key-b")
	return newEnv(t, "mem", func(_ int, c call) reply { return respond(c.header.Get("Moe-Appkey")) },
		func(c *sink.Config) { c.Targets = reg.lookup; c.WorkspaceID = "" })
}

// TestBlockedWhenFailingAlone: A's requests fail with 500 while B's go
// through. A is blocked once it has failed for BlockedAfter (30 s), not
// before, and B never is. A's 2xx unblocks it.
func TestBlockedWhenFailingAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var aDown atomic.Bool
		aDown.Store(true)
		e := twoWorkspaces(t, func(ws string) reply {
			if ws == "WS_A" && aDown.Load() {
				return fail(500, "Server Error", "An unexpected error", "")
			}
			return ok()
		})
		ctx, cancel := context.WithCancel(e.ctx())
		defer cancel()
		w := watchBlocked(e.client, "WS_A", "WS_B")
		start := time.Now()
		flowing := flow(ctx, t, e.client, "WS_B")
		a := e.goSend(ctx, wsRequest("WS_A", "c1", event.Add, 2))
		time.Sleep(2 * time.Minute)
		if !e.client.Blocked("WS_A") || e.client.Blocked("WS_B") {
			t.Fatalf("after 2 minutes of A's 500s: Blocked(A) %v, Blocked(B) %v; want true, false",
				e.client.Blocked("WS_A"), e.client.Blocked("WS_B"))
		}
		if got := testutil.ToFloat64(e.m.WorkspaceBlocked.WithLabelValues("WS_A")); got != 1 {
			t.Fatalf("workspace_blocked{WS_A} = %v, want 1", got)
		}
		aDown.Store(false)
		if r := <-a; r.err != nil { // A's next retry (within MaxInterval) is accepted
			t.Fatal(r.err)
		}
		if e.client.Blocked("WS_A") {
			t.Fatal("A's 2xx did not unblock it")
		}
		cancel()
		<-flowing
		events := w.end()
		if len(events) != 2 || events[0].ws != "WS_A" || !events[0].blocked || events[1].blocked {
			t.Fatalf("Blocked changes %+v, want A blocked then unblocked", events)
		}
		if d := events[0].at.Sub(start); d < sink.DefaultBlockedAfter || d > sink.DefaultBlockedAfter+sink.DefaultMaxInterval {
			t.Fatalf("A blocked %v after its first failure, want from %v (BlockedAfter) to one backoff later", d, sink.DefaultBlockedAfter)
		}
	})
}

// TestGlobalOutageBlocksNobody: every workspace fails alike for 3 minutes,
// then all recover: nothing is blocked at any time, not during the outage
// (nobody flows) nor at its end (A's failures started before B recovered).
func TestGlobalOutageBlocksNobody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		down.Store(true)
		e := twoWorkspaces(t, func(string) reply {
			if down.Load() {
				return fail(503, "Server Error", "Unavailable", "")
			}
			return ok()
		})
		w := watchBlocked(e.client, "WS_A", "WS_B")
		a := e.goSend(e.ctx(), wsRequest("WS_A", "c1", event.Add, 2))
		time.Sleep(7 * time.Second) // B's failures start later than A's
		b := e.goSend(e.ctx(), wsRequest("WS_B", "c1", event.Add, 2))
		time.Sleep(3 * time.Minute)
		down.Store(false)
		for _, r := range []<-chan sendResult{a, b} {
			if res := <-r; res.err != nil {
				t.Fatal(res.err)
			}
		}
		for i := range 3 { // both flow again
			for _, ws := range []string{"WS_A", "WS_B"} {
				if _, err := e.client.Send(e.ctx(), wsRequest(ws, "c2", event.Add, 1+i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if events := w.end(); len(events) != 0 {
			t.Fatalf("a global outage changed Blocked: %+v", events)
		}
	})
}

// TestRateLimitedIsNotBlocked: A's requests get 429 for minutes while B's
// go through: a 429 is a budget signal, not trouble: A is not blocked.
func TestRateLimitedIsNotBlocked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var limited atomic.Bool
		limited.Store(true)
		e := twoWorkspaces(t, func(ws string) reply {
			if ws == "WS_A" && limited.Load() {
				r := fail(429, "Rate Limits Exceeded", "Rate limits for customers exceeded", "")
				r.header = map[string]string{"Retry-After": "5"}
				return r
			}
			return ok()
		})
		ctx, cancel := context.WithCancel(e.ctx())
		defer cancel()
		w := watchBlocked(e.client, "WS_A", "WS_B")
		flowing := flow(ctx, t, e.client, "WS_B")
		a := e.goSend(ctx, wsRequest("WS_A", "c1", event.Add, 2))
		time.Sleep(3 * time.Minute)
		limited.Store(false)
		if r := <-a; r.err != nil {
			t.Fatal(r.err)
		}
		cancel()
		<-flowing
		if events := w.end(); len(events) != 0 {
			t.Fatalf("429s changed Blocked: %+v", events)
		}
	})
}

// TestBlockedHoldOutlivesItsSend: A's 401 blocks A. The hold outlives A's
// Send (the consumer abandons it to park A's changes), and B's 2xx does not
// end it. At its time limit (the stop pause, 30 s) the hold sends one probe,
// the body {} with A's credentials: answered 401, the hold is renewed for
// the stop pause again (a key restored on the API's side is found within
// it); answered 400 (the API no longer refuses A), it ends. A new 401
// right after holds A again for twice as long (the churn of a {} answered
// 400 for a workspace still refused is bounded), and TargetsChanged (the
// registry changed) ends a hold for the credentials at once.
func TestBlockedHoldOutlivesItsSend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "key-a", "WS_B", "key-b")
		var fixed atomic.Bool
		e := newEnv(t, "mem", func(n int, c call) reply {
			switch {
			case c.header.Get("Moe-Appkey") != "WS_A":
				return ok()
			case !fixed.Load():
				return fail(401, "Authentication required", "App Secret key mismatch", "")
			case string(c.body) == "{}":
				return fail(400, "MissingAttributeError", "action is not found in the payload", "action")
			}
			return ok()
		}, func(c *sink.Config) { c.Targets = reg.lookup; c.WorkspaceID = "" })
		probes := func() (n int) {
			for _, c := range e.api.got() {
				if string(c.body) == "{}" {
					checkCall(t, c, "WS_A", "key-a")
					n++
				}
			}
			return n
		}
		sendA := func() {
			ctx, cancel := context.WithCancel(e.ctx())
			r := e.goSend(ctx, wsRequest("WS_A", "c1", event.Add, 1))
			synctest.Wait()
			cancel() // parked: nothing of A in flight
			<-r
		}
		changed := e.client.BlockedChanged()
		start := time.Now()
		sendA()
		select {
		case <-changed:
		default:
			t.Fatal("BlockedChanged not closed when A was blocked")
		}
		if !e.client.Blocked("WS_A") {
			t.Fatal("A is not blocked after a 401")
		}
		if got := testutil.ToFloat64(e.m.WorkspaceStopped.WithLabelValues("WS_A", "auth")); got != 1 {
			t.Fatalf("workspace_stopped{WS_A,auth} = %v, want 1", got)
		}
		if _, err := e.client.Send(e.ctx(), wsRequest("WS_B", "c1", event.Add, 1)); err != nil {
			t.Fatal(err)
		}
		if testutil.ToFloat64(e.m.WorkspaceStopped.WithLabelValues("WS_B", "auth")) != 0 {
			t.Fatal("workspace_stopped{WS_B,auth} is set")
		}
		at := func(d time.Duration) { time.Sleep(d - time.Since(start)); synctest.Wait() }
		at(sink.DefaultAuthRetryInterval - time.Second)
		if !e.client.Blocked("WS_A") || probes() != 0 {
			t.Fatalf("before its stop pause: Blocked(A) %v, %d probes; want true, 0 (B's 2xx, or A's Send returning, ended it?)",
				e.client.Blocked("WS_A"), probes())
		}
		at(sink.DefaultAuthRetryInterval + time.Second)
		if !e.client.Blocked("WS_A") || probes() != 1 {
			t.Fatalf("after its stop pause, the key still revoked: Blocked(A) %v, %d probes; want true, 1", e.client.Blocked("WS_A"), probes())
		}
		// Renewed every 10 s while refused (blockedProbeEvery): a key
		// restored on the API's side is found within 10 s.
		const renew = 10 * time.Second
		first := sink.DefaultAuthRetryInterval
		for i := 1; i <= 2; i++ {
			at(first + time.Duration(i)*renew - time.Second)
			if !e.client.Blocked("WS_A") || probes() != i {
				t.Fatalf("%v into the hold, still refused: Blocked(A) %v, %d probes; want true, %d", time.Since(start), e.client.Blocked("WS_A"), probes(), i)
			}
			at(first + time.Duration(i)*renew + time.Second)
			if !e.client.Blocked("WS_A") || probes() != i+1 {
				t.Fatalf("%v into the hold, still refused: Blocked(A) %v, %d probes; want true, %d (renewed for more than 10 s?)",
					time.Since(start), e.client.Blocked("WS_A"), probes(), i+1)
			}
		}
		fixed.Store(true)
		at(first + 3*renew - time.Second)
		if !e.client.Blocked("WS_A") || probes() != 3 {
			t.Fatalf("before the renewed hold's end: Blocked(A) %v, %d probes", e.client.Blocked("WS_A"), probes())
		}
		at(first + 3*renew + time.Second)
		if e.client.Blocked("WS_A") || probes() != 4 {
			t.Fatalf("after the renewed hold, the probe answered 400: Blocked(A) %v, %d probes; want false, 4 (renewed for more than 10 s?)",
				e.client.Blocked("WS_A"), probes())
		}
		fixed.Store(false)
		sendA() // 401 again
		held := time.Now()
		time.Sleep(2*sink.DefaultAuthRetryInterval - time.Second)
		if !e.client.Blocked("WS_A") || probes() != 4 {
			t.Fatalf("A's hold after a probe ended one: Blocked(A) %v, %d probes before twice the pause; want true, 4", e.client.Blocked("WS_A"), probes())
		}
		e.client.TargetsChanged()
		if e.client.Blocked("WS_A") {
			t.Fatalf("A still blocked after TargetsChanged (%v into its hold)", time.Since(held))
		}
	})
}

// TestSingleWorkspaceNeverBlocked: without Targets a 401 stops the line as
// always, and blocks nothing: there is no other workspace to keep flowing.
func TestSingleWorkspaceNeverBlocked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", func(int, call) reply {
			return fail(401, "Authentication required", "App Secret key mismatch", "")
		}, nil)
		changed := e.client.BlockedChanged()
		ctx, cancel := context.WithCancel(e.ctx())
		r := e.goSend(ctx, request(1))
		synctest.Wait()
		if !e.client.LineStopped() {
			t.Fatal("a 401 did not stop the line")
		}
		if e.client.Blocked("") || e.client.Blocked(testWorkspace) {
			t.Fatal("the only workspace is blocked")
		}
		select {
		case <-changed:
			t.Fatal("BlockedChanged closed")
		default:
		}
		cancel()
		<-r
	})
}

// TestUnknownWorkspaceBlockedAndLabelledOther: a batch for a workspace
// without a target blocks it (no_key); its metrics count under workspace
// "other", so the label stays bounded by the registry. Once it is added,
// TargetsChanged unblocks it, the "other" series go back to 0, and its
// metrics count under its own name.
func TestUnknownWorkspaceBlockedAndLabelledOther(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "key-a")
		var revoked atomic.Bool
		e := newEnv(t, "mem", func(_ int, c call) reply {
			if revoked.Load() {
				return fail(401, "Authentication required", "App Secret key mismatch", "")
			}
			return ok()
		}, func(c *sink.Config) { c.Targets = reg.lookup })
		r := e.goSend(e.ctx(), wsRequest("WS_NEW", "c1", event.Add, 1))
		synctest.Wait()
		if !e.client.Blocked("WS_NEW") || e.client.Blocked("WS_A") {
			t.Fatal("WS_NEW (no key) is not blocked, or WS_A is")
		}
		if got := testutil.ToFloat64(e.m.WorkspaceStopped.WithLabelValues(sink.OtherWorkspace, "no_key")); got != 1 {
			t.Fatalf("workspace_stopped{other,no_key} = %v, want 1", got)
		}
		if got := testutil.ToFloat64(e.m.WorkspaceBlocked.WithLabelValues(sink.OtherWorkspace)); got != 1 {
			t.Fatalf("workspace_blocked{other} = %v, want 1", got)
		}
		reg.set("WS_NEW", "key-new")
		e.client.TargetsChanged()
		if e.client.Blocked("WS_NEW") {
			t.Fatal("WS_NEW still blocked after it was added and TargetsChanged called")
		}
		if res := <-r; res.err != nil {
			t.Fatal(res.err)
		}
		if got := testutil.ToFloat64(e.m.WorkspaceStopped.WithLabelValues("WS_NEW", "no_key")); got != 0 {
			t.Fatalf("workspace_stopped{WS_NEW,no_key} = %v after delivery", got)
		}
		for _, g := range []string{"workspace_stopped{other,no_key}", "workspace_blocked{other}"} {
			v := testutil.ToFloat64(e.m.WorkspaceStopped.WithLabelValues(sink.OtherWorkspace, "no_key"))
			if g == "workspace_blocked{other}" {
				v = testutil.ToFloat64(e.m.WorkspaceBlocked.WithLabelValues(sink.OtherWorkspace))
			}
			if v != 0 {
				t.Errorf("%s = %v once WS_NEW is in the registry: a stale series", g, v)
			}
		}
		revoked.Store(true) // WS_NEW's metrics now count under its own name
		ctx, cancel := context.WithCancel(e.ctx())
		defer cancel()
		e.goSend(ctx, wsRequest("WS_NEW", "c1", event.Add, 1))
		synctest.Wait()
		if got := testutil.ToFloat64(e.m.WorkspaceStopped.WithLabelValues("WS_NEW", "auth")); got != 1 {
			t.Errorf("workspace_stopped{WS_NEW,auth} = %v after its 401, want 1", got)
		}
	})
}

// TestOutageEndDoesNotBlockASlowFailure: at the end of an outage of every
// workspace, B recovers first while an attempt of A sent during the outage
// is still waiting for its answer; that attempt then times out. It started
// before B's recovery, so it does not show A failing alone: A is not
// blocked, and its next attempt goes through.
func TestOutageEndDoesNotBlockASlowFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		down.Store(true)
		arrivedA := make(chan struct{}, 100)
		never := make(chan struct{})
		e := twoWorkspaces(t, func(ws string) reply {
			switch {
			case !down.Load():
				return ok()
			case ws == "WS_A":
				arrivedA <- struct{}{}
				return reply{hold: never} // no answer: the attempt times out
			}
			return fail(503, "Server Error", "Unavailable", "")
		})
		w := watchBlocked(e.client, "WS_A", "WS_B")
		a := e.goSend(e.ctx(), wsRequest("WS_A", "c1", event.Add, 2))
		b := e.goSend(e.ctx(), wsRequest("WS_B", "c1", event.Add, 2))
		time.Sleep(2 * time.Minute)
		for len(arrivedA) > 0 {
			<-arrivedA
		}
		<-arrivedA // an attempt of A is in flight
		down.Store(false)
		if _, err := e.client.Send(e.ctx(), wsRequest("WS_B", "c2", event.Add, 1)); err != nil {
			t.Fatal(err) // B recovered, while A's attempt waits
		}
		for _, r := range []<-chan sendResult{a, b} {
			if res := <-r; res.err != nil {
				t.Fatal(res.err)
			}
		}
		if events := w.end(); len(events) != 0 {
			t.Fatalf("the end of a global outage changed Blocked: %+v\n%s", events, e.logs)
		}
	})
}

// TestBlockedOutageEndsByProbe: A fails alone (500s while B flows) and is
// blocked; its Send is abandoned (parked: nothing of A in flight). A's API
// recovers. The hold's probe ends the hold, and B's 2xx that keep coming
// do not hold A again for its failures from before the probe: A stays
// unblocked until a request of its own fails.
func TestBlockedOutageEndsByProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var aDown atomic.Bool
		aDown.Store(true)
		e := twoWorkspaces(t, func(ws string) reply {
			if ws == "WS_A" && aDown.Load() {
				return fail(500, "Server Error", "An unexpected error", "")
			}
			return ok()
		})
		ctx, cancel := context.WithCancel(e.ctx())
		defer cancel()
		flowing := flow(ctx, t, e.client, "WS_B")
		actx, acancel := context.WithCancel(ctx)
		a := e.goSend(actx, wsRequest("WS_A", "c1", event.Add, 2))
		for !e.client.Blocked("WS_A") {
			time.Sleep(time.Second)
		}
		acancel() // parked
		<-a
		aDown.Store(false)
		time.Sleep(3 * sink.DefaultAuthRetryInterval) // a probe (or two) after the recovery
		if e.client.Blocked("WS_A") {
			t.Fatal("A still blocked after its API recovered and its probe was answered; B's 2xx held it again?")
		}
		time.Sleep(time.Minute) // B flows on
		if e.client.Blocked("WS_A") {
			t.Fatal("A blocked again by B's 2xx, for failures from before its probe")
		}
		cancel()
		<-flowing
	})
}
