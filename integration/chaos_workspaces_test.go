package integration

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

// chaosNames are the workspaces TestChaos's events name: "" (none: the
// default), the default by name, and the two of the registry.
var chaosNames = []string{"", workspace, wsA, wsB}

// chaosWorkspaces is TestChaos's registry and the trouble it gives one
// workspace at a time: a revoked key (401 until restored), a key file
// removed from the registry (no key), an outage of the workspace's own API,
// and a rotation (a new key in the API first, in the registry a moment
// later). Each but the rotation is lifted after a random while, at a later
// step of the chaos loop, so that it overlaps other faults.
type chaosWorkspaces struct {
	a    *api
	dir  string
	ids  []string
	keys map[string]string
	// due: when each workspace's trouble is lifted, and how.
	due map[string]chaosRestore
	n   int // rotations
}

type chaosRestore struct {
	at   time.Time
	kind string
}

func newChaosWorkspaces(t *testing.T) *chaosWorkspaces {
	cw := &chaosWorkspaces{dir: t.TempDir(), ids: []string{wsA, wsB},
		keys: map[string]string{wsA: "key-a-0", wsB: "key-b-0"}, due: map[string]chaosRestore{}}
	for _, id := range cw.ids {
		writeRegistryKey(t, cw.dir, id, cw.keys[id])
	}
	return cw
}

// credentials are the emulator's: the default workspace's and the registry's.
func (cw *chaosWorkspaces) credentials() map[string]string {
	c := map[string]string{workspace: apiKey}
	for id, k := range cw.keys {
		c[id] = k
	}
	return c
}

// fault gives one workspace trouble of kind k (0: revoke, 1: no key,
// 2: outage, 3: rotation) and names it for the fault counts. A workspace
// already in trouble is left alone.
func (cw *chaosWorkspaces) fault(t *testing.T, rng *rand.Rand, k int) string {
	t.Helper()
	id := cw.ids[rng.IntN(len(cw.ids))]
	if _, busy := cw.due[id]; busy {
		return "workspace-busy"
	}
	lift := time.Now().Add(time.Duration(2000+rng.IntN(20000)) * time.Millisecond)
	var err error
	r := chaosRestore{lift, ""}
	switch k {
	case 0:
		r.kind, err = "revoke", cw.a.RevokeKey(id)
	case 1:
		r.kind, err = "no-key", os.Remove(filepath.Join(cw.dir, id+".key"))
	case 2:
		r.kind, err = "outage", cw.a.SetWorkspaceFaults(id, &emulator.Faults{Outage: true})
	default:
		cw.n++
		cw.keys[id] = "key-" + id + "-" + strconv.Itoa(cw.n)
		err = cw.a.AddWorkspace(id, emulator.Workspace{Key: cw.keys[id]})
		// the registry follows a moment later
		r = chaosRestore{time.Now().Add(time.Duration(rng.IntN(3000)) * time.Millisecond), "rotate"}
	}
	if err != nil {
		t.Fatal(err)
	}
	cw.due[id] = r
	return "ws-" + r.kind
}

// restoreDue lifts the trouble that is due (all of it with all).
func (cw *chaosWorkspaces) restoreDue(t *testing.T, all bool) {
	t.Helper()
	for id, r := range cw.due {
		if !all && time.Now().Before(r.at) {
			continue
		}
		var err error
		switch r.kind {
		case "revoke":
			err = cw.a.RestoreKey(id)
		case "outage":
			err = cw.a.SetWorkspaceFaults(id, nil)
		default: // no-key, rotate
			writeRegistryKey(t, cw.dir, id, cw.keys[id])
		}
		if err != nil {
			t.Fatal(err)
		}
		delete(cw.due, id)
	}
}
