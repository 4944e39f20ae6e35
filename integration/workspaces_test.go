package integration

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// Workspaces of TestWorkspacesRouted besides the default (workspace).
const (
	wsA = "WS_A"
	wsB = "WS_B"
	wsC = "WS_C" // not in the registry at first
)

// TestWorkspacesRouted (invariant 8, first step, issue 21 stage 1): with a
// registry (MOENGAGE_WORKSPACES_DIR) two worker processes send each
// workspace's changes to that workspace only, with its own credentials,
// although every workspace uses the same partner, cohort ids and uids; the
// default takes the events that name it and those that name none. Per
// workspace the emulator's membership is the fold of that workspace's
// events, and the lag ends 0. Only the cohort-keyed run also checks: events
// of a workspace the registry does not serve are dead-lettered as
// unknown_workspace; once its key file is written, its later events are
// delivered; a key rotated in the registry is used without a restart.
func TestWorkspacesRouted(t *testing.T) {
	t.Run("keyed-by-cohort", func(t *testing.T) { testWorkspacesRouted(t, false) })
	t.Run("keyed-by-uid", func(t *testing.T) { testWorkspacesRouted(t, true) })
}

func testWorkspacesRouted(t *testing.T, byUID bool) {
	keys := map[string]string{workspace: apiKey, wsA: "key-ws-a-1", wsB: "key-ws-b-1"}
	a := startAPI(t, func(c *emulator.Config) {
		c.Credentials = map[string]string{workspace: apiKey, wsA: keys[wsA], wsB: keys[wsB]}
	})
	dir := t.TempDir()
	writeRegistryKey(t, dir, wsA, keys[wsA])
	writeRegistryKey(t, dir, wsB, keys[wsB])

	topic, dlq := newTopic(t, 4)
	p := newWSProducer(t, topic, byUID)
	g := newGen(21, 6, 40) // few cohorts and uids: the same ones in every workspace
	served := []string{wsA, wsB, workspace, ""}
	p.sendMixed(t, g, 800, served, true)
	if !byUID {
		// WS_C is not in the registry yet: its events are parked (no
		// key), not dead-lettered, and flow once it is added.
		p.sendMixed(t, g, 12, []string{wsC}, true)
		p.sendMixed(t, g, 200, served, true)
	}

	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["MOENGAGE_WORKSPACES_DIR"] = dir
	w1 := startWorker(t, "w1", env)
	w2 := startWorker(t, "w2", env)
	for _, ws := range []string{workspace, wsA, wsB} {
		waitWorkspace(t, a, p, ws, 2*time.Minute)
	}
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], time.Minute) // WS_C's events parked: the commits pass them
	checkWorkspaceRequests(t, a, p, 0, nil)
	checkOnlyWorkspaces(t, a, workspace, wsA, wsB)
	checkLogOrder(t, a, topic, workspace, workspace, wsA, wsB)
	for _, w := range []*worker{w1, w2} { // both processes took part
		if n := w.metric("cohortsync_events_consumed_total"); n <= 0 {
			t.Errorf("worker %s consumed %v events", w.name, n)
		}
	}
	if byUID {
		return
	}

	// WS_C joins: the emulator first, then its key file. Once both
	// workers serve it, its later events are delivered.
	keys[wsC] = "key-ws-c-1"
	if err := a.AddWorkspace(wsC, emulator.Workspace{Key: keys[wsC]}); err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	writeRegistryKey(t, dir, wsC, keys[wsC])
	waitFor(t, 8*time.Second, "both workers serve "+wsC, func() bool {
		return w1.metric("cohortsync_workspaces") == 4 && w2.metric("cohortsync_workspaces") == 4
	})
	t.Logf("%s served %s after its key file was written", wsC, time.Since(written).Round(time.Millisecond))
	p.sendMixed(t, g, 100, []string{wsC}, true)
	sent := time.Now()
	waitWorkspace(t, a, p, wsC, 30*time.Second) // its parked events first
	t.Logf("%s's events delivered %s after they were produced", wsC, time.Since(sent).Round(time.Millisecond))

	// WS_A's key is rotated: the emulator refuses the old key at once, so
	// WS_A's next events stop its line (401) until the registry has the
	// new key; then they are delivered, without a restart.
	rotatedAt := lastSeq(a)
	keys[wsA] = "key-ws-a-2"
	if err := a.AddWorkspace(wsA, emulator.Workspace{Key: keys[wsA]}); err != nil {
		t.Fatal(err)
	}
	p.sendMixed(t, g, 100, []string{wsA}, true)
	waitFor(t, 30*time.Second, "a 401 for "+wsA+"'s old key", func() bool {
		for _, r := range a.RequestsSince(rotatedAt) {
			if r.Status == 401 && r.Workspace == wsA {
				return true
			}
		}
		return false
	})
	written = time.Now()
	writeRegistryKey(t, dir, wsA, keys[wsA])
	// The registry promises 5 s; 3 s more for the delivery itself on a
	// loaded machine (it takes about 2 s in all here).
	waitWorkspace(t, a, p, wsA, 8*time.Second)
	t.Logf("%s's events delivered with the rotated key %s after the key file changed", wsA, time.Since(written).Round(time.Millisecond))

	// Everything flows on; every workspace ends as the fold of its events.
	p.sendMixed(t, g, 300, []string{wsA, wsB, wsC, workspace, ""}, true)
	for _, ws := range []string{workspace, wsA, wsB, wsC} {
		waitWorkspace(t, a, p, ws, time.Minute)
	}
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], time.Minute)
	checkWorkspaceRequests(t, a, p, rotatedAt, map[string]bool{wsA: true})
	checkOnlyWorkspaces(t, a, workspace, wsA, wsB, wsC)
	checkLogOrder(t, a, topic, workspace, workspace, wsA, wsB, wsC)
	if n := len(readAll(t, dlq)); n != 0 {
		t.Errorf("dead-letter topic holds %d records; %s's events before it was served were to be parked", n, wsC)
	}
	for _, w := range []*worker{w1, w2} {
		if err := w.stop(30 * time.Second); err != nil {
			t.Errorf("SIGTERM: %v", err)
		}
	}
}

// wsChange is one member change an event asked of a workspace.
type wsChange struct {
	ws, action, cohort, uid string
}

// wsProducer writes events naming workspaces and folds each into the model
// of the workspace it goes to (the default for those that name none).
type wsProducer struct {
	w     *kafka.Writer
	byUID bool
	mu    sync.Mutex
	want  map[string]model
	asked map[wsChange]bool
	marks int // markers given (checkLogOrder)
}

func newWSProducer(t *testing.T, topic string, byUID bool) *wsProducer {
	w := &kafka.Writer{Addr: kafka.TCP(brokerAddr), Topic: topic, Balancer: &kafka.Hash{},
		BatchTimeout: 2 * time.Millisecond, BatchSize: 1000, RequiredAcks: kafka.RequireAll}
	t.Cleanup(func() { w.Close() })
	return &wsProducer{w: w, byUID: byUID, want: map[string]model{}, asked: map[wsChange]bool{}}
}

// sendMixed produces n events of g, each naming one of names in turn ("":
// none) and carrying a marker (checkLogOrder); fold says whether they are
// to be delivered.
func (p *wsProducer) sendMixed(t *testing.T, g *gen, n int, names []string, fold bool) {
	t.Helper()
	evs := make([]event.Event, n)
	msgs := make([]kafka.Message, n)
	for i := range evs {
		ev := g.next()
		ev.Workspace = names[i%len(names)]
		key := []byte(ev.CohortID)
		if p.byUID {
			key = []byte(ev.UIDs[0]) // g.bulk is off: one uid per event
		}
		p.marks++
		markEvent(&ev, p.marks)
		evs[i], msgs[i] = ev, kafka.Message{Key: key, Value: event.Encode(ev)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
	if !fold {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range evs {
		ws := ev.Workspace
		if ws == "" {
			ws = workspace
		}
		if p.want[ws] == nil {
			p.want[ws] = model{}
		}
		p.want[ws].apply(ev)
		for _, u := range ev.UIDs {
			p.asked[wsChange{ws, string(ev.Action), ev.CohortID, u}] = true
		}
	}
}

// model returns a copy of workspace ws's expected membership.
func (p *wsProducer) model(ws string) model {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := model{}
	for k, v := range p.want[ws] {
		out[k] = map[string]bool{}
		for u := range v {
			out[k][u] = true
		}
	}
	return out
}

// strays names a member of got that no event of workspace ws added (an
// other workspace's, sent to ws), or returns "".
func (p *wsProducer) strays(ws string, got model) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, members := range got {
		for u := range members {
			if !p.asked[wsChange{ws, string(event.Add), k.id, u}] {
				return k.partner + "/" + k.id + ": " + u
			}
		}
	}
	return ""
}

// wsState is the emulator's membership of workspace ws.
func wsState(a *api, ws string) model {
	out := model{}
	for _, s := range a.WorkspaceSegments(ws) {
		k := cohortKey{s.Partner, s.CohortID}
		out[k] = map[string]bool{}
		for _, u := range s.Members {
			out[k][u] = true
		}
	}
	return out
}

func waitWorkspace(t *testing.T, a *api, p *wsProducer, ws string, timeout time.Duration) {
	t.Helper()
	want := p.model(ws)
	if len(want) == 0 {
		t.Fatalf("no events for %s", ws)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d string
	for ctx.Err() == nil {
		got := wsState(a, ws)
		if stray := p.strays(ws, got); stray != "" {
			t.Fatalf("%s holds a member no event of %s added: %s", ws, ws, stray)
		}
		if d = diff(want, got); d == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: membership did not converge in %s: %s", ws, timeout, d)
}

// checkWorkspaceRequests asserts that every request the emulator saw was
// authenticated as a workspace and carried only changes that workspace's
// events asked for. A 401 is allowed only for a workspace of allow401
// after Seq since (a rotation under way).
func checkWorkspaceRequests(t *testing.T, a *api, p *wsProducer, since uint64, allow401 map[string]bool) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	bad := 0
	for _, r := range a.Requests() {
		if r.Status == 401 && allow401[r.Workspace] && r.Seq > since {
			continue
		}
		if r.Action == "" && len(r.Members) == 0 && (r.Status == 400 || r.Status == 401 && allow401[r.Workspace]) {
			continue // the probe of a blocked workspace: the body {}
		}
		if r.Status != 200 || !r.AuthOK {
			if bad++; bad <= 5 {
				t.Errorf("request %d (workspace %q) answered %d %s: %s", r.Seq, r.Workspace, r.Status, r.ErrorType, r.ErrorMessage)
			}
			continue
		}
		for _, u := range r.Members {
			if !p.asked[wsChange{r.Workspace, r.Action, r.CohortID, u}] {
				if bad++; bad <= 5 {
					t.Errorf("request %d: %s %s %s in workspace %s, which no event of that workspace asked for",
						r.Seq, r.Action, r.CohortID, u, r.Workspace)
				}
			}
		}
	}
}

// checkOnlyWorkspaces asserts that the emulator holds segments of the
// workspaces named only.
func checkOnlyWorkspaces(t *testing.T, a *api, names ...string) {
	t.Helper()
	ok := map[string]bool{}
	for _, n := range names {
		ok[n] = true
	}
	for _, s := range a.Segments() {
		if !ok[s.Workspace] {
			t.Errorf("segment %s/%s in workspace %q, which no event was meant for", s.Partner, s.CohortID, s.Workspace)
		}
	}
}

// writeRegistryKey writes <id>.key in the registry dir with a rename, as
// a rotation should be written (the registry ignores dot files).
func writeRegistryKey(t *testing.T, dir, id, key string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+id+".key.tmp")
	if err := os.WriteFile(tmp, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, id+".key")); err != nil {
		t.Fatal(err)
	}
}

func lastSeq(a *api) uint64 {
	seq, _ := a.RequestLogStats()
	return seq
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
