package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// rendered is a minimal rendered overlay: the generated ConfigMap and the
// worker's Deployment, as kustomize prints them. Each case edits it.
const rendered = `apiVersion: v1
kind: ConfigMap
metadata:
  name: cohortsync-worker-cf56cgbh5c
data:
  SHUTDOWN_TIMEOUT: 30s
  HTTP_ADDR: ":9090"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cohortsync-worker
spec:
  selector:
    matchLabels: {app: w}
  template:
    metadata:
      labels: {app: w}
      annotations: {prometheus.io/port: "9090"}
    spec:
      terminationGracePeriodSeconds: 50
      automountServiceAccountToken: false
      containers:
        - name: worker
          image: ghcr.io/cohortsync/cohortsync-worker:v1.0.0
          envFrom:
            - configMapRef: {name: cohortsync-worker-cf56cgbh5c}
          ports:
            - {name: http, containerPort: 9090}
          livenessProbe: {httpGet: {path: /healthz, port: http}}
          readinessProbe: {httpGet: {path: /readyz, port: http}}
          resources:
            requests: {memory: 512Mi}
            limits: {memory: 512Mi}
          volumeMounts:
            - {name: secrets, mountPath: /s}
      volumes:
        - name: secrets
          secret: {secretName: s, defaultMode: 256}
`

func checkString(t *testing.T, doc string) error {
	t.Helper()
	f := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return checkK8s([]string{f})
}

func TestCouplings(t *testing.T) {
	if err := checkString(t, rendered); err != nil {
		t.Fatalf("the consistent manifest fails: %v", err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"grace below SHUTDOWN_TIMEOUT + attempt + margin", "terminationGracePeriodSeconds: 50", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds 45 disagrees"},
		{"SHUTDOWN_TIMEOUT raised, grace not", "SHUTDOWN_TIMEOUT: 30s", "SHUTDOWN_TIMEOUT: 60s", "disagrees with SHUTDOWN_TIMEOUT 1m0s"},
		{"grace far above", "terminationGracePeriodSeconds: 50", "terminationGracePeriodSeconds: 300", "terminationGracePeriodSeconds 300 disagrees"},
		{"grace unset", "      terminationGracePeriodSeconds: 50\n", "", "terminationGracePeriodSeconds unset"},
		{"memory request below the limit", "requests: {memory: 512Mi}", "requests: {memory: 256Mi}", "memory request 256Mi must equal the limit 512Mi"},
		{"literal GOMEMLIMIT", "          ports:\n", "          env: [{name: GOMEMLIMIT, value: 460MiB}]\n          ports:\n", "sets GOMEMLIMIT"},
		{"HTTP_ADDR moved, port not", `HTTP_ADDR: ":9090"`, `HTTP_ADDR: ":8081"`, "HTTP_ADDR listens on 8081"},
		{"ConfigMap without a hash", "cohortsync-worker-cf56cgbh5c", "cohortsync-worker", "no content hash"},
		{"image :latest", "cohortsync-worker:v1.0.0", "cohortsync-worker:latest", "never :latest"},
		{"image without a tag", "cohortsync-worker:v1.0.0", "cohortsync-worker", "never :latest or no tag"},
		{"secret world-readable", "defaultMode: 256", "defaultMode: 420", "defaultMode 0400"},
		{"token mounted", "automountServiceAccountToken: false", "automountServiceAccountToken: true", "automountServiceAccountToken must be false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 1
			if tc.name == "ConfigMap without a hash" {
				n = -1 // the ConfigMap and the reference
			}
			doc := strings.Replace(rendered, tc.old, tc.new, n)
			if doc == rendered {
				t.Fatalf("%q not in the manifest", tc.old)
			}
			err := checkString(t, doc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestRenderedIsValidYAML guards the fixture itself.
func TestRenderedIsValidYAML(t *testing.T) {
	for _, d := range strings.Split(rendered, "---\n") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil || len(m) == 0 {
			t.Fatalf("fixture: %v", err)
		}
	}
}

func TestComposeRules(t *testing.T) {
	good, err := os.ReadFile("../../../deploy/compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	write := func(doc string) string {
		dir := filepath.Join(t.TempDir(), "compose")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "compose.yaml")
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	// The build contexts (../..) need not exist for the loader.
	if err := checkCompose(write(string(good))); err != nil {
		t.Fatalf("the project's compose file fails: %v", err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"port on every address", `"127.0.0.1:9092:9092"`, `"9092:9092"`, "port 9092 published"},
		{"no topic creation", "topics: {condition: service_completed_successfully}", "kafka: {condition: service_healthy}", "created by no service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(string(good), tc.old, tc.new, 1)
			if doc == string(good) {
				t.Fatalf("%q not in compose.yaml", tc.old)
			}
			err := checkCompose(write(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
