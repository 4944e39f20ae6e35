package deploy_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.SetBuildInfo("test")
	m.Requests.WithLabelValues("add_members", "200")
	m.CommittedOffset.WithLabelValues("t", "0")
	m.Lag.WithLabelValues("t", "0")
	m.WorkspaceBlocked.WithLabelValues("WS")
	m.WorkspaceStopped.WithLabelValues("WS", "auth")
	m.ParkedChanges.WithLabelValues("WS")
	m.ParkedOldestAge.WithLabelValues("WS")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		out[mf.GetName()] = true
	}
	return out
}

// runtimeMetrics are the Go runtime and process metrics the worker exports
// (metrics.RegisterRuntime).
func runtimeMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics.RegisterRuntime(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		out[mf.GetName()] = true
	}
	return out
}
