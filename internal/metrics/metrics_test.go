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
