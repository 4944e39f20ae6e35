package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
	"github.com/cohortsync/cohortsync-worker/internal/lease"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// registryConfig is a valid configuration with the registry dir; nothing
// is dialled by build.
func registryConfig(dir, def, key string) config.Config {
	cfg := config.Default()
	cfg.KafkaBrokers = []string{"127.0.0.1:1"}
	cfg.KafkaTopics = []string{"in"}
	cfg.KafkaGroupID = "g"
	cfg.MoEngageDC = "01"
	cfg.MoEngageWorkspaceID = def
	cfg.MoEngageDataAPIKey = config.NewSecret(key)
	cfg.MoEngageWorkspacesDir = dir
	return cfg
}

func mustOpen(t *testing.T, cfg config.Config) *workspaces {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ws, err := openWorkspaces(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

// TestRegistryTargets (issue 21 stage 1): a workspace's target is its ID,
// the base URL of its data center (its .dc, else MOENGAGE_DC; MOENGAGE_BASE_URL
// overrides all) and the registry's key; the default keeps MOENGAGE_DATA_API_KEY
// when set. A workspace outside the registry has none (not served), with
// an error naming the file. Every budget is served, below RATE_LIMIT_RPM
// or above it, and with RATE_LIMIT_RPM 0: each workspace has its own
// (ratelimit.Fleets), which budgetOf gives.
func TestRegistryTargets(t *testing.T) {
	dir := rig.Dir(t, map[string]string{"WA.key": "key-a\n", "WA.dc": "02", "WB.key": "key-b",
		"WLOW.key": "key-low", "WLOW.rate_limit_rpm": "100", "WHIGH.key": "key-high", "WHIGH.rate_limit_rpm": "600",
		"DEF.key": "registry-key-of-def"})
	ws := mustOpen(t, registryConfig(dir, "DEF", "env-key"))

	for _, tc := range []struct{ id, url, key string }{
		{"WA", "https://api-02.moengage.com", "key-a"},
		{"WB", "https://api-01.moengage.com", "key-b"}, // MOENGAGE_DC
		{"WHIGH", "https://api-01.moengage.com", "key-high"},
		{"WLOW", "https://api-01.moengage.com", "key-low"},
		{"DEF", "https://api-01.moengage.com", "env-key"}, // MOENGAGE_DATA_API_KEY wins for the default
	} {
		got, err := ws.registryTargets(tc.id)
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		key, err := got.Key()
		if got.ID != tc.id || got.BaseURL != tc.url || err != nil || key != tc.key {
			t.Errorf("%s: target {%s %s} key %q (%v), want {%s %s} key %q", tc.id, got.ID, got.BaseURL, key, err, tc.id, tc.url, tc.key)
		}
		if !ws.serves(tc.id) {
			t.Errorf("%s not served", tc.id)
		}
	}
	for id, want := range map[string][]string{
		"WNONE": {"not in MOENGAGE_WORKSPACES_DIR", "WNONE.key"},
	} {
		_, err := ws.registryTargets(id)
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %v does not say %q", id, err, w)
			}
		}
		if ws.serves(id) {
			t.Errorf("%s served", id)
		}
	}

	// MOENGAGE_BASE_URL overrides every data center.
	cfg := registryConfig(dir, "DEF", "env-key")
	cfg.MoEngageBaseURL = "http://127.0.0.1:9/"
	ws = mustOpen(t, cfg)
	if got, err := ws.registryTargets("WA"); err != nil || got.BaseURL != "http://127.0.0.1:9" {
		t.Errorf("WA with MOENGAGE_BASE_URL: %+v, %v", got, err)
	}

	for id, want := range map[string]float64{"WLOW": 100, "WHIGH": 600, "WB": 300} {
		if b, in := ws.budgetOf(id); !in || b != want {
			t.Errorf("budgetOf(%s) = %v, %v; want %v, true", id, b, in, want)
		}
	}
	if _, in := ws.budgetOf("WNONE"); in {
		t.Error("budgetOf(WNONE): in the registry")
	}

	// RATE_LIMIT_RPM 0 (no client-side limit, the emulator): a workspace
	// with a budget of its own is served at it.
	cfg.RateLimitRPM = 0
	ws = mustOpen(t, cfg)
	if !ws.serves("WB") || !ws.serves("WHIGH") {
		t.Errorf("RATE_LIMIT_RPM 0: WB served %v, WHIGH served %v (want both)", ws.serves("WB"), ws.serves("WHIGH"))
	}
	if b, in := ws.budgetOf("WHIGH"); !in || b != 600 {
		t.Errorf("RATE_LIMIT_RPM 0: budgetOf(WHIGH) = %v, %v; want 600, true", b, in)
	}
}

// TestRegistryTargetsFollowRotation: the key function reads the registry
// as it is now, so a rotated key is returned once the registry read it.
func TestRegistryTargetsFollowRotation(t *testing.T) {
	dir := rig.Dir(t, map[string]string{"WA.key": "old"})
	ws := mustOpen(t, registryConfig(dir, "WA", ""))
	tg, err := ws.registryTargets("WA")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "WA.key"), []byte("new-key-longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = ws.reg.Run(ctx) }()         // as the worker's errgroup runs it
	deadline := time.Now().Add(5 * time.Second) // the design's bound
	for {
		k, err := tg.Key()
		if err == nil && k == "new-key-longer" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("key 5 s after rotation %q, %v", k, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOpenRegistryUnlistable: a registry directory that cannot be listed
// fails the start with an error naming MOENGAGE_WORKSPACES_DIR.
func TestOpenRegistryUnlistable(t *testing.T) {
	cfg := registryConfig(filepath.Join(t.TempDir(), "missing"), "WA", "k")
	_, err := openWorkspaces(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err == nil || !strings.Contains(err.Error(), "MOENGAGE_WORKSPACES_DIR") || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("err = %v, want one naming MOENGAGE_WORKSPACES_DIR and the directory", err)
	}
}

// TestBuildWithRegistry: build opens the registry, takes the default's key
// from it when MOENGAGE_DATA_API_KEY is not set, lets the consumer take
// every workspace the registry serves, gives the sink every workspace's
// target (the default's too, from its own data center) and its
// TargetsChanged, gives the Fleets every workspace's budget (WLOW's 1/min
// is served at it: a budget per workspace) and the registry's changes,
// and exports the gauges. A default the registry cannot key
// fails the start with a message naming the variables; a registry without
// a default starts.
func TestBuildWithRegistry(t *testing.T) {
	dir := rig.Dir(t, map[string]string{"DEF.key": "def-key", "WA.key": "a", "WLOW.key": "l",
		"WLOW.rate_limit_rpm": "1", "bad name.key": "x", "WBAD.key": "k", "WBAD.rate_limit_rpm": "-1", "WDC.key": "k", "WDC.dc": "02"})
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	w, err := build(Options{Config: registryConfig(dir, "DEF", ""), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	cc := w.consumerConfig(nil, lease.New())
	if cc.Workspace != "DEF" || cc.Serves == nil || !cc.Serves("WA") || !cc.Serves("WLOW") || cc.Serves("NOPE") {
		t.Errorf("consumer: Workspace %q, Serves set %v: want DEF, serving WA and WLOW and not NOPE", cc.Workspace, cc.Serves != nil)
	}
	if w.ws.budgetsChanged == nil {
		t.Error("the registry's changes are not passed to the budgets (Fleets.Sync)")
	}
	if r := w.fleet.Limiter("WLOW").RPM(); r <= 0 || r > 1 {
		t.Errorf("WLOW's Limiter runs at %v/min before any generation, want at most its budget 1/min", r)
	}
	if k, err := w.ws.defaultKey("")(); err != nil || k != "def-key" {
		t.Errorf("default key %q, %v; want the registry's DEF.key", k, err)
	}
	if w.ws.targetsChanged == nil {
		t.Error("the registry's changes are not passed to the sink (TargetsChanged)")
	}
	targets := w.ws.sinkTargets()
	if tg, err := targets("WDC"); err != nil || tg.ID != "WDC" || !strings.Contains(tg.BaseURL, "api-02.") {
		t.Errorf("WDC's target = %+v, %v; want its own data center 02", tg, err)
	}
	if _, err := targets("NOPE"); !errors.Is(err, sink.ErrUnknownWorkspace) {
		t.Errorf("NOPE's target: err = %v, want sink.ErrUnknownWorkspace", err)
	}
	if n := gauge(t, w.reg, "cohortsync_workspaces"); n != 4 { // DEF, WA, WDC, WLOW
		t.Errorf("cohortsync_workspaces = %v, want 4", n)
	}
	if n := gauge(t, w.reg, "cohortsync_workspace_registry_problems"); n != 2 { // "bad name.key", WBAD.rate_limit_rpm
		t.Errorf("cohortsync_workspace_registry_problems = %v, want 2", n)
	}

	_, err = build(Options{Config: registryConfig(dir, "NOKEY", ""), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "MOENGAGE_WORKSPACE_ID NOKEY: no MOENGAGE_DATA_API_KEY") {
		t.Errorf("default NOKEY: err = %v, want one naming MOENGAGE_WORKSPACE_ID and MOENGAGE_DATA_API_KEY", err)
	}
	for _, def := range []string{"", "WDC"} { // no default; a default in its own data center
		w, err := build(Options{Config: registryConfig(dir, def, ""), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Errorf("default %q: %v", def, err)
			continue
		}
		w.close()
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
