package app

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
	"github.com/cohortsync/cohortsync-worker/internal/workspace"
)

// TestBudgetMetricsByWorkspace (issue 21 item 3): the sink's Limiter of a
// workspace is that workspace's (a pause of WA holds WA only), and counts
// its waits and the API's pauses under the workspace's label; a workspace
// outside the registry counts as "other"; each workspace's rate in force
// is a series of its own, gone once the workspace left the registry.
func TestBudgetMetricsByWorkspace(t *testing.T) {
	dir := rig.Dir(t, map[string]string{"DEF.key": "d", "WA.key": "a", "WA.rate_limit_rpm": "60", "WB.key": "b"})
	w, err := build(Options{Config: registryConfig(dir, "DEF", ""), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	w.fleet.Rebalance(1, 1, 1)
	w.limiterFor("WA").PauseUntil(time.Now().Add(time.Hour))
	w.limiterFor("NOPE").PauseUntil(time.Now().Add(time.Hour))
	if err := w.limiterFor("WB").Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if p, _ := w.fleet.Limiter("WB").Paused(); !p.IsZero() {
		t.Errorf("WB is paused until %v by WA's pause", p)
	}
	if p, _ := w.fleet.Limiter("WA").Paused(); p.IsZero() {
		t.Error("WA's pause did not reach WA's Limiter")
	}
	for label, want := range map[string]float64{"WA": 1, "other": 1, "WB": 0, "NOPE": 0} {
		if got := testutil.ToFloat64(w.budgetM.Pauses.WithLabelValues(label)); got != want {
			t.Errorf("pauses{workspace=%q} = %v, want %v", label, got, want)
		}
	}
	if n := testutil.CollectAndCount(w.budgetM.Wait); n != 1 {
		t.Errorf("%d wait series, want 1 (WB's)", n)
	}
	w.onRate("WA", 40, 5)
	w.onRate("WB", 100, 0)
	if got := testutil.ToFloat64(w.budgetM.RPM.WithLabelValues("WA")); got != 45 {
		t.Errorf("rate{workspace=WA} = %v, want 45", got)
	}
	if err := os.Remove(filepath.Join(dir, "WA.key")); err != nil {
		t.Fatal(err)
	}
	waitRegistry(t, w.ws.reg, func(s *workspace.Snapshot) bool { _, ok := s.Lookup("WA"); return !ok })
	w.budgetsChanged()
	if n := testutil.CollectAndCount(w.budgetM.RPM); n != 1 {
		t.Errorf("%d rate series after WA left the registry, want 1 (WB's)", n)
	}
	if got := testutil.ToFloat64(w.budgetM.RPM.WithLabelValues("WB")); got != 100 {
		t.Errorf("rate{workspace=WB} = %v, want 100 (kept)", got)
	}
}

// waitRegistry runs r until ok holds for its snapshot, for up to 10 s.
func waitRegistry(t *testing.T, r *workspace.Registry, ok func(*workspace.Snapshot) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	for !ok(r.Snapshot()) {
		if ctx.Err() != nil {
			t.Fatal("the registry did not change within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
