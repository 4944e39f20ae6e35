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
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestDeploycheckKnowsTheAttemptTimeout: scripts/tools/deploycheck (its own
// module) derives the grace period from a copy of sink.DefaultAttemptTimeout.
func TestDeploycheckKnowsTheAttemptTimeout(t *testing.T) {
	b, err := os.ReadFile("../scripts/tools/deploycheck/couplings.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`attemptTimeout = (\d+) \* time.Second`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no attemptTimeout constant in deploycheck")
	}
	if want := strconv.Itoa(int(sink.DefaultAttemptTimeout / time.Second)); string(m[1]) != want {
		t.Errorf("deploycheck's attemptTimeout is %ss, sink.DefaultAttemptTimeout %ss", m[1], want)
	}
}

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

// envFile reads a kustomize env file (KEY=VALUE lines, # comments).
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		out[k] = v
	}
	return out
}

// overlaySettings is the example overlay's configuration: the base's
// config.env merged with the overlay's configMapGenerator literals.
func overlaySettings(t *testing.T, docs map[string][]map[string]any, overlay string) map[string]string {
	t.Helper()
	cfg := envFile(t, "kubernetes/base/config.env")
	for _, d := range docs[overlay] {
		gens, _ := d["configMapGenerator"].([]any)
		for _, g := range gens {
			for _, l := range g.(map[string]any)["literals"].([]any) {
				k, v, _ := strings.Cut(l.(string), "=")
				cfg[k] = v
			}
		}
	}
	return cfg
}

// TestManifestsUseOnlyKnownSettings: every worker variable set in the
// Kubernetes base and overlays and the compose file exists in the worker's
// configuration.
func TestManifestsUseOnlyKnownSettings(t *testing.T) {
	docs := documents(t)
	base := envFile(t, "kubernetes/base/config.env")
	if len(base) == 0 {
		t.Fatal("config.env has no settings")
	}
	for k := range base {
		if !knownVar(k) {
			t.Errorf("config.env sets %s, which the worker does not read", k)
		}
	}
	for _, o := range []string{"kubernetes/overlays/example/kustomization.yaml", "kubernetes/overlays/staging-emulator/kustomization.yaml"} {
		for k := range overlaySettings(t, docs, o) {
			if !knownVar(k) && k != "HTTPS_PROXY" && k != "NO_PROXY" {
				t.Errorf("%s sets %s, which the worker does not read", o, k)
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
	for _, o := range []string{"kubernetes/overlays/example/kustomization.yaml", "kubernetes/overlays/staging-emulator/kustomization.yaml"} {
		cfg := overlaySettings(t, docs, o)
		c, err := config.Load(nil, func(k string) string {
			if k == "MOENGAGE_DATA_API_KEY" {
				return "x"
			}
			return cfg[k]
		}, nil)
		if err != nil {
			t.Fatalf("%s is not a valid configuration: %v", o, err)
		}
		// The grace period covers the drain, an API attempt under way (never
		// cut off) and a margin; scripts/tools/deploycheck checks the same
		// on the rendered manifests.
		if want := c.ShutdownTimeout + sink.DefaultAttemptTimeout + 5*time.Second; time.Duration(grace)*time.Second < want {
			t.Errorf("%s: terminationGracePeriodSeconds %d is below SHUTDOWN_TIMEOUT %s + attempt timeout %s + 5s",
				o, grace, c.ShutdownTimeout, sink.DefaultAttemptTimeout)
		}
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
	for _, k := range []string{"Deployment", "Secret", "Service", "PodDisruptionBudget", "NetworkPolicy", "Job", "Kustomization", "Component"} {
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
