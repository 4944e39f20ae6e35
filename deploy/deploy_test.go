// Package deploy holds the deployment manifests; its test checks that they
// parse and that every worker setting they name exists.
package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// documents parses every YAML document of every manifest.
func documents(t *testing.T) map[string][]map[string]any {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".yaml") {
			files = append(files, filepath.ToSlash(path))
		}
		return err
	})
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	out := map[string][]map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out[f] = append(out[f], doc)
		}
	}
	return out
}

// goRuntimeVars are read by the Go runtime, not the worker's configuration.
var goRuntimeVars = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG"}

func knownVar(name string) bool {
	if slices.Contains(goRuntimeVars, name) {
		return true
	}
	return slices.ContainsFunc(config.Vars, func(v config.Var) bool { return v.Env == name })
}

// TestManifestsUseOnlyKnownSettings: every worker variable set in the
// Kubernetes base and the compose file exists in the worker's configuration.
func TestManifestsUseOnlyKnownSettings(t *testing.T) {
	docs := documents(t)
	for _, d := range docs["kubernetes/base/configmap.yaml"] {
		data, _ := d["data"].(map[string]any)
		if len(data) == 0 {
			t.Fatal("configmap has no data")
		}
		for k := range data {
			if !knownVar(k) {
				t.Errorf("configmap sets %s, which the worker does not read", k)
			}
		}
	}
	b, _ := os.ReadFile("kubernetes/base/deployment.yaml")
	for _, m := range regexp.MustCompile(`name: ([A-Z][A-Z0-9_]+)`).FindAllStringSubmatch(string(b), -1) {
		if !knownVar(m[1]) {
			t.Errorf("deployment sets %s, which the worker does not read", m[1])
		}
	}
	for _, d := range docs["compose/compose.yaml"] {
		svcs := d["services"].(map[string]any)
		worker := svcs["worker"].(map[string]any)
		for k := range worker["environment"].(map[string]any) {
			if !knownVar(k) {
				t.Errorf("compose worker sets %s, which the worker does not read", k)
			}
		}
	}
}

// TestDeploymentShape checks the properties operators rely on.
func TestDeploymentShape(t *testing.T) {
	docs := documents(t)
	dep := docs["kubernetes/base/deployment.yaml"][0]
	spec := dep["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	grace := spec["terminationGracePeriodSeconds"].(int)
	cfg := docs["kubernetes/base/configmap.yaml"][0]["data"].(map[string]any)
	c, err := config.Load(nil, func(k string) string {
		if k == "MOENGAGE_DATA_API_KEY" {
			return "x"
		}
		v, _ := cfg[k].(string)
		return v
	}, nil)
	if err != nil {
		t.Fatalf("the ConfigMap is not a valid configuration: %v", err)
	}
	if float64(grace) <= c.ShutdownTimeout.Seconds() {
		t.Errorf("terminationGracePeriodSeconds %d must exceed SHUTDOWN_TIMEOUT %s", grace, c.ShutdownTimeout)
	}
	ctr := spec["containers"].([]any)[0].(map[string]any)
	if ctr["livenessProbe"].(map[string]any)["httpGet"].(map[string]any)["path"] != "/healthz" ||
		ctr["readinessProbe"].(map[string]any)["httpGet"].(map[string]any)["path"] != "/readyz" {
		t.Error("probes must use /healthz and /readyz")
	}
	if _, ok := ctr["resources"].(map[string]any)["requests"]; !ok {
		t.Error("no resource requests")
	}
	env, _ := json.Marshal(ctr["env"])
	if !strings.Contains(string(env), "MOENGAGE_DATA_API_KEY_FILE") || strings.Contains(string(env), `"MOENGAGE_DATA_API_KEY"`) {
		t.Error("the API key must come from a Secret file through MOENGAGE_DATA_API_KEY_FILE")
	}
	kinds := map[string]bool{}
	for _, ds := range docs {
		for _, d := range ds {
			if k, ok := d["kind"].(string); ok {
				kinds[k] = true
			}
		}
	}
	for _, k := range []string{"Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget", "ScaledObject", "Kustomization"} {
		if !kinds[k] {
			t.Errorf("no %s manifest", k)
		}
	}
}

// TestAlertRulesNameExportedMetrics: every metric an alert uses is one the
// worker exports.
func TestAlertRulesNameExportedMetrics(t *testing.T) {
	docs := documents(t)
	groups := docs["monitoring/alerts.yaml"][0]["groups"].([]any)
	re := regexp.MustCompile(`cohortsync_[a-z_]+`)
	known := exportedMetrics(t)
	n := 0
	for _, g := range groups {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			rule := r.(map[string]any)
			n++
			for _, m := range re.FindAllString(rule["expr"].(string), -1) {
				if !known[m] {
					t.Errorf("alert %s uses %s, which the worker does not export", rule["alert"], m)
				}
			}
		}
	}
	if n < 5 {
		t.Fatalf("%d alert rules", n)
	}
}
