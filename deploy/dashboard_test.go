package deploy_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

type dashboardTarget struct {
	Expr       string         `json:"expr"`
	Datasource map[string]any `json:"datasource"`
}

type dashboardPanel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource map[string]any           `json:"datasource"`
	GridPos    struct{ X, Y, W, H int } `json:"gridPos"`
	Targets    []dashboardTarget        `json:"targets"`
}

type dashboard struct {
	SchemaVersion int              `json:"schemaVersion"`
	UID           string           `json:"uid"`
	Title         string           `json:"title"`
	Panels        []dashboardPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Query      any    `json:"query"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("monitoring/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("monitoring/dashboard.json: %v", err)
	}
	return d
}

// TestDashboardNamesExportedMetrics: every cohortsync_*, go_* and process_*
// series a panel or a variable queries is one the worker exports (a
// histogram's _bucket, _sum and _count included), and the panels cover what
// operators watch, memory and GC included.
func TestDashboardNamesExportedMetrics(t *testing.T) {
	d := loadDashboard(t)
	known := exportedMetrics(t)
	for m := range runtimeMetrics(t) {
		known[m] = true
	}
	re := regexp.MustCompile(`(?:cohortsync|go|process)_[a-z_]+`)
	exists := func(name string) bool {
		if known[name] {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && known[base] {
				return true
			}
		}
		return false
	}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		exprs = append(exprs, v.Definition)
		if q, ok := v.Query.(map[string]any); ok {
			s, _ := q["query"].(string)
			exprs = append(exprs, s)
		}
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, m := range re.FindAllString(e, -1) {
			used[m] = true
			if !exists(m) {
				t.Errorf("the dashboard queries %s, which the worker does not export", m)
			}
		}
	}
	for _, m := range []string{
		"cohortsync_events_consumed_total", "cohortsync_requests_total", "cohortsync_request_duration_seconds_bucket",
		"cohortsync_batch_members_bucket", "cohortsync_batch_bytes_bucket", "cohortsync_retries_total",
		"cohortsync_events_dead_lettered_total", "cohortsync_pending_members", "cohortsync_in_flight_requests",
		"cohortsync_consumer_lag", "cohortsync_rate_limit_requests_per_minute", "cohortsync_auth_failing",
		"cohortsync_ready", "cohortsync_offset_commits_total", "cohortsync_dead_letter_failing", "cohortsync_build_info",
		"cohortsync_lease_valid",
		// Memory and the garbage collector.
		"process_resident_memory_bytes", "go_memstats_heap_inuse_bytes", "go_gc_gomemlimit_bytes",
		"go_gc_duration_seconds_count", "go_gc_duration_seconds_sum", "go_memstats_alloc_bytes_total",
	} {
		if !used[m] {
			t.Errorf("no panel queries %s", m)
		}
	}
}

// TestDashboardShape: importable (a DS_PROMETHEUS data-source variable
// that every query uses), unique panel ids, no overlapping panels.
func TestDashboardShape(t *testing.T) {
	d := loadDashboard(t)
	if d.SchemaVersion < 36 || d.UID == "" || d.Title == "" {
		t.Errorf("schemaVersion %d, uid %q, title %q", d.SchemaVersion, d.UID, d.Title)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		hasDS = hasDS || (v.Name == "DS_PROMETHEUS" && v.Type == "datasource")
	}
	if !hasDS {
		t.Error("no DS_PROMETHEUS data-source variable")
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	n := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Fatalf("panels %q and %q overlap", other, p.Title)
				}
				taken[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		n++
		if p.Datasource["uid"] != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: data source %v, want ${DS_PROMETHEUS}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource["uid"] != "${DS_PROMETHEUS}" || strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q: query %q on %v", p.Title, tg.Expr, tg.Datasource)
			}
		}
	}
	if n < 13 {
		t.Errorf("%d panels", n)
	}
}

// TestDashboardSelectsDeployments: namespace and deployment (job)
// variables, the second filtered by the first, and every series a panel
// queries scoped by both, so that one deployment of many can be shown.
func TestDashboardSelectsDeployments(t *testing.T) {
	d := loadDashboard(t)
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			vars[v.Name] = v.Definition
		}
	}
	if !strings.Contains(vars["namespace"], "label_values(cohortsync_build_info, namespace)") {
		t.Errorf("namespace variable: %q", vars["namespace"])
	}
	if !strings.Contains(vars["job"], `label_values(cohortsync_build_info{namespace=~"$namespace"}, job)`) {
		t.Errorf("job variable: %q", vars["job"])
	}
	sel := regexp.MustCompile(`\b((?:cohortsync|go|process)_[a-z_]+)(\{[^}]*\})?`)
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range sel.FindAllStringSubmatch(tg.Expr, -1) {
				if !strings.Contains(m[2], `namespace=~"$namespace"`) || !strings.Contains(m[2], `job=~"$job"`) {
					t.Errorf("panel %q: %s%s is not scoped by $namespace and $job", p.Title, m[1], m[2])
				}
			}
		}
	}
}
