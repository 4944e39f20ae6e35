package app

import (
	"context"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// The budgets per workspace as the sink and the metrics see them
// (ratelimit.Fleets; issue 21 item 3).

// wsLimiter is one workspace's Limiter as the sink uses it: its waits and
// the pauses the API asks for are counted under the workspace's label.
type wsLimiter struct {
	l     *ratelimit.Limiter
	label string
	m     *metrics.Budget
}

func (w wsLimiter) Wait(ctx context.Context) error {
	start := time.Now()
	err := w.l.Wait(ctx)
	w.m.Wait.WithLabelValues(w.label).Add(time.Since(start).Seconds())
	return err
}

var _ sink.WithinWaiter = wsLimiter{}

func (w wsLimiter) WaitWithin(ctx context.Context, d time.Duration) (bool, error) {
	start := time.Now()
	got, err := w.l.WaitWithin(ctx, d)
	w.m.Wait.WithLabelValues(w.label).Add(time.Since(start).Seconds())
	return got, err
}

func (w wsLimiter) PauseUntil(t time.Time) {
	w.m.Pauses.WithLabelValues(w.label).Inc()
	w.l.PauseUntil(t)
}

// limiterFor is sink.Config.Limiters: workspace ws's Limiter.
func (w *worker) limiterFor(ws string) sink.Limiter {
	return wsLimiter{l: w.fleet.Limiter(ws), label: w.ws.label(ws), m: w.budgetM}
}

// onRate is ratelimit.FleetsConfig.OnRate: each workspace's rate in force,
// and the default workspace's on the unlabelled gauge as before.
func (w *worker) onRate(ws string, own, borrowed float64) {
	w.budgetM.SetRPM(w.ws.label(ws), own+borrowed)
	if ws == w.ws.def {
		w.m.RateLimitRPM.Set(own + borrowed)
	}
}

// budgetsChanged follows a registry change: the Fleets retire the states
// of workspaces that left it (or changed budget), and their rate series go.
func (w *worker) budgetsChanged() {
	w.fleet.Sync()
	w.budgetM.Forget(func(label string) bool {
		_, in := w.ws.budgetOf(label)
		return in || label == metrics.OtherWorkspace
	})
}

// label is the workspace label of id: id when the worker serves it, else
// metrics.OtherWorkspace (the label stays bounded by the registry).
func (ws *workspaces) label(id string) string {
	if _, in := ws.budgetOf(id); in {
		return id
	}
	return metrics.OtherWorkspace
}
