package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

func TestMetricsLintClean(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	m.SetBuildInfo("test")
	m.Requests.WithLabelValues("add_members", metrics.Code(200)).Inc()
	m.CommittedOffset.WithLabelValues("t", "0").Set(1)
	m.Lag.WithLabelValues("t", "0").Set(1)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "cohort_id", "uid", "cohort", "member":
					t.Errorf("%s carries a high-cardinality label %q", mf.GetName(), l.GetName())
				}
			}
		}
	}
}

// TestUnknownWorkspaceLabelPreCreated (issue 21): the dead-letter reason
// unknown_workspace has its series from the start, at 0, like every other
// reason, so that alerts and dashboards see it before the first one.
func TestUnknownWorkspaceLabelPreCreated(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == "unknown_workspace" && m.GetCounter().GetValue() == 0 {
					found[mf.GetName()] = true
				}
			}
		}
	}
	for _, name := range []string{"cohortsync_events_invalid_total", "cohortsync_events_dead_lettered_total"} {
		if !found[name] {
			t.Errorf("%s{reason=\"unknown_workspace\"} is not pre-created at 0", name)
		}
	}
}
