// Package kube is the Kubernetes suite: the rendered base and example
// overlay, with the project's image, applied to a real single-node cluster
// (scripts/k8s-up), against a real Apache Kafka broker and the emulator that
// this process starts on the node's bridge address, so that the pods reach
// them and nothing outside this machine can.
//
// It runs when KUBECONFIG, COHORTSYNC_KUBECTL and COHORTSYNC_K8S_NODE_IP name
// a cluster (scripts/test-kube sets them from scripts/k8s-up env); otherwise
// it skips. It is slow (minutes): run it through scripts/test-kube.
package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/harness/localkafka"
)

const (
	workspace = "kube-workspace"
	apiKey    = "kube-key-3e9a51c7"
	// image is the worker image built from the Dockerfile and imported
	// into the cluster's containerd (scripts/k8s-up).
	defaultImage = "localhost/cohortsync-worker:k8s"
	selector     = "app.kubernetes.io/name=cohortsync-worker"
)

var (
	kubectlBin string
	nodeIP     string
	image      string
	brokerPods string // the broker's address as the pods see it
	brokerHost string // the same broker on loopback, for the test itself
	api        *apiServer
)

func TestMain(m *testing.M) {
	flag.Parse()
	kubectlBin, nodeIP = os.Getenv("COHORTSYNC_KUBECTL"), os.Getenv("COHORTSYNC_K8S_NODE_IP")
	if testing.Short() || kubectlBin == "" || nodeIP == "" || os.Getenv("KUBECONFIG") == "" {
		fmt.Println("kube: skipped: no cluster (scripts/test-kube provisions one and runs this suite)")
		os.Exit(0)
	}
	image = os.Getenv("COHORTSYNC_IMAGE")
	if image == "" {
		image = defaultImage
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stop, err := startBroker(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube: starting Apache Kafka:", err)
		return 1
	}
	defer stop()
	api, err = startAPI()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube: starting the emulator:", err)
		return 1
	}
	defer api.close()
	fmt.Printf("kube: broker %s (pods) / %s (here), emulator %s, image %s\n", brokerPods, brokerHost, api.url, image)
	return m.Run()
}

func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startBroker starts a real broker with a second client listener on the
// node's bridge address (advertised as such), for the pods.
func startBroker(ctx context.Context) (func() error, error) {
	var ports [3]int
	for i := range ports {
		host := "127.0.0.1"
		if i == 2 {
			host = nodeIP
		}
		p, err := freePort(host)
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	listeners := fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d,PODS://%s:%d", ports[0], ports[1], nodeIP, ports[2])
	b, err := localkafka.Start(ctx, localkafka.Options{
		Port: ports[0], ControllerPort: ports[1],
		Listeners:   []localkafka.Listener{{Name: "PODS", Protocol: "PLAINTEXT", Port: ports[2]}},
		ExtraConfig: map[string]string{"listeners": listeners, "advertised.listeners": listeners},
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return nil, err
	}
	brokerHost = b.Addr()
	brokerPods = net.JoinHostPort(nodeIP, strconv.Itoa(ports[2]))
	return b.Stop, nil
}

// ---- the emulator, on the node's address, that can go away and come back ----

type apiServer struct {
	*emulator.Emulator
	addr string
	url  string
	mu   sync.Mutex
	srv  *http.Server
}

func startAPI() (*apiServer, error) {
	cfg := emulator.DefaultConfig()
	cfg.Credentials = map[string]string{workspace: apiKey}
	cfg.RateLimit = 6000
	e, err := emulator.New(cfg)
	if err != nil {
		return nil, err
	}
	p, err := freePort(nodeIP)
	if err != nil {
		return nil, err
	}
	a := &apiServer{Emulator: e, addr: net.JoinHostPort(nodeIP, strconv.Itoa(p))}
	a.url = "http://" + a.addr
	return a, a.up()
}

// up serves the emulator (again) on its address.
func (a *apiServer) up() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.srv != nil {
		return nil
	}
	var ln net.Listener
	var err error
	for range 50 { // the port may linger briefly after down
		if ln, err = net.Listen("tcp", a.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	a.srv = &http.Server{Handler: a.Emulator, ReadHeaderTimeout: 5 * time.Second}
	go func(s *http.Server) { _ = s.Serve(ln) }(a.srv)
	return nil
}

// down closes the listener and every connection: the API is unreachable
// (connection refused) until up.
func (a *apiServer) down() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.srv != nil {
		_ = a.srv.Close()
		a.srv = nil
	}
}

func (a *apiServer) close() { a.down() }

// members returns the uids of a cohort in our workspace.
func (a *apiServer) members(cohort string) map[string]bool {
	out := map[string]bool{}
	for _, s := range a.Segments() {
		if s.Workspace == workspace && s.CohortID == cohort {
			for _, u := range s.Members {
				out[u] = true
			}
		}
	}
	return out
}

// ---- kubectl ----

// kubectl runs kubectl with a timeout and returns its stdout.
func kubectl(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, kubectlBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s%s", strings.Join(args, " "), err, errb.String(), out.String())
	}
	return out.String(), nil
}

func mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectl(t, 2*time.Minute, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ---- a deployment of the example overlay ----

// deployment is the example overlay applied to one namespace, with the
// test's settings merged into the generated ConfigMap.
type deployment struct {
	t        *testing.T
	ns       string
	dir      string // the test's overlay (a kustomization over overlays/example)
	topic    string
	dlq      string
	group    string
	settings map[string]string
}

var nsSeq int

func newDeployment(t *testing.T, partitions int) *deployment {
	t.Helper()
	nsSeq++
	d := &deployment{t: t, ns: fmt.Sprintf("kt-%d-%d", time.Now().Unix()%100000, nsSeq)}
	d.topic = d.ns + "-changes"
	d.dlq = d.topic + ".dlq"
	d.group = d.ns + "-group"
	createTopics(t, kafka.TopicConfig{Topic: d.topic, NumPartitions: partitions, ReplicationFactor: 1},
		kafka.TopicConfig{Topic: d.dlq, NumPartitions: 1, ReplicationFactor: 1})
	d.settings = map[string]string{
		"KAFKA_BROKERS":           brokerPods,
		"KAFKA_TOPIC":             d.topic,
		"KAFKA_DLQ_TOPIC":         d.dlq,
		"KAFKA_GROUP_ID":          d.group,
		"MOENGAGE_BASE_URL":       api.url,
		"MOENGAGE_ALLOW_INSECURE": "true",
		"MOENGAGE_WORKSPACE_ID":   workspace,
		"BATCH_WINDOW":            "1s",
		"RATE_LIMIT_RPM":          "3000",
	}
	d.dir = t.TempDir()
	// The README's first steps: the namespace, then the Secret.
	mustKubectl(t, "create", "namespace", d.ns)
	t.Cleanup(func() {
		if t.Failed() {
			d.dump()
		}
		_, _ = kubectl(t, time.Minute, "delete", "namespace", d.ns, "--wait=false")
	})
	d.setKey(apiKey)
	return d
}

// setKey (re)creates the Secret holding the Data API key.
func (d *deployment) setKey(key string) {
	d.t.Helper()
	_, _ = kubectl(d.t, time.Minute, "-n", d.ns, "delete", "secret", "cohortsync-worker", "--ignore-not-found")
	mustKubectl(d.t, "-n", d.ns, "create", "secret", "generic", "cohortsync-worker", "--from-literal=moengage-data-api-key="+key)
}

// render writes the test's kustomization over overlay (a directory under
// deploy/kubernetes/overlays) and returns its directory.
func (d *deployment) render(overlay string) string {
	d.t.Helper()
	dir := filepath.Join(d.dir, overlay)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		d.t.Fatal(err)
	}
	src, err := filepath.Abs(filepath.Join("../../deploy/kubernetes/overlays", overlay))
	if err != nil {
		d.t.Fatal(err)
	}
	rel, err := filepath.Rel(dir, src)
	if err != nil {
		d.t.Fatal(err)
	}
	name, tag, _ := strings.Cut(image, ":")
	var lits strings.Builder
	for k, v := range d.settings {
		fmt.Fprintf(&lits, "      - %s=%s\n", k, v)
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: %s
resources:
  - %s
images:
  - name: ghcr.io/cohortsync/cohortsync-worker
    newName: %s
    newTag: %s
configMapGenerator:
  - name: cohortsync-worker
    behavior: merge
    literals:
%s`, d.ns, rel, name, tag, lits.String())
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		d.t.Fatal(err)
	}
	return dir
}

// apply applies the example overlay with the current settings.
func (d *deployment) apply() {
	d.t.Helper()
	mustKubectl(d.t, "apply", "-k", d.render("example"))
}

// rollout waits for the Deployment's rollout to complete.
func (d *deployment) rollout(timeout time.Duration) error {
	d.t.Helper()
	_, err := kubectl(d.t, timeout+10*time.Second, "-n", d.ns, "rollout", "status", "deployment/cohortsync-worker",
		"--timeout="+timeout.String())
	return err
}

type pod struct {
	Metadata struct {
		Name              string            `json:"name"`
		DeletionTimestamp *time.Time        `json:"deletionTimestamp"`
		Labels            map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Containers []struct {
			EnvFrom []struct {
				ConfigMapRef struct {
					Name string `json:"name"`
				} `json:"configMapRef"`
			} `json:"envFrom"`
		} `json:"containers"`
	} `json:"spec"`
	Status struct {
		Phase      string `json:"phase"`
		PodIP      string `json:"podIP"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
		InitContainerStatuses []containerStatus `json:"initContainerStatuses"`
		ContainerStatuses     []containerStatus `json:"containerStatuses"`
	} `json:"status"`
}

type containerStatus struct {
	Name         string         `json:"name"`
	RestartCount int            `json:"restartCount"`
	State        map[string]any `json:"state"`
}

func (p pod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

func (p pod) configMap() string {
	if len(p.Spec.Containers) == 0 || len(p.Spec.Containers[0].EnvFrom) == 0 {
		return ""
	}
	return p.Spec.Containers[0].EnvFrom[0].ConfigMapRef.Name
}

// pods lists the worker's pods (terminating ones included).
func (d *deployment) pods() []pod {
	d.t.Helper()
	out, err := kubectl(d.t, time.Minute, "-n", d.ns, "get", "pods", "-l", selector, "-o", "json")
	if err != nil {
		d.t.Fatal(err)
	}
	var list struct{ Items []pod }
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		d.t.Fatal(err)
	}
	return list.Items
}

// readyPods are the pods that are Ready and not terminating.
func (d *deployment) readyPods() []pod {
	var out []pod
	for _, p := range d.pods() {
		if p.ready() && p.Metadata.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// metric sums the samples of a metric (name plus an optional label
// selector such as `{reason="invalid_batch"}`) over the running pods, ready
// or not.
func (d *deployment) metric(name string) float64 {
	var sum float64
	for _, p := range d.pods() {
		if p.Status.PodIP != "" && p.Status.Phase == "Running" && p.Metadata.DeletionTimestamp == nil {
			sum += scrape(p.Status.PodIP, name)
		}
	}
	return sum
}

func scrape(ip, name string) float64 {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(ip, "9090") + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	var sum float64
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if !strings.HasPrefix(rest, " ") && !strings.HasPrefix(rest, "{") && !strings.HasPrefix(name, "{") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// dump logs what an operator would look at after a failure.
func (d *deployment) dump() {
	for _, args := range [][]string{
		{"-n", d.ns, "get", "all,pdb,networkpolicy,configmap,job", "-o", "wide"},
		{"-n", d.ns, "get", "events", "--sort-by=.lastTimestamp"},
		{"-n", d.ns, "logs", "-l", selector, "--all-containers", "--tail=30", "--prefix"},
	} {
		out, err := kubectl(d.t, time.Minute, args...)
		d.t.Logf("$ kubectl %s\n%s%v", strings.Join(args, " "), out, errOrNil(err))
	}
}

func errOrNil(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ---- Kafka ----

func createTopics(t *testing.T, topics ...kafka.TopicConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokerHost), Timeout: 20 * time.Second}
	res, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: topics})
	if err != nil {
		t.Fatalf("create topics: %v", err)
	}
	for _, tc := range topics {
		if err := res.Errors[tc.Topic]; err != nil {
			t.Fatalf("create topic %s: %v", tc.Topic, err)
		}
	}
}

// produce writes one add event per uid to cohort, keyed by the cohort.
func produce(t *testing.T, topic, cohort string, uids ...string) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokerHost), Topic: topic, Balancer: &kafka.Hash{}, BatchTimeout: 10 * time.Millisecond}
	defer w.Close()
	msgs := make([]kafka.Message, len(uids))
	for i, u := range uids {
		v, _ := json.Marshal(map[string]any{"action": "add", "partner": "kube", "cohort_id": cohort,
			"cohort_name": "Kube_" + cohort, "uids": []string{u}})
		msgs[i] = kafka.Message{Key: []byte(cohort), Value: v}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", timeout, what)
	return 0
}

func uids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}
