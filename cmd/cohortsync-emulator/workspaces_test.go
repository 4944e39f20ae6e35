package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

// writeWorkspacesDir writes a workspaces directory from name -> content.
func writeWorkspacesDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestParseWorkspaces(t *testing.T) {
	dir := writeWorkspacesDir(t, map[string]string{
		"wa.key": "ka\n", "wa.dc": "02", "wb.key": "kb", "wb.rate_limit_rpm": "60",
	})
	o, err := parseOptions([]string{"--credentials=ws1:k1,wa:ka", "--workspaces-dir", dir,
		"--workspace-rate-limits=ws1:5, wa:-1"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	w := o.cfg.Workspaces
	if len(w) != 3 || w["wa"] != (emulator.Workspace{Key: "ka", RateLimit: -1}) ||
		w["wb"] != (emulator.Workspace{Key: "kb", RateLimit: 60}) || w["ws1"] != (emulator.Workspace{Key: "k1", RateLimit: 5}) {
		t.Errorf("workspaces = %+v", w)
	}
	if o.cfg.Credentials["ws1"] != "k1" {
		t.Errorf("credentials = %v", o.cfg.Credentials)
	}
	// The directory alone is enough, also from the environment.
	o, err = parseOptions(nil, envOf(map[string]string{"EMULATOR_WORKSPACES_DIR": dir}), io.Discard)
	if err != nil || len(o.cfg.Workspaces) != 2 || o.cfg.Workspaces["wa"].Key != "ka" {
		t.Errorf("EMULATOR_WORKSPACES_DIR: %+v, %v", o.cfg.Workspaces, err)
	}

	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"missing dir":      {[]string{"--workspaces-dir=/nonexistent/x"}, "--workspaces-dir"},
		"key conflict":     {[]string{"--credentials=wa:other", "--workspaces-dir=" + dir}, "different keys"},
		"limit of nothing": {[]string{"--credentials=a:b", "--workspace-rate-limits=zz:5"}, "has no key"},
		"bad limit":        {[]string{"--credentials=a:b", "--workspace-rate-limits=a:0"}, "workspace_id:requests"},
		"empty dir":        {[]string{"--workspaces-dir=" + t.TempDir()}, "no credentials"},
	} {
		var stderr bytes.Buffer
		if code := serve(t.Context(), tc.args, noEnv, io.Discard, &stderr, nil); code != 2 ||
			!strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s: code %d, stderr %q; want 2 and %q", name, code, stderr.String(), tc.want)
		}
	}
	var stdout bytes.Buffer
	serve(t.Context(), []string{"--help"}, noEnv, &stdout, io.Discard, nil)
	for _, want := range []string{"--workspaces-dir", "EMULATOR_WORKSPACES_DIR", "--workspace-rate-limits", "/_emulator/workspaces/{id}/revoke"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %s", want)
		}
	}
}

// TestServeWorkspaces runs the binary's server with a workspaces directory
// and drives the per-workspace admin API over HTTP.
func TestServeWorkspaces(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	dir := writeWorkspacesDir(t, map[string]string{"wa.key": "ka", "wa.rate_limit_rpm": "1", "wb.key": "kb"})
	addrc := make(chan net.Addr, 1)
	var stderr rig.Buffer
	done := make(chan int, 1)
	go func() {
		done <- serve(ctx, []string{"--listen=127.0.0.1:0", "--workspaces-dir", dir, "--rate-limit=2", "--rate-window=1h"}, noEnv,
			io.Discard, &stderr, func(a net.Addr) { addrc <- a })
	}()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a.String()
	case code := <-done:
		t.Fatalf("exited with %d: %s", code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start")
	}
	post := func(ws, key string) int {
		body := `{"action":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u-` + ws + `"}]}}`
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+emulator.APIPath, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(ws+":"+key)))
		req.Header.Set("MOE-APPKEY", ws)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// wa's limit is 1 (its file), wb's the --rate-limit 2.
	got := []int{post("wa", "ka"), post("wa", "ka"), post("wb", "kb"), post("wb", "kb"), post("wb", "kb"), post("wa", "kb")}
	if want := []int{200, 429, 200, 200, 429, 401}; !slices.Equal(got, want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
	admin := &emulator.AdminClient{BaseURL: base}
	if err := admin.AddWorkspace(ctx, "wc", emulator.Workspace{Key: "kc"}); err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeKey(ctx, "wb"); err != nil {
		t.Fatal(err)
	}
	if got := []int{post("wc", "kc"), post("wb", "kb")}; !slices.Equal(got, []int{200, 401}) {
		t.Errorf("added wc, revoked wb: %v, want [200 401]", got)
	}
	segs, err := admin.WorkspaceSegments(ctx, "wc")
	if err != nil || len(segs) != 1 || len(segs[0].Members) != 1 || segs[0].Members[0] != "u-wc" {
		t.Errorf("wc segments = %+v, %v", segs, err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("server did not shut down")
	}
}
