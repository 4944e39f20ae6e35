package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// OtherWorkspace is the workspace label of a workspace outside the
// registry: the label stays bounded by the registry (the same value as
// sink.OtherWorkspace, issue 21 item 5).
const OtherWorkspace = "other"

// Budget holds the rate-limit metrics by workspace (issue 21 item 3: a
// budget per workspace). The unlabelled rate_limit_wait_seconds_total and
// rate_limit_requests_per_minute keep their meaning (all workspaces'
// wait; the default workspace's rate). 429s by workspace are
// workspace_requests_total{code="429"}; Pauses counts every pause the API
// asked for, a 429 or a spent window alike.
type Budget struct {
	Wait   *prometheus.CounterVec // workspace: seconds spent waiting for a permit or a pause
	RPM    *prometheus.GaugeVec   // workspace: this replica's rate in force, its share less what it lends plus what it borrows
	Pauses *prometheus.CounterVec // workspace: pauses asked by the API (429, x-ratelimit-remaining: 0)

	mu   sync.Mutex
	seen map[string]struct{} // the workspaces RPM has a series of
}

// NewBudget returns the Budget metrics, registered on reg (nil: not
// registered).
func NewBudget(reg prometheus.Registerer) *Budget {
	b := &Budget{
		Wait: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "workspace_rate_limit_wait_seconds_total",
			Help: "Time spent waiting for a rate-limit permit or a pause, by workspace (\"other\" for one outside the registry)."}, []string{"workspace"}),
		RPM: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "workspace_rate_limit_requests_per_minute",
			Help: "This replica's request rate in force for a workspace: its share of the workspace's fleet-wide budget, less what it lends, plus what it borrows."}, []string{"workspace"}),
		Pauses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "workspace_rate_limit_pauses_total",
			Help: "Pauses of a workspace's sending asked by the API (a 429, or x-ratelimit-remaining: 0), by workspace."}, []string{"workspace"}),
		seen: map[string]struct{}{},
	}
	if reg != nil {
		reg.MustRegister(b.Wait, b.RPM, b.Pauses)
	}
	return b
}

// SetRPM sets workspace ws's rate.
func (b *Budget) SetRPM(ws string, rpm float64) {
	b.mu.Lock()
	b.seen[ws] = struct{}{}
	b.mu.Unlock()
	b.RPM.WithLabelValues(ws).Set(rpm)
}

// Forget deletes the rate of every workspace keep does not keep (one that
// left the registry), so that the series stay bounded by the registry.
func (b *Budget) Forget(keep func(ws string) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ws := range b.seen {
		if !keep(ws) {
			b.RPM.DeleteLabelValues(ws)
			delete(b.seen, ws)
		}
	}
}
