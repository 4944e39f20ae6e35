package batcher_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// The worker's metrics are the batcher's.
var _ batcher.Metrics = (*metrics.Metrics)(nil)

// TestNoMetricsDependency: the batcher, its pure Core above all, depends
// on neither internal/metrics nor Prometheus; it reports through the
// Metrics interface.
func TestNoMetricsDependency(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasSuffix(dep, "/internal/metrics") || strings.Contains(dep, "prometheus") {
			t.Errorf("batcher depends on %s", dep)
		}
	}
}

// TestTriggerLabels: metrics.New exports batches_flushed_total from the
// start for every action and every batcher.Triggers, and for no other
// trigger (the label values are the dashboards').
func TestTriggerLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "cohortsync_batches_flushed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var action, trigger string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "action":
					action = l.GetValue()
				case "trigger":
					trigger = l.GetValue()
				}
			}
			got[action+"/"+trigger] = true
			if !slices.Contains(batcher.Triggers, batcher.Trigger(trigger)) {
				t.Errorf("batches_flushed_total has trigger %q, which the batcher never gives", trigger)
			}
		}
	}
	for _, a := range []event.Action{event.Add, event.Remove} {
		for _, tr := range batcher.Triggers {
			if !got[string(a)+"/"+string(tr)] {
				t.Errorf("batches_flushed_total{action=%q, trigger=%q} is not exported from the start", a, tr)
			}
		}
	}
}
