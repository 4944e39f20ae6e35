package preflight

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/workspace"
)

// wsTarget is a registry workspace the worker would send to, other than
// the default: what its credential probe needs.
type wsTarget struct {
	id, baseURL, key string
}

// checkWorkspaces checks the registry (MOENGAGE_WORKSPACES_DIR) as the
// worker reads it at start (internal/app, workspaces.go): the directory
// must list; each problem (an unusable file, named) fails; so does a
// workspace whose budget the shared RATE_LIMIT_RPM cannot honour, and a
// default workspace the worker could not send to. It returns the results
// (check config.workspaces), the workspaces to probe, and the default's
// target when its key comes from the registry (nil otherwise). It reads files only.
func checkWorkspaces(cfg config.Config) ([]Result, []wsTarget, *wsTarget) {
	fail := func(format string, a ...any) Result {
		return Result{Check: "config.workspaces", Status: Fail, Detail: fmt.Sprintf(format, a...)}
	}
	reg, err := workspace.Open(workspace.Options{Dir: cfg.MoEngageWorkspacesDir, DefaultDC: cfg.MoEngageDC,
		DefaultRPM: cfg.RateLimitRPM, ValidDC: workspace.OneOf(config.DataCenters), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return []Result{fail("MOENGAGE_WORKSPACES_DIR: %s", oneLine(err.Error(), 300))}, nil, nil
	}
	var out []Result
	for _, p := range reg.Problems() {
		out = append(out, fail("%s", oneLine(p.Err.Error(), 300)))
	}
	def, override := cfg.MoEngageWorkspaceID, cfg.BaseURLOverride()
	var targets []wsTarget
	for _, id := range reg.IDs() {
		w, _ := reg.Lookup(id)
		url := override
		if url == "" {
			url = config.BaseURLFor(w.DC)
		}
		if id != def {
			targets = append(targets, wsTarget{id: id, baseURL: url, key: w.Key()})
		}
	}
	defKey, res := checkDefaultWorkspace(cfg, reg)
	if res != nil {
		out = append(out, *res)
	}
	if len(out) == 0 {
		out = append(out, Result{Check: "config.workspaces", Status: OK, Detail: fmt.Sprintf("MOENGAGE_WORKSPACES_DIR %s: %d workspaces (%s), every file usable",
			cfg.MoEngageWorkspacesDir, reg.Snapshot().Len(), idList(reg.IDs()))})
	}
	return out, targets, defKey
}

// checkDefaultWorkspace checks that the worker can send to the default
// workspace, when there is one, with the registry as it is (app:
// workspaces.checkDefault): without MOENGAGE_DATA_API_KEY the registry
// holds its key. It returns the
// default's target when the registry gives its key.
func checkDefaultWorkspace(cfg config.Config, reg *workspace.Registry) (*wsTarget, *Result) {
	fail := func(format string, a ...any) (*wsTarget, *Result) {
		return nil, &Result{Check: "config.workspaces", Status: Fail, Detail: fmt.Sprintf(format, a...)}
	}
	def := cfg.MoEngageWorkspaceID
	if def == "" || cfg.MoEngageDataAPIKey.Reveal() != "" {
		return nil, nil
	}
	w, ok := reg.Lookup(def)
	if !ok {
		return fail("MOENGAGE_WORKSPACE_ID %s: no MOENGAGE_DATA_API_KEY and no usable %s.key in MOENGAGE_WORKSPACES_DIR", def, def)
	}
	url := cfg.BaseURLOverride()
	if url == "" {
		url = config.BaseURLFor(w.DC) // the worker sends to it in its own data center
	}
	return &wsTarget{id: def, baseURL: url, key: w.Key()}, nil
}

func idList(ids []string) string {
	if len(ids) > 10 {
		return strings.Join(ids[:10], ", ") + fmt.Sprintf(" and %d more", len(ids)-10)
	}
	return strings.Join(ids, ", ")
}

// checkWorkspaceAPIs runs the API checks of each registry workspace, one
// after the other: the same checks and the one probe the default gets
// (checkAPI), with the workspace's base URL and key; each result's check
// is suffixed with [workspace].
func checkWorkspaceAPIs(ctx context.Context, cfg config.Config, opts Options, targets []wsTarget) []Result {
	var out []Result
	for _, t := range targets {
		c := cfg
		c.MoEngageWorkspaceID, c.MoEngageDataAPIKey, c.MoEngageBaseURL = t.id, config.NewSecret(t.key), t.baseURL
		o := opts
		o.keyFrom = fmt.Sprintf("%s.key in MOENGAGE_WORKSPACES_DIR (the Data API key of workspace %s) and its data center (%s.dc, MOENGAGE_DC)", t.id, t.id, t.id)
		for _, r := range checkAPI(ctx, c, o) {
			r.Check += "[" + t.id + "]"
			out = append(out, r)
		}
	}
	return out
}
