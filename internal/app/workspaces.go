package app

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/workspace"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// This file is the worker's side of the workspace registry
// (MOENGAGE_WORKSPACES_DIR, issue 21): opening it, what it serves, the
// targets it gives the sink, the budgets it gives the Fleets (each
// workspace its own: its .rate_limit_rpm, else RATE_LIMIT_RPM), its
// metrics.

// registryTarget is where and how a workspace's requests go, in plain types
// (the sink's Target is made from it): the Basic-auth user and MOE-APPKEY,
// the base URL and the current key.
type registryTarget struct {
	ID      string
	BaseURL string
	Key     func() (string, error)
}

// workspaces is the registry as the worker uses it. Without
// MOENGAGE_WORKSPACES_DIR reg is nil and only the default is served.
type workspaces struct {
	reg *workspace.Registry
	// def is the default workspace (MOENGAGE_WORKSPACE_ID), "" for none.
	def string
	// defKey is the default's key when MOENGAGE_DATA_API_KEY sets it (then
	// the registry's entry of the same ID is not used); nil: the registry's.
	defKey func() (string, error)
	// defURL is the default's base URL when defKey is set (MOENGAGE_BASE_URL
	// or MOENGAGE_DC's).
	defURL string
	// override is MOENGAGE_BASE_URL when it overrides every data center
	// ("": each workspace's data center; config.BaseURLOverride).
	override string
	// budget is RATE_LIMIT_RPM: the default workspace's budget when the
	// registry does not name it.
	budget float64
	log    *slog.Logger
	// targetsChanged, when set, is called after each registry change
	// (added, removed, key rotated, data center or budget changed): the
	// newSink points it at sink.Client.TargetsChanged. Registry.Run's
	// goroutine calls it, never concurrently.
	targetsChanged func()
	// budgetsChanged, when set, is called after each registry change too:
	// newFleet points it at ratelimit.Fleets.Sync.
	budgetsChanged func()
}

// openWorkspaces opens the registry when MOENGAGE_WORKSPACES_DIR is set (a
// directory that cannot be listed fails the start) and registers the
// registry's gauges on reg. cfg is validated.
func openWorkspaces(cfg config.Config, log *slog.Logger, reg prometheus.Registerer) (*workspaces, error) {
	ws := &workspaces{def: cfg.MoEngageWorkspaceID, override: cfg.BaseURLOverride(),
		budget: cfg.RateLimitRPM, log: log}
	if key := cfg.MoEngageDataAPIKey.Reveal(); key != "" {
		ws.defKey, ws.defURL = staticKey(key, cfg.MoEngageDataAPIKeyFile), cfg.MoEngageBaseURL
	}
	if cfg.MoEngageWorkspacesDir != "" {
		r, err := workspace.Open(workspace.Options{Dir: cfg.MoEngageWorkspacesDir, DefaultDC: cfg.MoEngageDC,
			DefaultRPM: cfg.RateLimitRPM, ValidDC: workspace.OneOf(config.DataCenters), Logger: log,
			OnChange: ws.changed})
		if err != nil {
			return nil, fmt.Errorf("MOENGAGE_WORKSPACES_DIR: %w", err)
		}
		ws.reg = r
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cohortsync_workspaces",
			Help: "Workspaces this worker sends to: the default and those of the registry it serves (MOENGAGE_WORKSPACES_DIR)."},
			func() float64 { return float64(ws.count()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cohortsync_workspace_registry_problems",
			Help: "Files of the workspace registry (or the directory itself) that cannot be used; each is logged with its reason."},
			func() float64 { return float64(ws.problems()) }))
	return ws, nil
}

// staticKey is the default's key from MOENGAGE_DATA_API_KEY: re-read from
// MOENGAGE_DATA_API_KEY_FILE when there is one, else the value itself.
func staticKey(key, file string) func() (string, error) {
	if file != "" {
		return config.SecretFileFunc(file)
	}
	return func() (string, error) { return key, nil }
}

// registryTargets returns the target of workspace id: the default's from
// MOENGAGE_WORKSPACE_ID / MOENGAGE_DATA_API_KEY when that key is set, else
// the registry's (base URL MOENGAGE_BASE_URL when set, else its data
// center's; key the registry's KeyFunc). It fails for a workspace the worker
// does not serve: not in the registry, or with no data center.
func (ws *workspaces) registryTargets(id string) (registryTarget, error) {
	if id == ws.def && ws.defKey != nil {
		return registryTarget{ID: id, BaseURL: ws.defURL, Key: ws.defKey}, nil
	}
	w, err := ws.served(id)
	if err != nil {
		return registryTarget{}, err
	}
	url := ws.override
	if url == "" {
		url = config.BaseURLFor(w.DC)
	}
	return registryTarget{ID: id, BaseURL: url, Key: ws.reg.KeyFunc(id)}, nil
}

// served returns registry workspace id when the worker sends to it, else
// why not: not in the registry, no data center. Every budget is honoured:
// each workspace has its own (ratelimit.Fleets).
// It builds nothing: the consumer asks it for every event naming a
// workspace (serves).
func (ws *workspaces) served(id string) (workspace.Workspace, error) {
	if ws.reg == nil {
		return workspace.Workspace{}, fmt.Errorf("workspace %s is not served: there is no MOENGAGE_WORKSPACES_DIR", id)
	}
	w, ok := ws.reg.Lookup(id)
	switch {
	case !ok:
		return w, fmt.Errorf("workspace %s is not in MOENGAGE_WORKSPACES_DIR (no %s.key)", id, id)
	case ws.override == "" && w.DC == "": // config requires MOENGAGE_DC without MOENGAGE_BASE_URL
		return w, fmt.Errorf("workspace %s has no data center (%s.dc, MOENGAGE_DC)", id, id)
	}
	return w, nil
}

// ids lists the workspaces served: the registry's, and the default.
func (ws *workspaces) ids() []string {
	var out []string
	if ws.reg != nil {
		out = ws.reg.IDs()
	}
	if ws.def != "" && !slices.Contains(out, ws.def) {
		out = append(out, ws.def)
	}
	return out
}

// budgetOf is ratelimit.FleetsConfig.BudgetOf: workspace id's budget (its
// .rate_limit_rpm, which defaults to RATE_LIMIT_RPM), and whether the
// worker serves it; the default workspace without a registry entry has
// RATE_LIMIT_RPM.
func (ws *workspaces) budgetOf(id string) (float64, bool) {
	if ws.reg != nil {
		if w, ok := ws.reg.Lookup(id); ok {
			return w.RateLimitRPM, true
		}
	}
	return ws.budget, id == ws.def && (ws.defKey != nil || ws.reg == nil)
}

// serves reports whether the worker sends to workspace id (the consumer's
// accept rule for events naming a workspace other than the default).
func (ws *workspaces) serves(id string) bool {
	if id == ws.def && ws.defKey != nil {
		return true
	}
	_, err := ws.served(id)
	return err == nil
}

// consumerServes is consumer.Config.Serves: nil (the default only)
// without a registry.
func (ws *workspaces) consumerServes() func(string) bool {
	if ws.reg == nil {
		return nil
	}
	return ws.serves
}

// sinkTargets is sink.Config.Targets: nil (the default only, through
// sink.Config's own key and URL) without a registry.
func (ws *workspaces) sinkTargets() func(string) (sink.Target, error) {
	if ws.reg == nil {
		return nil
	}
	return func(id string) (sink.Target, error) {
		t, err := ws.registryTargets(id)
		if err != nil {
			return sink.Target{}, fmt.Errorf("%w: %w", sink.ErrUnknownWorkspace, err)
		}
		return sink.Target{ID: t.ID, BaseURL: t.BaseURL, Key: t.Key}, nil
	}
}

// count is the number of workspaces the consumer accepts.
func (ws *workspaces) count() int {
	n := 0
	if ws.def != "" {
		n = 1 // accepted by the consumer whatever the registry says
	}
	if ws.consumerServes() == nil {
		return n
	}
	for _, id := range ws.reg.IDs() {
		if id != ws.def && ws.serves(id) {
			n++
		}
	}
	return n
}

// problems counts the registry's outstanding problems.
func (ws *workspaces) problems() int {
	if ws.reg == nil {
		return 0
	}
	return len(ws.reg.Problems())
}

// changed is the registry's OnChange: it tells the budgets (a workspace
// removed, or its budget changed) and the sink.
func (ws *workspaces) changed(workspace.Update) {
	if ws.budgetsChanged != nil {
		ws.budgetsChanged()
	}
	if ws.targetsChanged != nil {
		ws.targetsChanged()
	}
}

// checkDefault checks at start that the default workspace, when there is
// one, has a key: MOENGAGE_DATA_API_KEY, or the registry's.
func (ws *workspaces) checkDefault() error {
	if ws.def == "" || ws.defKey != nil {
		return nil
	}
	if _, err := ws.registryTargets(ws.def); err != nil {
		return fmt.Errorf("MOENGAGE_WORKSPACE_ID %s: no MOENGAGE_DATA_API_KEY, and the registry cannot give its key: %w", ws.def, err)
	}
	return nil
}

// logStage says at start when MOENGAGE_DATA_API_KEY shadows the registry's
// key of the default.
func (ws *workspaces) logStage() {
	if _, ok := ws.reg.Lookup(ws.def); ok && ws.defKey != nil {
		ws.log.Warn("MOENGAGE_DATA_API_KEY is set: the default workspace's key file in MOENGAGE_WORKSPACES_DIR is not used",
			"workspace", ws.def, "file", ws.def+".key")
	}
}

// defaultKey is the default workspace's key function for the sink
// (sink.Config.APIKeyFunc): MOENGAGE_DATA_API_KEY_FILE's, or the
// registry's when MOENGAGE_DATA_API_KEY is not set; nil: a fixed key.
func (ws *workspaces) defaultKey(file string) func() (string, error) {
	switch {
	case ws.defKey == nil && ws.reg != nil:
		return ws.reg.KeyFunc(ws.def)
	case file != "":
		return config.SecretFileFunc(file)
	}
	return nil
}
