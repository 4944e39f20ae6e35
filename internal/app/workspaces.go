package app

import (
	"fmt"
	"log/slog"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/workspace"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// This file is the worker's side of the workspace registry
// (MOENGAGE_WORKSPACES_DIR, issue 21 stage 1): opening it, what it serves,
// the targets it gives the sink, its metrics. Stage 1 builds no parking and
// no per-workspace budgets: the one RATE_LIMIT_RPM budget is shared by all
// workspaces together.

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
	// budget is RATE_LIMIT_RPM, the one budget every workspace shares.
	budget float64
	log    *slog.Logger
	// targetsChanged, when set, is called after each registry change
	// (added, removed, key rotated, data center or budget changed): the
	// newSink points it at sink.Client.TargetsChanged. Registry.Run's
	// goroutine calls it, never concurrently.
	targetsChanged func()
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
		for _, id := range r.IDs() { // Open announced the first generation before ws.reg was set
			if w, ok := r.Lookup(id); ok && id != ws.def {
				if err := ws.honoured(w); err != nil {
					log.Error("workspace not served", "workspace", id, "err", err)
				}
			}
		}
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
// does not serve: not in the registry, or whose budget it cannot honour.
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
// why not: not in the registry, a budget it cannot honour, no data center.
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
	return w, ws.honoured(w)
}

// honoured reports why w's budget cannot be kept, or nil. Per-workspace
// budgets are not built: RATE_LIMIT_RPM is shared by every workspace
// together, so a workspace may be sent up to all of it. One whose own
// budget is lower is not served (its changes are dead-lettered, never sent
// over its budget). RATE_LIMIT_RPM 0 (no client-side limit) honours only
// workspaces without a budget of their own.
func (ws *workspaces) honoured(w workspace.Workspace) error {
	if config.SharedBudgetHonoured(w.RateLimitRPM, ws.budget) {
		return nil
	}
	return fmt.Errorf("workspace %s is not served: its budget %s.rate_limit_rpm (%s/min) is below RATE_LIMIT_RPM (%s/min), "+
		"which every workspace shares until per-workspace budgets are built; lower RATE_LIMIT_RPM to %s or remove the file",
		w.ID, w.ID, rpmText(w.RateLimitRPM), rpmText(ws.budget), rpmText(w.RateLimitRPM))
}

func rpmText(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

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

// changed is the registry's OnChange: it logs the workspaces that changed
// and are not served (their budget), then tells the sink.
func (ws *workspaces) changed(u workspace.Update) {
	for _, c := range u.Changes {
		if c.What&workspace.Removed != 0 || ws.reg == nil { // nil: the first generation, from Open
			continue
		}
		if w, ok := ws.reg.Lookup(c.ID); ok {
			if err := ws.honoured(w); err != nil {
				ws.log.Error("workspace not served", "workspace", c.ID, "err", err)
			}
		}
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
