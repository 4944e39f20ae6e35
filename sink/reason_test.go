package sink_test

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// labelSeries returns, per value of label, the value of the series of the
// metric name that metrics.New exports from the start.
func labelSeries(t *testing.T, name, label string) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		got := map[string]float64{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					got[l.GetValue()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
				}
			}
		}
		return got
	}
	t.Fatalf("%s is not registered", name)
	return nil
}

// checkLabels: the series of name exist from the start, at 0, one per
// value of want and no other.
func checkLabels[T ~string](t *testing.T, name string, want []T) {
	t.Helper()
	got := labelSeries(t, name, "reason")
	for _, r := range want {
		if v, ok := got[string(r)]; !ok || v != 0 {
			t.Errorf("%s{reason=%q} = %v (present %v), want 0", name, r, v, ok)
		}
	}
	var extra []string
	for r := range got {
		if !slices.Contains(want, T(r)) {
			extra = append(extra, r)
		}
	}
	if len(extra) > 0 {
		t.Errorf("%s has reasons %q that the sink never uses", name, extra)
	}
}

// TestLineStoppedRegistered: cohortsync_line_stopped and
// cohortsync_line_stopped_probes_total are exported from the start, one
// series per sink.LineStopReasons, at 0.
func TestLineStoppedRegistered(t *testing.T) {
	checkLabels(t, "cohortsync_line_stopped", sink.LineStopReasons)
	checkLabels(t, "cohortsync_line_stopped_probes_total", sink.LineStopReasons)
}

// TestRetriesRegistered: cohortsync_retries_total is exported from the
// start, one series per sink.RetryReasons, at 0.
func TestRetriesRegistered(t *testing.T) {
	checkLabels(t, "cohortsync_retries_total", sink.RetryReasons)
}
