package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// envKustomize names the kustomize binary (default: kustomize in PATH, then
// .cache/tools/bin/kustomize, where scripts/lint-deploy installs it).
const envKustomize = "COHORTSYNC_KUSTOMIZE"

func kustomizeBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(envKustomize); p != "" {
		return p
	}
	if p, err := exec.LookPath("kustomize"); err == nil {
		return p
	}
	p, _ := filepath.Abs("../.cache/tools/bin/kustomize")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	t.Skip("kustomize is not installed (scripts/lint-deploy installs it)")
	return ""
}

// TestContainerKubePlay renders the Kubernetes base with kustomize, as an
// overlay would (image, settings, the Secret), and plays its Deployment,
// ConfigMap and Secret with `podman kube play` against the Kafka container
// and the emulator image: the pod runs with the base's security context,
// reads the key from the mounted Secret, answers /readyz once it joined
// the group, syncs the events, and stopping it drains to exit 0.
func TestContainerKubePlay(t *testing.T) {
	img := requireImage(t, envWorkerImage)
	emuImg := requireImage(t, envEmulatorImage)
	if os.Getenv("COHORTSYNC_CONTAINER_ENGINE") != "podman" {
		t.Skip("podman kube play needs Podman (COHORTSYNC_CONTAINER_ENGINE=podman)")
	}
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman is not installed")
	}
	kustomize := kustomizeBin(t)

	// The key is base64 text: see selectKinds on Podman 4.3.
	const kubeKey = "a3ViZS1wbGF5LWtleS05ZDJl"
	api := startEmulatorContainer(t, emuImg, kubeKey)
	topic, dlq := newTopic(t, 4)
	group := "kube-" + topic
	prod := newProducer(t, topic)
	g := newGen(23, 20, 300)
	prod.sendN(t, g, 2000)
	httpPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := "127.0.0.1:" + strconv.Itoa(httpPort)

	// An overlay of the base, as an operator's would be.
	dir := t.TempDir()
	base, err := filepath.Abs("../deploy/kubernetes/base")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	name, tag, _ := strings.Cut(strings.TrimPrefix(img, "localhost/"), ":")
	overlay := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [%q]
images:
  - name: ghcr.io/cohortsync/cohortsync-worker
    newName: localhost/%s
    newTag: %q
configMapGenerator:
  - name: cohortsync-worker
    behavior: merge
    literals:
      - KAFKA_BROKERS=%s
      - KAFKA_TOPIC=%s
      - KAFKA_DLQ_TOPIC=%s
      - KAFKA_GROUP_ID=%s
      - MOENGAGE_BASE_URL=%s
      - MOENGAGE_WORKSPACE_ID=%s
      - BATCH_WINDOW=300ms
      - RATE_LIMIT_RPM=6000
      - HTTP_ADDR=%s
secretGenerator:
  - name: cohortsync-worker
    behavior: replace
    literals: [moengage-data-api-key=%s]
    options: {disableNameSuffixHash: true}
patches:
  # One replica, on the host network (the broker and the emulator listen
  # on loopback here).
  - target: {kind: Deployment, name: cohortsync-worker}
    patch: |-
      - op: replace
        path: /spec/replicas
        value: 1
      - op: add
        path: /spec/template/spec/hostNetwork
        value: true
      # Podman refuses port mappings on the host network: no ports, the
      # probes on the port number.
      - op: remove
        path: /spec/template/spec/containers/0/ports
      - op: replace
        path: /spec/template/spec/containers/0/livenessProbe/httpGet/port
        value: %d
      - op: replace
        path: /spec/template/spec/containers/0/readinessProbe/httpGet/port
        value: %d
`, rel, name, tag, brokerAddr, topic, dlq, group, api.URL, workspace, httpAddr, kubeKey, httpPort, httpPort)
	ver, _ := exec.Command(podman, "version", "--format", "{{.Client.Version}}").Output()
	podman43 := strings.HasPrefix(string(ver), "4.3.")
	if podman43 {
		// Podman 4.3's kube play fails on the base's init container (the
		// check): it removes a "once" init container while it still runs
		// ("cannot remove container ... as it is running"). The check's
		// command runs in the image in TestContainerWorkerImage/check.
		overlay += `  - target: {kind: Deployment, name: cohortsync-worker}
    patch: |-
      - op: remove
        path: /spec/template/spec/initContainers
`
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o644); err != nil {
		t.Fatal(err)
	}
	rendered, err := exec.Command(kustomize, "build", dir).Output()
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	play, kinds := selectKinds(t, rendered, podman43, "ConfigMap", "Secret", "Deployment")
	if len(kinds) != 3 {
		t.Fatalf("rendered manifests hold %v, want a ConfigMap, a Secret and a Deployment:\n%s", kinds, rendered)
	}
	manifest := filepath.Join(dir, "play.yaml")
	if err := os.WriteFile(manifest, play, 0o644); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, podman, args...).CombinedOutput()
		return string(out), err
	}
	// What a run that was killed may have left: the pod, the secret, its volume.
	_, _ = run("kube", "down", manifest)
	_, _ = run("secret", "rm", "cohortsync-worker")
	_, _ = run("volume", "rm", "-f", "cohortsync-worker")
	if out, err := run("kube", "play", manifest); err != nil {
		t.Fatalf("podman kube play: %v\n%s", err, out)
	} else {
		t.Logf("podman kube play:\n%s", strings.TrimSpace(out))
	}
	downed := false
	t.Cleanup(func() {
		if !downed {
			_, _ = run("kube", "down", manifest)
		}
		// kube down leaves the Secret's podman secret and volume behind.
		_, _ = run("secret", "rm", "cohortsync-worker")
		_, _ = run("volume", "rm", "-f", "cohortsync-worker")
	})
	pod := "cohortsync-worker-pod-0" // podman kube play's name for a Deployment's first pod
	ctr := pod + "-worker"
	logs := func() string { out, _ := run("logs", ctr); return out }
	defer func() {
		if t.Failed() {
			t.Logf("---- pod container log (tail) ----\n%s", tail(logs(), 40))
		}
	}()

	waitFor(t, 90*time.Second, "the pod's /readyz", func() bool {
		return httpStatus("http://"+httpAddr+"/readyz") == 200
	})
	user, _ := run("inspect", "--format", "{{.Config.User}} ro={{.HostConfig.ReadonlyRootfs}} caps={{.HostConfig.CapDrop}}", ctr)
	t.Logf("pod %s ready; container %s: user %s", pod, ctr, strings.TrimSpace(user))
	if !strings.HasPrefix(strings.TrimSpace(user), "65532") || !strings.Contains(user, "ro=true") {
		t.Errorf("the pod's container runs as %q, want user 65532 and a read-only root filesystem", strings.TrimSpace(user))
	}

	prod.sendN(t, g, 1000)
	want := prod.model()
	waitState(t, func() model { return api.state(t) }, want, 2*time.Minute)
	t.Logf("membership converged: %d events through the pod, the key read from the mounted Secret", prod.count)

	// Stop the pod within the Deployment's grace period: drain, exit 0.
	start := time.Now()
	if out, err := run("pod", "stop", "-t", "45", pod); err != nil {
		t.Fatalf("podman pod stop: %v\n%s", err, out)
	}
	code, _ := run("inspect", "--format", "{{.State.ExitCode}}", ctr)
	if strings.TrimSpace(code) != "0" {
		t.Fatalf("the worker exited %s after SIGTERM", strings.TrimSpace(code))
	}
	if !strings.Contains(logs(), `"msg":"stopped"`) {
		t.Errorf("no \"stopped\" log line after SIGTERM")
	}
	t.Logf("pod stopped: drained and exited 0 in %s", time.Since(start).Round(time.Millisecond))
	if out, err := run("kube", "down", manifest); err != nil {
		t.Errorf("podman kube down: %v\n%s", err, out)
	}
	downed = true
	waitNoLag(t, topic, group, 30*time.Second)
}

// selectKinds returns the documents of a YAML stream whose kind is one of
// kinds, and the kinds found.
func selectKinds(t *testing.T, stream []byte, podman43 bool, kinds ...string) ([]byte, []string) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(stream))
	var out bytes.Buffer
	var found []string
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		k, _ := doc["kind"].(string)
		if data, ok := doc["data"].(map[string]any); ok && k == "Secret" && podman43 {
			// Podman 4.3 (Debian bookworm) writes a Secret volume's files
			// base64-encoded: hand it each value decoded once, which it
			// encodes back into the key (the key is base64 text for this).
			for key, v := range data {
				s, _ := v.(string)
				dec, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					t.Fatalf("secret %s: %v", key, err)
				}
				if _, err := base64.StdEncoding.DecodeString(string(dec)); err != nil {
					t.Fatalf("secret %s: the value must be base64 text for Podman 4.3", key)
				}
				data[key] = string(dec)
			}
		}
		keep := false
		for _, want := range kinds {
			keep = keep || k == want
		}
		if !keep {
			continue
		}
		b, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("---\n")
		out.Write(b)
		found = append(found, k)
	}
	return out.Bytes(), found
}
