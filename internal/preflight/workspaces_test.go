package preflight

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

// TestWorkspacesOffline (issue 21): `check --offline` validates the
// registry, files only: a problem fails the check (exit 2) naming the file;
// a budget of its own below RATE_LIMIT_RPM is not one (every workspace has
// its own budget); a clean registry passes and lists its workspaces. No
// network.
func TestWorkspacesOffline(t *testing.T) {
	broker, brokerConns := countingListener(t)
	rc := &recorder{answer: func(string) (int, string) { return 401, secretMismatch }}
	api := httptest.NewServer(rc)
	defer api.Close()
	good := rig.Dir(t, map[string]string{"WA.key": "ka", "WB.key": "kb", "WB.dc": "02"})
	bad := rig.Dir(t, map[string]string{"WA.key": "ka", "WB.key": "kb", "WB.dc": "99", "WC.key": "kc", "WC.rate_limit_rpm": "10"})
	env := map[string]string{"KAFKA_BROKERS": broker, "KAFKA_GROUP_ID": "g", "MOENGAGE_BASE_URL": api.URL,
		"MOENGAGE_WORKSPACE_ID": "WA", "MOENGAGE_WORKSPACES_DIR": good}
	getenv := func(k string) string { return env[k] }
	var out, errOut bytes.Buffer
	if code := Main(t.Context(), []string{"--offline"}, getenv, nil, "test", &out, &errOut); code != ExitOK ||
		!strings.Contains(out.String(), "ok    config.workspaces  MOENGAGE_WORKSPACES_DIR "+good+": 2 workspaces (WA, WB)") ||
		!strings.Contains(out.String(), "key from MOENGAGE_WORKSPACES_DIR") {
		t.Fatalf("--offline, clean registry: exit %d\n%s%s", code, out.String(), errOut.String())
	}

	env["MOENGAGE_WORKSPACES_DIR"] = bad
	out.Reset()
	code := Main(t.Context(), []string{"--offline"}, getenv, nil, "test", &out, &errOut)
	if want := "FAIL  config.workspaces  workspace: WB.dc:"; !strings.Contains(out.String(), want) {
		t.Errorf("no %q in\n%s", want, out.String())
	}
	if strings.Contains(out.String(), "WC") {
		t.Errorf("WC (a budget of 10/min, below RATE_LIMIT_RPM) reported:\n%s", out.String())
	}
	if code != ExitBadConfig {
		t.Errorf("exit %d, want %d", code, ExitBadConfig)
	}
	// The default without a key anywhere.
	env["MOENGAGE_WORKSPACE_ID"] = "WZ"
	env["MOENGAGE_WORKSPACES_DIR"] = good
	out.Reset()
	if code := Main(t.Context(), []string{"--offline"}, getenv, nil, "test", &out, &errOut); code != ExitBadConfig ||
		!strings.Contains(out.String(), "MOENGAGE_WORKSPACE_ID WZ: no MOENGAGE_DATA_API_KEY and no usable WZ.key") {
		t.Fatalf("--offline, default without key: exit %d\n%s", code, out.String())
	}
	time.Sleep(100 * time.Millisecond)
	if n, m := brokerConns.Load(), len(rc.bodies); n != 0 || m != 0 {
		t.Fatalf("--offline made %d broker connections and %d API requests, want none", n, m)
	}
}

// TestWorkspacesProbed (issue 21): the full check probes every workspace
// of the registry once, with its own key and ID, through the default's
// checks (checkAPI); a rejected key fails its workspace's check, naming
// its key file.
func TestWorkspacesProbed(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // workspace → key
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		user, key, _ := r.BasicAuth()
		mu.Lock()
		seen[user+"/"+r.Header.Get("MOE-APPKEY")] = key
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if key == "revoked" {
			w.WriteHeader(401)
			_, _ = io.WriteString(w, secretMismatch)
			return
		}
		_, _ = io.WriteString(w, `{"status":"success"}`)
	}))
	defer api.Close()
	dir := rig.Dir(t, map[string]string{"DEF.key": "kdef", "WA.key": "ka", "WB.key": "revoked"})
	cfg := config.Default()
	cfg.KafkaBrokers, cfg.KafkaGroupID = []string{"127.0.0.1:1"}, "g"
	cfg.MoEngageBaseURL, cfg.MoEngageWorkspaceID, cfg.MoEngageWorkspacesDir = api.URL, "DEF", dir
	rep := Run(t.Context(), Options{Config: cfg, Timeout: 5 * time.Second})

	want := map[string]string{"DEF/DEF": "kdef", "WA/WA": "ka", "WB/WB": "revoked"}
	mu.Lock()
	if len(seen) != len(want) {
		t.Errorf("probes %v, want one per workspace %v", seen, want)
	}
	for k, v := range want {
		if seen[k] != v {
			t.Errorf("probe of %s carried %q, want %q", k, seen[k], v)
		}
	}
	mu.Unlock()
	if r := find(t, rep.Results, "api.credentials"); r.Status != OK {
		t.Errorf("default: %+v", r)
	}
	if r := find(t, rep.Results, "api.credentials[WA]"); r.Status != OK {
		t.Errorf("WA: %+v", r)
	}
	if r := find(t, rep.Results, "api.credentials[WB]"); r.Status != Fail || !strings.Contains(r.Detail, "WB.key in MOENGAGE_WORKSPACES_DIR") {
		t.Errorf("WB: %+v", r)
	}
	if rep.ExitCode() != ExitFailed {
		t.Errorf("exit %d, want %d", rep.ExitCode(), ExitFailed)
	}

	// The default keyed by the registry: a rejected key names its file.
	if err := os.WriteFile(filepath.Join(dir, "DEF.key"), []byte("revoked"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg = config.Default()
	cfg.KafkaBrokers, cfg.KafkaGroupID = []string{"127.0.0.1:1"}, "g"
	cfg.MoEngageBaseURL, cfg.MoEngageWorkspaceID, cfg.MoEngageWorkspacesDir = api.URL, "DEF", dir
	rep = Run(t.Context(), Options{Config: cfg, Timeout: 5 * time.Second})
	if r := find(t, rep.Results, "api.credentials"); r.Status != Fail || !strings.Contains(r.Detail, "DEF.key and DEF.dc in MOENGAGE_WORKSPACES_DIR") {
		t.Errorf("default keyed by the registry, revoked: %+v", r)
	}
}
