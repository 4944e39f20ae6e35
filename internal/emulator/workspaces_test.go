package emulator_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

// as returns request options that authenticate as workspace ws with key.
func as(ws, key string, b string) apiReq {
	return apiReq{body: b, auth: ptr(basic(ws, key)), appKey: ptr(ws)}
}

// newMulti returns an emulator serving ws1, ws2 (Credentials) and ws3
// (Workspaces, key3), after mutate.
func newMulti(t *testing.T, mutate func(*emulator.Config)) (*emulator.Emulator, *fakeClock) {
	t.Helper()
	return newEmulator(t, func(c *emulator.Config) {
		c.Workspaces = map[string]emulator.Workspace{"ws3": {Key: "key3"}}
		if mutate != nil {
			mutate(c)
		}
	})
}

func TestWorkspacesAuth(t *testing.T) {
	e, _ := newMulti(t, nil)
	valid := body("add_members", "p", "c", "u")
	tests := []struct {
		name string
		req  apiReq
		want int
		err  *wantErr
	}{
		{"ws1 own key", as("ws1", "key1", valid), 200, nil},
		{"ws2 own key", as("ws2", "key2", valid), 200, nil},
		{"ws3 from Workspaces", as("ws3", "key3", valid), 200, nil},
		{"ws1's key as ws2", as("ws2", "key1", valid), 401, &errSecret},
		{"ws3's key as ws1", as("ws1", "key3", valid), 401, &errSecret},
		{"unknown workspace", as("ws9", "key1", valid), 401, &errSecret},
		{"MOE-APPKEY of another workspace", apiReq{body: valid, auth: ptr(basic("ws3", "key3")), appKey: ptr("ws1")}, 401, &errAppKey},
	}
	for _, tc := range tests {
		rec := serve(e, tc.req)
		if rec.Code != tc.want {
			t.Errorf("%s: status %d, want %d: %s", tc.name, rec.Code, tc.want, rec.Body.String())
			continue
		}
		if tc.err != nil {
			checkErrorBody(t, rec.Body.Bytes(), *tc.err)
		}
	}
	if _, err := emulator.New(emulator.Config{Credentials: map[string]string{"ws": "a"},
		Workspaces: map[string]emulator.Workspace{"ws": {Key: "b"}}}); err == nil {
		t.Error("New accepted one workspace with two keys")
	}
	if _, err := emulator.New(emulator.Config{Workspaces: map[string]emulator.Workspace{"ws": {Key: ""}}}); err == nil {
		t.Error("New accepted a workspace without a key")
	}
	if _, err := emulator.New(emulator.Config{Workspaces: map[string]emulator.Workspace{"ws": {Key: "k"}}}); err != nil {
		t.Errorf("New with Workspaces only: %v", err)
	}
}

func TestWorkspaceRateLimits(t *testing.T) {
	e, _ := newMulti(t, func(c *emulator.Config) {
		c.RateLimit = 3
		c.Workspaces = map[string]emulator.Workspace{"small": {Key: "ks", RateLimit: 1}, "free": {Key: "kf", RateLimit: -1}}
	})
	valid := body("add_members", "p", "c", "u")
	rec := serve(e, as("small", "ks", valid))
	mustStatus(t, rec, 200)
	if l, r, _ := rateHeaders(rec); l != "1" || r != "0" {
		t.Errorf("small: limit=%q remaining=%q, want 1, 0", l, r)
	}
	rec = serve(e, as("small", "ks", valid))
	mustStatus(t, rec, 429)
	if l, r, _ := rateHeaders(rec); l != "1" || r != "0" {
		t.Errorf("small 429: limit=%q remaining=%q", l, r)
	}
	// small's 429 leaves the others alone: ws1 has the emulator-wide limit,
	// its own window, and free has no limit.
	for i := 1; i <= 3; i++ {
		rec = serve(e, as("ws1", "key1", valid))
		mustStatus(t, rec, 200)
		if l, r, _ := rateHeaders(rec); l != "3" || r != strconv.Itoa(3-i) {
			t.Errorf("ws1 request %d: limit=%q remaining=%q", i, l, r)
		}
	}
	mustStatus(t, serve(e, as("ws1", "key1", valid)), 429)
	for range 10 {
		rec = serve(e, as("free", "kf", valid))
		mustStatus(t, rec, 200)
		if l, _, _ := rateHeaders(rec); l != "" {
			t.Fatalf("free: x-ratelimit-limit %q, want none", l)
		}
	}
	// A forced 429 in one workspace's faults is its own too.
	if err := e.SetWorkspaceFaults("ws2", &emulator.Faults{Force429: 1}); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, serve(e, as("ws2", "key2", valid)), 429)
	mustStatus(t, serve(e, as("ws2", "key2", valid)), 200)
	if f := e.Faults(); f.Force429 != 0 {
		t.Errorf("emulator-wide faults changed: %+v", f)
	}
}

func TestWorkspaceMembership(t *testing.T) {
	e, _ := newMulti(t, nil)
	mustStatus(t, serve(e, as("ws1", "key1", body("add_members", "p", "c", "a", "b"))), 200)
	mustStatus(t, serve(e, as("ws2", "key2", body("add_members", "p", "c", "x"))), 200)
	mustStatus(t, serve(e, as("ws2", "key2", body("remove_members", "p", "c", "a", "x"))), 200)
	mustStatus(t, serve(e, as("ws3", "key3", body("add_members", "p", "c", "a"))), 200)
	if got := e.Members("ws1", "p", "c"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("ws1 members = %v, want [a b] (ws2's remove must not reach it)", got)
	}
	if got := e.Members("ws2", "p", "c"); got == nil || len(got) != 0 {
		t.Errorf("ws2 members = %#v, want an empty, existing segment", got)
	}
	if got := e.Members("ws3", "p", "c"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("ws3 members = %v, want [a]", got)
	}
	segs := e.WorkspaceSegments("ws3")
	if len(segs) != 1 || segs[0].Workspace != "ws3" || segs[0].Requests != 1 {
		t.Errorf("ws3 segments = %+v", segs)
	}
}

func TestRevokeAndRestore(t *testing.T) {
	e, _ := newMulti(t, nil)
	valid := body("add_members", "p", "c", "u")
	mustStatus(t, serve(e, as("ws2", "key2", body("add_members", "p", "c", "before"))), 200)
	if err := e.RevokeKey("ws2"); err != nil {
		t.Fatal(err)
	}
	rec := serve(e, as("ws2", "key2", valid))
	mustStatus(t, rec, 401)
	checkErrorBody(t, rec.Body.Bytes(), errSecret)
	mustStatus(t, serve(e, as("ws1", "key1", valid)), 200)
	if ws := e.Workspaces(); len(ws) != 3 || ws[1].ID != "ws2" || !ws[1].Revoked || ws[0].Revoked {
		t.Errorf("Workspaces = %+v", ws)
	}
	if err := e.RestoreKey("ws2"); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, serve(e, as("ws2", "key2", body("add_members", "p", "c", "after"))), 200)
	if got := e.Members("ws2", "p", "c"); !slices.Equal(got, []string{"after", "before"}) {
		t.Errorf("ws2 members = %v: the revocation must keep its segments", got)
	}

	// 403: an account suspended in one workspace only.
	if err := e.SetWorkspaceFaults("ws2", &emulator.Faults{Forbidden: true, ForbiddenVariant: emulator.ForbiddenBlocked}); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, serve(e, as("ws2", "key2", valid)), 403)
	mustStatus(t, serve(e, as("ws1", "key1", valid)), 200)
	if f, own := e.WorkspaceFaults("ws2"); !own || !f.Forbidden {
		t.Errorf("WorkspaceFaults(ws2) = %+v, %v", f, own)
	}
	if err := e.SetWorkspaceFaults("ws2", nil); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, serve(e, as("ws2", "key2", valid)), 200)

	for _, err := range []error{e.RevokeKey("nope"), e.RestoreKey("nope"), e.SetWorkspaceFaults("nope", nil)} {
		if !errors.Is(err, emulator.ErrUnknownWorkspace) {
			t.Errorf("unknown workspace: err = %v", err)
		}
	}
}

func TestAddWorkspaceAtRuntime(t *testing.T) {
	e, _ := newMulti(t, nil)
	valid := body("add_members", "p", "c", "u")
	mustStatus(t, serve(e, as("ws9", "key9", valid)), 401)
	if err := e.AddWorkspace("ws9", emulator.Workspace{Key: "key9", RateLimit: 1}); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, serve(e, as("ws9", "key9", valid)), 200)
	mustStatus(t, serve(e, as("ws9", "key9", valid)), 429)
	if got := e.Members("ws9", "p", "c"); !slices.Equal(got, []string{"u"}) {
		t.Errorf("ws9 members = %v", got)
	}

	// Adding it again rotates the key and lifts a revocation; the window
	// and the segments stay.
	if err := e.RevokeKey("ws9"); err != nil {
		t.Fatal(err)
	}
	if err := e.AddWorkspace("ws9", emulator.Workspace{Key: "key9b", RateLimit: 2}); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, serve(e, as("ws9", "key9", valid)), 401)
	rec := serve(e, as("ws9", "key9b", valid))
	mustStatus(t, rec, 200)
	if l, r, _ := rateHeaders(rec); l != "2" || r != "0" {
		t.Errorf("after rotation: limit=%q remaining=%q, want 2, 0 (the window is kept)", l, r)
	}

	if !e.RemoveWorkspace("ws9") || e.RemoveWorkspace("ws9") {
		t.Error("RemoveWorkspace reported wrongly")
	}
	mustStatus(t, serve(e, as("ws9", "key9b", valid)), 401)
	if got := e.Members("ws9", "p", "c"); !slices.Equal(got, []string{"u"}) {
		t.Errorf("removal dropped the segments: %v", got)
	}

	if err := e.AddWorkspace("bad:id", emulator.Workspace{Key: "k"}); err == nil {
		t.Error("AddWorkspace accepted an ID with ':'")
	}
	// Reset goes back to Config: runtime workspaces are dropped.
	if err := e.AddWorkspace("ws8", emulator.Workspace{Key: "key8"}); err != nil {
		t.Fatal(err)
	}
	e.Reset()
	mustStatus(t, serve(e, as("ws8", "key8", valid)), 401)
	mustStatus(t, serve(e, as("ws3", "key3", valid)), 200)
}

func TestWorkspaceFaults(t *testing.T) {
	e, clock := newMulti(t, func(c *emulator.Config) {
		c.Faults = emulator.Faults{Outage: true}
		c.Workspaces = map[string]emulator.Workspace{"ws3": {Key: "key3", Faults: &emulator.Faults{}}}
	})
	valid := body("add_members", "p", "c", "u")
	// The emulator-wide outage hits ws1; ws3's own (empty) faults replace it.
	mustStatus(t, serve(e, as("ws1", "key1", valid)), 503)
	mustStatus(t, serve(e, as("ws3", "key3", valid)), 200)

	if err := e.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	if err := e.SetWorkspaceFaults("ws2", &emulator.Faults{Script: []emulator.FaultStep{
		{After: 10 * time.Second, Duration: 10 * time.Second, Kind: emulator.Fault5xx}}}); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, serve(e, as("ws2", "key2", valid)), 200)
	clock.Advance(15 * time.Second)
	mustStatus(t, serve(e, as("ws2", "key2", valid)), 500)
	mustStatus(t, serve(e, as("ws1", "key1", valid)), 200)
	clock.Advance(10 * time.Second)
	mustStatus(t, serve(e, as("ws2", "key2", valid)), 200)

	// A workspace's latency is its own.
	if err := e.SetWorkspaceFaults("ws2", &emulator.Faults{Latency: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	mustStatus(t, serve(e, as("ws1", "key1", valid)), 200)
	if d := time.Since(t0); d >= 300*time.Millisecond {
		t.Errorf("ws1 waited %s for ws2's latency", d)
	}
	t0 = time.Now()
	mustStatus(t, serve(e, as("ws2", "key2", valid)), 200)
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Errorf("ws2 waited %s, want its 300ms latency", d)
	}
}

func TestLoadWorkspacesDir(t *testing.T) {
	// The kubelet's layout: files in a timestamped directory, ..data a
	// symlink to it, and one symlink per file at the top.
	dir := t.TempDir()
	data := filepath.Join(dir, "..2026_12_05_09_00_00.1")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"ws1.key": "key1\n", "ws1.dc": "01", "ws2.key": " key2 ", "ws2.rate_limit_rpm": "60\n",
		"orphan.rate_limit_rpm": "10", "README": "not a workspace",
	}
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(data, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(data), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := emulator.LoadWorkspacesDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]emulator.Workspace{"ws1": {Key: "key1"}, "ws2": {Key: "key2", RateLimit: 60}}
	if len(got) != len(want) || got["ws1"] != want["ws1"] || got["ws2"].Key != "key2" || got["ws2"].RateLimit != 60 {
		t.Fatalf("LoadWorkspacesDir = %+v, want %+v", got, want)
	}

	// The loaded workspaces serve requests with their own limits.
	e, _ := newEmulator(t, func(c *emulator.Config) { c.Credentials = nil; c.Workspaces = got })
	valid := body("add_members", "p", "c", "u")
	rec := serve(e, as("ws2", "key2", valid))
	mustStatus(t, rec, 200)
	if l, _, _ := rateHeaders(rec); l != "60" {
		t.Errorf("ws2 limit %q, want 60", l)
	}
	mustStatus(t, serve(e, as("ws1", "key1", valid)), 200)

	for name, content := range map[string]string{"e.key": " \n", "r.key": "k", "r.rate_limit_rpm": "lots"} {
		bad := t.TempDir()
		if err := os.WriteFile(filepath.Join(bad, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if name == "r.rate_limit_rpm" {
			_ = os.WriteFile(filepath.Join(bad, "r.key"), []byte("k"), 0o600)
		}
		if _, err := emulator.LoadWorkspacesDir(bad); (err == nil) != (name == "r.key") {
			t.Errorf("%s=%q: err = %v", name, content, err)
		}
	}
	if _, err := emulator.LoadWorkspacesDir(filepath.Join(dir, "missing")); err == nil ||
		!strings.Contains(err.Error(), "workspaces dir") {
		t.Errorf("missing dir: err = %v", err)
	}
}

func TestAdminWorkspaces(t *testing.T) {
	ctx := t.Context()
	e, srv, c := startServer(t, func(c *emulator.Config) {
		c.Workspaces = map[string]emulator.Workspace{"ws3": {Key: "key3", RateLimit: 7}}
	})
	valid := body("add_members", "p", "c", "u")
	list, err := c.Workspaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[2] != (emulator.WorkspaceInfo{ID: "ws3", RateLimit: 7}) || list[0].RateLimit != 300 {
		t.Errorf("workspaces = %+v", list)
	}

	// Add a workspace whose ID needs escaping, then use it.
	const odd = "team a/b"
	if err := c.AddWorkspace(ctx, odd, emulator.Workspace{Key: "ko"}); err != nil {
		t.Fatal(err)
	}
	if got := post(t, srv, as(odd, "ko", valid)); got != 200 {
		t.Fatalf("new workspace: status %d", got)
	}
	segs, err := c.WorkspaceSegments(ctx, odd)
	if err != nil || len(segs) != 1 || segs[0].Workspace != odd || !slices.Equal(segs[0].Members, []string{"u"}) {
		t.Errorf("segments of %q = %+v, %v", odd, segs, err)
	}

	// Revoke and restore ws2; ws1 is untouched.
	if err := c.RevokeKey(ctx, "ws2"); err != nil {
		t.Fatal(err)
	}
	if a, b := post(t, srv, as("ws2", "key2", valid)), post(t, srv, as("ws1", "key1", valid)); a != 401 || b != 200 {
		t.Errorf("revoked ws2: %d, ws1: %d; want 401, 200", a, b)
	}
	if err := c.RestoreKey(ctx, "ws2"); err != nil {
		t.Fatal(err)
	}
	if got := post(t, srv, as("ws2", "key2", valid)); got != 200 {
		t.Errorf("restored ws2: %d", got)
	}
	reqs, err := c.WorkspaceRequests(ctx, "ws2", 0)
	if err != nil || len(reqs) != 2 || reqs[0].Status != 401 || reqs[1].Status != 200 {
		t.Errorf("ws2 requests = %+v, %v", reqs, err)
	}

	// Per-workspace faults over the admin API.
	if err := c.SetWorkspaceFaults(ctx, "ws1", &emulator.Faults{Outage: true}); err != nil {
		t.Fatal(err)
	}
	if a, b := post(t, srv, as("ws1", "key1", valid)), post(t, srv, as("ws2", "key2", valid)); a != 503 || b != 200 {
		t.Errorf("ws1 outage: ws1 %d, ws2 %d; want 503, 200", a, b)
	}
	if f, own := e.WorkspaceFaults("ws1"); !own || !f.Outage {
		t.Errorf("ws1 faults = %+v, %v", f, own)
	}
	if err := c.SetWorkspaceFaults(ctx, "ws1", &emulator.Faults{ErrorRate: 2}); err == nil {
		t.Error("invalid workspace faults accepted")
	}
	if err := c.SetWorkspaceFaults(ctx, "ws1", nil); err != nil {
		t.Fatal(err)
	}
	if got := post(t, srv, as("ws1", "key1", valid)); got != 200 {
		t.Errorf("ws1 after its faults were dropped: %d", got)
	}

	if err := c.RemoveWorkspace(ctx, odd); err != nil {
		t.Fatal(err)
	}
	if got := post(t, srv, as(odd, "ko", valid)); got != 401 {
		t.Errorf("removed workspace: %d", got)
	}
	for name, err := range map[string]error{
		"revoke": c.RevokeKey(ctx, "nope"), "remove": c.RemoveWorkspace(ctx, "nope"),
		"faults": c.SetWorkspaceFaults(ctx, "nope", &emulator.Faults{}),
	} {
		if err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("%s of an unknown workspace: err = %v, want 404", name, err)
		}
	}
	if err := c.AddWorkspace(ctx, "nokey", emulator.Workspace{}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("workspace without a key: err = %v, want 400", err)
	}
}

// TestWorkspacesConcurrentChanges changes workspaces at run time while
// requests flow (run with -race): ws1's requests all succeed whatever
// happens to ws2 and ws9.
func TestWorkspacesConcurrentChanges(t *testing.T) {
	e, srv, _ := startServer(t, func(c *emulator.Config) { c.RateLimit = 100000 })
	const perWorker = 60
	var wg sync.WaitGroup
	for _, ws := range []string{"ws1", "ws2"} {
		wg.Go(func() {
			for i := range perWorker {
				code := post(t, srv, as(ws, "key"+ws[2:], body("add_members", "p", "c", strconv.Itoa(i))))
				if ws == "ws1" && code != 200 {
					t.Errorf("ws1 request %d: status %d", i, code)
				}
			}
		})
	}
	stop := make(chan struct{})
	var changer sync.WaitGroup
	changer.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = e.RevokeKey("ws2")
			_ = e.SetWorkspaceFaults("ws2", &emulator.Faults{Forbidden: true})
			_ = e.AddWorkspace("ws9", emulator.Workspace{Key: "k", RateLimit: 1})
			_ = e.Workspaces()
			_, _ = e.WorkspaceFaults("ws2")
			_ = e.RestoreKey("ws2")
			_ = e.SetWorkspaceFaults("ws2", nil)
			_ = e.RemoveWorkspace("ws9")
		}
	})
	wg.Wait()
	close(stop)
	changer.Wait()
	if got := len(e.Members("ws1", "p", "c")); got != perWorker {
		t.Errorf("ws1 has %d members, want %d", got, perWorker)
	}
}
