package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// TestLineStoppedRegistered: cohortsync_line_stopped is exported from the
// start, one series per reason, at 0.
func TestLineStoppedRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "cohortsync_line_stopped" {
			continue
		}
		got := map[string]float64{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					got[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
		for _, r := range metrics.LineStopReasons {
			if v, ok := got[string(r)]; !ok || v != 0 {
				t.Errorf("line_stopped{reason=%q} = %v (present %v), want 0", r, v, ok)
			}
		}
		if len(got) != len(metrics.LineStopReasons) {
			t.Errorf("line_stopped has %d reasons, want %d", len(got), len(metrics.LineStopReasons))
		}
		return
	}
	t.Fatal("cohortsync_line_stopped is not registered")
}
