package deploy_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/cohortsync/cohortsync-worker/sink"
)

var update = flag.Bool("update", false, "rewrite monitoring/operator/prometheusrule.yaml from monitoring/alerts.yaml")

const (
	alertsFile         = "monitoring/alerts.yaml"
	alertsTestFile     = "monitoring/alerts_test.yaml"
	prometheusRuleFile = "monitoring/operator/prometheusrule.yaml"
	alertmanagerFile   = "monitoring/alertmanager.yaml"
	runbookPrefix      = "https://github.com/cohortsync/cohortsync-worker/blob/main/README.md#"
)

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func alertRules(t *testing.T) []alertRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, alertsFile, &f)
	var out []alertRule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) < 5 {
		t.Fatalf("%d alert rules", len(out))
	}
	return out
}

// prometheusRule renders the PrometheusRule: alerts.yaml's groups (with
// their comments) under spec.
func prometheusRule(t *testing.T) []byte {
	t.Helper()
	src, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	_, groups, ok := bytes.Cut(src, []byte("\ngroups:\n"))
	if !ok {
		t.Fatalf("%s has no top-level groups", alertsFile)
	}
	var b bytes.Buffer
	b.WriteString(`# GENERATED from ../alerts.yaml: do not edit. After editing alerts.yaml, run
#   go test ./deploy -run TestPrometheusRuleMatchesAlerts -update
# (the test fails while the two differ).
#
# The alert rules for the Prometheus Operator. Your Prometheus must select it
# (spec.ruleSelector / ruleNamespaceSelector; kube-prometheus-stack selects
# only its release label by default: add it in your overlay's labels). The
# rules aggregate by (namespace, job), so one copy covers every deployment;
# the copies that several namespaces apply are identical and fire identical
# alerts, which Alertmanager merges.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: cohortsync-worker
  labels:
    app.kubernetes.io/name: cohortsync-worker
spec:
  groups:
`)
	for line := range strings.Lines(string(groups)) {
		if strings.TrimSpace(line) == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString("  " + line)
	}
	return b.Bytes()
}

// TestPrometheusRuleMatchesAlerts: operator/prometheusrule.yaml is
// alerts.yaml's rules, byte for byte as generated, and the same groups when
// both are parsed.
func TestPrometheusRuleMatchesAlerts(t *testing.T) {
	want := prometheusRule(t)
	if *update {
		if err := os.WriteFile(prometheusRuleFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(prometheusRuleFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what %s generates; run\n  go test ./deploy -run TestPrometheusRuleMatchesAlerts -update", prometheusRuleFile, alertsFile)
	}
	var plain struct {
		Groups any `yaml:"groups"`
	}
	var cr struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Spec       struct {
			Groups any `yaml:"groups"`
		} `yaml:"spec"`
	}
	readYAML(t, alertsFile, &plain)
	readYAML(t, prometheusRuleFile, &cr)
	if cr.APIVersion != "monitoring.coreos.com/v1" || cr.Kind != "PrometheusRule" {
		t.Errorf("%s: %s %s", prometheusRuleFile, cr.APIVersion, cr.Kind)
	}
	if plain.Groups == nil || !reflect.DeepEqual(plain.Groups, cr.Spec.Groups) {
		t.Errorf("%s: spec.groups differ from the groups of %s", prometheusRuleFile, alertsFile)
	}
}

// githubAnchors are the anchors GitHub gives the headings of a Markdown file.
func githubAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out, seen := map[string]bool{}, map[string]int{}
	punct := regexp.MustCompile(`[^\p{L}\p{N}\- _]`)
	inFence := false
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		h, ok := strings.CutPrefix(line, "#")
		if inFence || !ok {
			continue
		}
		h = strings.TrimSpace(strings.TrimLeft(h, "#"))
		slug := strings.ReplaceAll(punct.ReplaceAllString(strings.ToLower(h), ""), " ", "-")
		if n := seen[slug]; n > 0 {
			seen[slug]++
			slug = fmt.Sprintf("%s-%d", slug, n)
		} else {
			seen[slug] = 1
		}
		out[slug] = true
	}
	return out
}

// TestRunbookAnchorsExist: every alert has a summary and a runbook_url to
// its own section of the README (a heading named after the alert).
func TestRunbookAnchorsExist(t *testing.T) {
	anchors := githubAnchors(t, "../README.md")
	for _, r := range alertRules(t) {
		url := r.Annotations["runbook_url"]
		anchor, ok := strings.CutPrefix(url, runbookPrefix)
		if !ok {
			t.Errorf("%s: runbook_url %q does not start with %s", r.Alert, url, runbookPrefix)
			continue
		}
		if anchor != strings.ToLower(r.Alert) {
			t.Errorf("%s: runbook_url points to #%s, not to its own section #%s", r.Alert, anchor, strings.ToLower(r.Alert))
		}
		if !anchors[anchor] {
			t.Errorf("%s: README.md has no heading with the anchor #%s", r.Alert, anchor)
		}
		if r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
			t.Errorf("%s: no summary or severity", r.Alert)
		}
	}
}

type promtoolAlert struct {
	Labels      map[string]string `yaml:"exp_labels"`
	Annotations map[string]string `yaml:"exp_annotations"`
}

type promtoolCase struct {
	Name  string `yaml:"name"`
	Tests []struct {
		EvalTime  string          `yaml:"eval_time"`
		AlertName string          `yaml:"alertname"`
		Alerts    []promtoolAlert `yaml:"exp_alerts"`
	} `yaml:"alert_rule_test"`
}

func promtoolCases(t *testing.T) []promtoolCase {
	t.Helper()
	var f struct {
		Tests []promtoolCase `yaml:"tests"`
	}
	readYAML(t, alertsTestFile, &f)
	return f.Tests
}

// perJob is the label set every alert is aggregated by, or, for an alert
// from kube-state-metrics (no job of the worker's), the deployment's.
func perJob(r alertRule) []string {
	if strings.Contains(r.Expr, "kube_") {
		return []string{"namespace", "deployment"}
	}
	return []string{"namespace", "job"}
}

// TestEveryAlertHasPerJobTests: alerts_test.yaml has, for every alert, a
// case where it fires with its deployment's labels asserted and one where
// it does not fire.
func TestEveryAlertHasPerJobTests(t *testing.T) {
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, c := range promtoolCases(t) {
		for _, tc := range c.Tests {
			if len(tc.Alerts) == 0 {
				quiet[tc.AlertName] = true
			}
			for _, a := range tc.Alerts {
				if a.Labels["namespace"] != "" && (a.Labels["job"] != "" || a.Labels["deployment"] != "") {
					fires[tc.AlertName] = true
				}
			}
		}
	}
	for _, r := range alertRules(t) {
		if !fires[r.Alert] {
			t.Errorf("%s: no test case where it fires with a namespace and job (or deployment) asserted", r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("%s: no test case where it does not fire", r.Alert)
		}
		for _, l := range perJob(r) {
			if l != "deployment" && !regexp.MustCompile(`by \([^)]*\b`+l+`\b`).MatchString(r.Expr) {
				t.Errorf("%s: not aggregated by %s: %s", r.Alert, l, r.Expr)
			}
		}
	}
}

// TestAlertsCoverStopConditions: the conditions that no longer make a pod
// unready (a stopped line of any reason, failing dead letters, no group
// membership) each have an alert on their metric.
func TestAlertsCoverStopConditions(t *testing.T) {
	var exprs []string
	for _, r := range alertRules(t) {
		exprs = append(exprs, r.Expr)
	}
	all := strings.Join(exprs, "\n")
	has := func(sel string) bool { return strings.Contains(all, sel) }
	for _, reason := range sink.LineStopReasons {
		switch reason {
		case sink.LineStopAuth, sink.LineStopConfig:
			// cohortsync_auth_failing is 1 exactly while one of these is.
			if !has("(cohortsync_auth_failing)") && !has(fmt.Sprintf(`cohortsync_line_stopped{reason="%s"}`, reason)) {
				t.Errorf("no alert on a line stopped for %s", reason)
			}
		default:
			if !has(fmt.Sprintf(`cohortsync_line_stopped{reason="%s"}`, reason)) {
				t.Errorf("no alert on a line stopped for %s", reason)
			}
		}
	}
	if !has("(cohortsync_dead_letter_failing)") {
		t.Error("no alert on cohortsync_dead_letter_failing")
	}
	// Joining counts as ready: a deployment that cannot join the group
	// (brokers unreachable) is seen by its membership proofs.
	if !has("(cohortsync_lease_valid)") {
		t.Error("no alert on cohortsync_lease_valid")
	}
}

type inhibitRule struct {
	Source []string `yaml:"source_matchers"`
	Target []string `yaml:"target_matchers"`
	Equal  []string `yaml:"equal"`
}

var matcherRE = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*$`)

// matches applies Alertmanager matchers (name op "value"; regular
// expressions anchored at both ends) to a label set.
func matches(t *testing.T, matchers []string, labels map[string]string) bool {
	t.Helper()
	for _, m := range matchers {
		p := matcherRE.FindStringSubmatch(m)
		if p == nil {
			t.Fatalf("%s: matcher %q is not of the form name=\"value\"", alertmanagerFile, m)
		}
		v := labels[p[1]]
		var ok bool
		switch p[2] {
		case "=":
			ok = v == p[3]
		case "!=":
			ok = v != p[3]
		default:
			ok = regexp.MustCompile("^(?:"+p[3]+")$").MatchString(v) == (p[2] == "=~")
		}
		if !ok {
			return false
		}
	}
	return true
}

// inhibited applies Alertmanager's inhibition: an alert is muted when a
// source alert fires whose equal labels have the same values (both absent
// counts as equal), and the source is not the alert itself.
func inhibited(t *testing.T, rules []inhibitRule, firing []map[string]string, a map[string]string) bool {
	for _, r := range rules {
		if !matches(t, r.Target, a) {
			continue
		}
		for _, s := range firing {
			if reflect.DeepEqual(s, a) || !matches(t, r.Source, s) {
				continue
			}
			if !slices.ContainsFunc(r.Equal, func(l string) bool { return s[l] != a[l] }) {
				return true
			}
		}
	}
	return false
}

// TestInhibitionPagesOnce: in alerts_test.yaml's "a revoked key" case
// (checked by promtool: it lists what every alert does at one time), prod
// fires several alerts; after alertmanager.yaml's inhibition one remains,
// CohortsyncAuthFailing. And every alert an inhibition rule names exists.
func TestInhibitionPagesOnce(t *testing.T) {
	var am struct {
		Inhibit []inhibitRule `yaml:"inhibit_rules"`
	}
	readYAML(t, alertmanagerFile, &am)
	if len(am.Inhibit) == 0 {
		t.Fatalf("%s has no inhibit_rules", alertmanagerFile)
	}
	names := map[string]bool{}
	for _, r := range alertRules(t) {
		names[r.Alert] = true
	}
	nameRE := regexp.MustCompile(`Cohortsync[A-Za-z]+`)
	for _, r := range am.Inhibit {
		for _, n := range nameRE.FindAllString(strings.Join(append(r.Source, r.Target...), " "), -1) {
			if !names[n] {
				t.Errorf("%s names %s, which alerts.yaml does not define", alertmanagerFile, n)
			}
		}
		if len(r.Equal) == 0 {
			t.Errorf("%s: an inhibition without equal labels mutes every deployment's alerts: %v", alertmanagerFile, r)
		}
	}
	firing := revokedKeyAlerts(t)
	if len(firing) < 3 {
		t.Errorf("the revoked-key case fires %d alerts; the test is meant to show several reduced to one", len(firing))
	}
	firing = append(firing, otherDeploymentAlert)
	var pages []string
	for _, a := range firing {
		if !inhibited(t, am.Inhibit, firing, a) {
			pages = append(pages, a["alertname"]+"{"+a["namespace"]+"/"+a["job"]+"}")
		}
	}
	slices.Sort(pages)
	if !slices.Equal(pages, revokedKeyPages) {
		t.Errorf("a revoked key notifies %v, want %v (of %d firing)", pages, revokedKeyPages, len(firing))
	}
}

// otherDeploymentAlert fires in staging while prod's key is revoked: no
// inhibition of prod's may mute it.
var otherDeploymentAlert = map[string]string{"alertname": "CohortsyncLagGrowing", "severity": "warning",
	"namespace": "staging", "job": "staging/cohortsync-worker"}

// revokedKeyPages are the alerts left after inhibition (sorted): prod's
// revoked key once, and staging's own alert.
var revokedKeyPages = []string{"CohortsyncAuthFailing{prod/prod/cohortsync-worker}",
	"CohortsyncLagGrowing{staging/staging/cohortsync-worker}"}

// revokedKeyAlerts are the alerts (label sets, alertname included) that
// alerts_test.yaml's "a revoked key: what fires" case expects at its one
// evaluation time, where it lists what every alert does.
func revokedKeyAlerts(t *testing.T) []map[string]string {
	t.Helper()
	cases := promtoolCases(t)
	i := slices.IndexFunc(cases, func(c promtoolCase) bool { return c.Name == "a revoked key: what fires" })
	if i < 0 {
		t.Fatalf("%s has no case \"a revoked key: what fires\"", alertsTestFile)
	}
	c := cases[i]
	listed := map[string]bool{}
	var firing []map[string]string
	for _, tc := range c.Tests {
		if tc.EvalTime != c.Tests[0].EvalTime {
			t.Fatalf("%s: the revoked-key case evaluates at %s and %s", alertsTestFile, c.Tests[0].EvalTime, tc.EvalTime)
		}
		listed[tc.AlertName] = true
		for _, a := range tc.Alerts {
			l := map[string]string{"alertname": tc.AlertName}
			for k, v := range a.Labels {
				l[k] = v
			}
			firing = append(firing, l)
		}
	}
	for _, r := range alertRules(t) {
		if !listed[r.Alert] {
			t.Errorf("the revoked-key case does not say what %s does", r.Alert)
		}
	}
	return firing
}

// TestPodMonitorMatchesDeployment: the PodMonitor selects the pods of the
// base's Deployment (its labels, with the kustomization's) and scrapes a
// port the worker's container declares.
func TestPodMonitorMatchesDeployment(t *testing.T) {
	var pm struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Endpoints []struct {
				Port string `yaml:"port"`
				Path string `yaml:"path"`
			} `yaml:"podMetricsEndpoints"`
		} `yaml:"spec"`
	}
	readYAML(t, "monitoring/operator/podmonitor.yaml", &pm)
	var kust struct {
		Labels []struct {
			Pairs map[string]string `yaml:"pairs"`
		} `yaml:"labels"`
	}
	readYAML(t, "kubernetes/base/kustomization.yaml", &kust)
	var dep struct {
		Spec struct {
			Template struct {
				Metadata struct {
					Labels map[string]string `yaml:"labels"`
				} `yaml:"metadata"`
				Spec struct {
					Containers []struct {
						Name  string `yaml:"name"`
						Ports []struct {
							Name string `yaml:"name"`
						} `yaml:"ports"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	readYAML(t, "kubernetes/base/deployment.yaml", &dep)
	podLabels := map[string]string{}
	for k, v := range dep.Spec.Template.Metadata.Labels {
		podLabels[k] = v
	}
	for _, l := range kust.Labels {
		for k, v := range l.Pairs {
			podLabels[k] = v
		}
	}
	if pm.Kind != "PodMonitor" || len(pm.Spec.Selector.MatchLabels) == 0 || len(pm.Spec.Endpoints) == 0 {
		t.Fatalf("podmonitor.yaml: %+v", pm)
	}
	for k, v := range pm.Spec.Selector.MatchLabels {
		if podLabels[k] != v {
			t.Errorf("the PodMonitor selects %s=%s; the worker's pods have %s=%q", k, v, k, podLabels[k])
		}
	}
	var ports []string
	for _, c := range dep.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			ports = append(ports, p.Name)
		}
	}
	for _, e := range pm.Spec.Endpoints {
		if !slices.Contains(ports, e.Port) || e.Path != "/metrics" {
			t.Errorf("the PodMonitor scrapes port %q path %q; the worker's containers declare ports %v and serve /metrics", e.Port, e.Path, ports)
		}
	}
}
