package integration

import (
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestParkingIsolatesARevokedKey (invariant 8, issue 21 item 4): two worker
// processes with a registry; WS_B's key is revoked in the emulator (its key
// rotated there: the registry's is refused, 401) while events of every
// workspace keep coming. The others flow meanwhile and the input's commits
// pass WS_B's events (lag 0: they are parked); once the registry has the
// new key (the key fixed), WS_B's parked events are delivered by
// themselves, with no restart, and every workspace ends as the fold of its
// events. Skipped while the sink reports no blocked workspace (the app
// wires parking only then).
func TestParkingIsolatesARevokedKey(t *testing.T) {
	if _, ok := any((*sink.Client)(nil)).(interface{ Blocked(string) bool }); !ok {
		t.Skip("the sink does not report blocked workspaces: parking is not wired")
	}
	keys := map[string]string{workspace: apiKey, wsA: "key-ws-a-1", wsB: "key-ws-b-1"}
	a := startAPI(t, func(c *emulator.Config) {
		c.Credentials = map[string]string{workspace: apiKey, wsA: keys[wsA], wsB: keys[wsB]}
	})
	dir := t.TempDir()
	writeRegistryKey(t, dir, wsA, keys[wsA])
	writeRegistryKey(t, dir, wsB, keys[wsB])
	topic, dlq := newTopic(t, 4)
	p := newWSProducer(t, topic, false)
	g := newGen(21, 6, 40)
	served := []string{wsA, wsB, workspace, ""}
	p.sendMixed(t, g, 400, served, true)

	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["MOENGAGE_WORKSPACES_DIR"] = dir
	w1 := startWorker(t, "w1", env)
	w2 := startWorker(t, "w2", env)
	for _, ws := range []string{workspace, wsA, wsB} {
		waitWorkspace(t, a, p, ws, 2*time.Minute)
	}

	revokedAt := lastSeq(a)
	keys[wsB] = "key-ws-b-2"
	if err := a.AddWorkspace(wsB, emulator.Workspace{Key: keys[wsB]}); err != nil {
		t.Fatal(err)
	}
	p.sendMixed(t, g, 400, served, true)
	revoked := time.Now()
	for _, ws := range []string{workspace, wsA} {
		waitWorkspace(t, a, p, ws, time.Minute)
	}
	t.Logf("the others delivered %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], 2*time.Minute) // WS_B's events are parked, not holding the commits
	t.Logf("input lag 0 %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	if n := w1.metric("cohortsync_parking_writes_total") + w2.metric("cohortsync_parking_writes_total"); n <= 0 {
		t.Errorf("nothing parked (cohortsync_parking_writes_total %v)", n)
	}

	writeRegistryKey(t, dir, wsB, keys[wsB])
	restored := time.Now()
	waitWorkspace(t, a, p, wsB, 3*time.Minute)
	t.Logf("%s converged %s after its key was fixed in the registry", wsB, time.Since(restored).Round(time.Millisecond))

	p.sendMixed(t, g, 200, served, true)
	for _, ws := range []string{workspace, wsA, wsB} {
		waitWorkspace(t, a, p, ws, time.Minute)
	}
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], time.Minute)
	checkWorkspaceRequests(t, a, p, revokedAt, map[string]bool{wsB: true})
	checkOnlyWorkspaces(t, a, workspace, wsA, wsB)
	checkLogOrder(t, a, topic, workspace, workspace, wsA, wsB)
	for _, w := range []*worker{w1, w2} {
		if err := w.stop(30 * time.Second); err != nil {
			t.Errorf("SIGTERM: %v", err)
		}
	}
}
