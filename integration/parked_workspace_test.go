package integration

import (
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

// TestParkedWorkspace: one workspace's key is revoked while the stream
// carries three workspaces' changes in shared partitions. The other two
// keep flowing and every source partition's commit reaches its end (the
// revoked workspace's changes are parked in <group>.parked); then one
// replica is SIGKILLed and the other paused past the session timeout while
// the workspace is still parked, more changes of every workspace arrive,
// and the key is restored: the parked changes and those after them flow,
// by themselves, and every workspace ends as the fold of its events.
func TestParkedWorkspace(t *testing.T) {
	t.Run("keyed-by-cohort", func(t *testing.T) { testParkedWorkspace(t, false) })
	t.Run("keyed-by-uid", func(t *testing.T) { testParkedWorkspace(t, true) })
}

func testParkedWorkspace(t *testing.T, byUID bool) {
	a := startAPI(t, func(c *emulator.Config) {
		c.Credentials = map[string]string{workspace: apiKey, wsA: "key-ws-a-1", wsB: "key-ws-b-1"}
	})
	dir := t.TempDir()
	writeRegistryKey(t, dir, wsA, "key-ws-a-1")
	writeRegistryKey(t, dir, wsB, "key-ws-b-1")
	if err := a.RevokeKey(wsA); err != nil {
		t.Fatal(err)
	}

	topic, dlq := newTopic(t, 4)
	p := newWSProducer(t, topic, byUID)
	g := newGen(22, 6, 40) // few cohorts and uids, the same in every workspace: shared partitions
	all := []string{wsA, wsB, workspace, ""}
	p.sendMixed(t, g, 600, all, true)

	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["MOENGAGE_WORKSPACES_DIR"] = dir
	group := env["KAFKA_GROUP_ID"]
	w1 := startWorker(t, "w1", env)
	w2 := startWorker(t, "w2", env)

	// Isolation: the others converge and every source commit reaches the
	// end while WS_A's key is revoked.
	for _, ws := range []string{workspace, wsB} {
		waitWorkspace(t, a, p, ws, 2*time.Minute)
	}
	waitNoLag(t, topic, group, 2*time.Minute)
	parked := len(readAll(t, group+".parked"))
	if parked == 0 {
		t.Fatalf("the parking topic %s.parked is empty while %s's key is revoked", group, wsA)
	}
	t.Logf("%d records in the parking topic while %s is revoked", parked, wsA)

	// A crash and a pause past the session timeout while WS_A is parked.
	w1.kill()
	resume := w2.pause(t)
	p.sendMixed(t, g, 300, all, true) // WS_A's later changes follow the parked ones
	time.Sleep(12 * time.Second)      // past the 10 s session timeout
	resume()
	w3 := startWorker(t, "w3", env)
	for _, ws := range []string{workspace, wsB} {
		waitWorkspace(t, a, p, ws, 2*time.Minute)
	}

	// Restored: WS_A's parked changes and the later ones flow by themselves.
	restored := time.Now()
	if err := a.RestoreKey(wsA); err != nil {
		t.Fatal(err)
	}
	p.sendMixed(t, g, 200, all, true)
	waitWorkspace(t, a, p, wsA, 3*time.Minute)
	t.Logf("%s converged %s after its key was restored", wsA, time.Since(restored).Round(time.Millisecond))
	for _, ws := range []string{workspace, wsB} {
		waitWorkspace(t, a, p, ws, time.Minute)
	}
	waitNoLag(t, topic, group, time.Minute)
	checkWorkspaceRequests(t, a, p, 0, map[string]bool{wsA: true})
	checkOnlyWorkspaces(t, a, workspace, wsA, wsB)
	checkLogOrder(t, a, topic, workspace, workspace, wsA, wsB)
	if n := len(readAll(t, dlq)); n != 0 {
		t.Errorf("dead-letter topic holds %d records; a revoked key dead-letters nothing", n)
	}
	for _, w := range []*worker{w2, w3} {
		if err := w.stop(30 * time.Second); err != nil {
			t.Errorf("SIGTERM %s: %v", w.name, err)
		}
	}
}
