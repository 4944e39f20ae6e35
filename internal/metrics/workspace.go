package metrics

import "github.com/prometheus/client_golang/prometheus"

// PerWorkspace holds the sink's metrics by workspace (issue 21 item 5).
// The workspace label is bounded by the registry: a workspace the sink has
// no target for counts as workspace="other" (sink.OtherWorkspace). The
// series without the label (requests_total, retries_total, line_stopped)
// keep their meaning, summed over the workspaces, so that dashboards and
// alerts built on them are unchanged.
type PerWorkspace struct {
	WorkspaceStopped  *prometheus.GaugeVec   // workspace, reason (sink.LineStopReasons)
	WorkspaceBlocked  *prometheus.GaugeVec   // workspace
	WorkspaceRequests *prometheus.CounterVec // workspace, code
	WorkspaceChanges  *prometheus.CounterVec // workspace, outcome (WorkspaceChangeOutcomes)
	WorkspaceRetries  *prometheus.CounterVec // workspace, reason (sink.RetryReasons)
}

// WorkspaceChangeOutcomes are the values of the workspace_changes_total
// outcome label.
var WorkspaceChangeOutcomes = []string{"sent", "accepted", "rejected"}

func newPerWorkspace() PerWorkspace {
	return PerWorkspace{
		WorkspaceStopped: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "workspace_stopped",
			Help: "1 while a workspace's line is stopped, by workspace and reason (as line_stopped; workspace \"other\" for one outside the registry)."}, []string{"workspace", "reason"}),
		WorkspaceBlocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "workspace_blocked",
			Help: "1 while a workspace is blocked: its line is stopped or it fails alone while others flow, so its changes may be parked (workspace \"other\" for one outside the registry)."}, []string{"workspace"}),
		WorkspaceRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "workspace_requests_total",
			Help: "HTTP requests to the Cohort Sync API, by workspace and status code (as requests_total; 0 = no response)."}, []string{"workspace", "code"}),
		WorkspaceChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "workspace_changes_total",
			Help: "Member changes by workspace and outcome: sent (in a request handed to the HTTP client; every attempt counts), accepted (in a 2xx), rejected (by the API, with evidence: dead-lettered)."}, []string{"workspace", "outcome"}),
		WorkspaceRetries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "workspace_retries_total",
			Help: "Attempts repeated after a failure, by workspace and reason (as retries_total)."}, []string{"workspace", "reason"}),
	}
}

func (p PerWorkspace) collectors() []prometheus.Collector {
	return []prometheus.Collector{p.WorkspaceStopped, p.WorkspaceBlocked, p.WorkspaceRequests, p.WorkspaceChanges,
		p.WorkspaceRetries}
}
