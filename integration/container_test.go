package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/segmentio/kafka-go"
	"github.com/testcontainers/testcontainers-go"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

// The images under test, built from the project's Dockerfile
// (scripts/containers-up builds them; `make test-containers` sets these).
const (
	envWorkerImage   = "COHORTSYNC_IMAGE"          // the worker target
	envEmulatorImage = "COHORTSYNC_EMULATOR_IMAGE" // the emulator target
)

// The runtime user of both images: distroless "nonroot", numeric so that
// Kubernetes' runAsNonRoot can verify it.
const nonrootUID = 65532

// requireImage skips the test when no engine answers or env names no image,
// and fails it when env names an image the engine does not have.
func requireImage(t *testing.T, env string) string {
	t.Helper()
	testcontainers.SkipIfProviderIsNotHealthy(t)
	img := os.Getenv(env)
	if img == "" {
		t.Skipf("%s is not set: build the images with scripts/containers-up (make test-containers does)", env)
	}
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Client().ImageInspect(context.Background(), img); err != nil {
		t.Fatalf("%s=%s: %v (build it with scripts/containers-up)", env, img, err)
	}
	return img
}

// hardened is the security context the Kubernetes base gives the worker:
// host network (so 127.0.0.1 reaches the Kafka container's published port
// and the test's listeners), a read-only root filesystem, no capabilities,
// no privilege escalation, the image's own (numeric) user.
func hardened(binds ...string) func(*container.HostConfig) {
	return func(hc *container.HostConfig) {
		hc.NetworkMode = "host"
		hc.ReadonlyRootfs = true
		hc.CapDrop = []string{"ALL"}
		hc.SecurityOpt = []string{"no-new-privileges"}
		hc.Binds = append(hc.Binds, binds...)
	}
}

// runToExit runs img with args and returns its exit code and output.
func runToExit(t *testing.T, img string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image: img, Cmd: args, Labels: testLabels(t), HostConfigModifier: hardened(),
		},
		Started: true,
	})
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		t.Fatalf("run %s %v: %v", img, args, err)
	}
	st := waitExited(t, ctx, ctr)
	return st.ExitCode, containerLogs(ctr)
}

func testLabels(t *testing.T) map[string]string {
	return map[string]string{"org.cohortsync.test": t.Name()}
}

func waitExited(t *testing.T, ctx context.Context, ctr testcontainers.Container) *container.State {
	t.Helper()
	for {
		st, err := ctr.State(ctx)
		if err != nil {
			t.Fatalf("container state: %v", err)
		}
		if !st.Running {
			return st
		}
		select {
		case <-ctx.Done():
			t.Fatalf("container %s still running: %v", ctr.GetContainerID(), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func containerLogs(ctr testcontainers.Container) string {
	rc, err := ctr.Logs(context.Background())
	if err != nil {
		return fmt.Sprintf("(logs: %v)", err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// processUID returns the real uid of a running container's main process,
// read from the host's /proc (rootful engines share the host's pid view).
func processUID(t *testing.T, ctr testcontainers.Container) (int, bool) {
	t.Helper()
	ins, err := ctr.Inspect(context.Background())
	if err != nil || ins.State == nil || ins.State.Pid == 0 {
		return 0, false
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", ins.State.Pid))
	if err != nil {
		return 0, false // a remote or VM-based engine
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			fields := strings.Fields(rest)
			uid, err := strconv.Atoi(fields[0])
			return uid, err == nil
		}
	}
	return 0, false
}

// ---- the emulator image ----

// emulatorContainer is the emulator image, on the host network.
type emulatorContainer struct {
	ctr testcontainers.Container
	URL string
}

// startEmulatorContainer starts img accepting the suite's workspace with
// key (default apiKey).
func startEmulatorContainer(t *testing.T, img string, key ...string) *emulatorContainer {
	t.Helper()
	k := apiKey
	if len(key) > 0 {
		k = key[0]
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:  img,
			Labels: testLabels(t),
			Env: map[string]string{
				"EMULATOR_LISTEN":      addr,
				"EMULATOR_CREDENTIALS": workspace + ":" + k,
				"EMULATOR_RATE_LIMIT":  "6000",
				"EMULATOR_LOG_FORMAT":  "json",
			},
			HostConfigModifier: hardened(),
		},
		Started: true,
	})
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		t.Fatalf("start %s: %v", img, err)
	}
	e := &emulatorContainer{ctr: ctr, URL: "http://" + addr}
	waitFor(t, 30*time.Second, "the emulator container's /_emulator/healthz", func() bool {
		return httpStatus(e.URL+emulator.AdminPrefix+"healthz") == 200
	})
	return e
}

// state is the emulator's membership for our workspace, read over HTTP.
func (e *emulatorContainer) state(t *testing.T) model {
	t.Helper()
	resp, err := http.Get(e.URL + emulator.AdminPrefix + "segments?workspace=" + workspace)
	if err != nil {
		t.Fatalf("emulator segments: %v", err)
	}
	defer resp.Body.Close()
	var body emulator.SegmentsResponse
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("emulator segments: %v", err)
	}
	out := model{}
	for _, s := range body.Segments {
		k := cohortKey{s.Partner, s.CohortID}
		out[k] = map[string]bool{}
		for _, u := range s.Members {
			out[k][u] = true
		}
	}
	return out
}

func httpStatus(url string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// ---- tests ----

// TestContainerKafkaImage checks that the suite's broker is the Kafka
// container when that was asked for (make test-containers asks).
func TestContainerKafkaImage(t *testing.T) {
	if os.Getenv(envKafkaProvider) != "container" {
		t.Skipf("%s is not \"container\"", envKafkaProvider)
	}
	kc, ok := broker.(*kafkaContainer)
	if !ok {
		t.Fatalf("the suite's broker is %T, not a container", broker)
	}
	t.Logf("broker: container %.12s from %s at %s", kc.ID(), kc.Image(), kc.Addr())

	// Crash and restart (what TestChaos does to the suite's broker): same
	// address, the log kept.
	topic, _ := newTopic(t, 1)
	prod := newProducer(t, topic)
	g := newGen(5, 3, 10)
	prod.sendN(t, g, 10)
	start := time.Now()
	if err := kc.Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := kc.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Logf("killed and restarted in %s", time.Since(start).Round(time.Millisecond))
	var end int64
	waitFor(t, time.Minute, "the log after the restart", func() bool {
		ends, _, err := offsets(ctx, topic, "none")
		end = ends[0]
		return err == nil && end == 10
	})
	prod2 := newProducer(t, topic)
	waitFor(t, time.Minute, "producing after the restart", func() bool {
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		return prod2.send(wctx, g.next()) == nil
	})
}

// TestContainerWorkerImage runs the worker image built from the Dockerfile
// against the Kafka container and the emulator image, hardened as the
// Kubernetes base runs it: the API reaches the membership the event log
// implies, the process runs as uid 65532 on a read-only root filesystem,
// reads its key from a mounted file, and SIGTERM drains it to exit 0.
func TestContainerWorkerImage(t *testing.T) {
	img := requireImage(t, envWorkerImage)
	emuImg := requireImage(t, envEmulatorImage)

	t.Run("version", func(t *testing.T) {
		code, out := runToExit(t, img, "--version")
		if code != 0 || !strings.HasPrefix(strings.TrimSpace(out), "cohortsync-worker ") {
			t.Fatalf("--version: exit %d, output %q", code, out)
		}
		t.Logf("--version: %s", strings.TrimSpace(out))
	})
	// The Kubernetes base's init container: `check --offline` in the image,
	// hardened as the pod runs it. Without a configuration it must stop the
	// rollout with exit 2 and a line naming what is missing (the first
	// required variable, KAFKA_BROKERS, since issue 19 has no default).
	t.Run("check", func(t *testing.T) {
		code, out := runToExit(t, img, "check", "--offline")
		if code != 2 || !strings.Contains(out, "KAFKA_BROKERS") {
			t.Fatalf("check --offline without configuration: exit %d, output %q; want exit 2 naming KAFKA_BROKERS", code, out)
		}
	})

	// The image's user is numeric (runAsNonRoot can verify it).
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ins, err := p.Client().ImageInspect(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if u := ins.Config.User; u != "65532:65532" && u != "65532" {
		t.Errorf("image user = %q, want 65532:65532 (numeric, non-root)", u)
	}

	api := startEmulatorContainer(t, emuImg)
	topic, dlq := newTopic(t, 4)
	prod := newProducer(t, topic)
	g := newGen(11, 30, 400)
	prod.sendN(t, g, 3000)

	// The key, mounted read-only as the Kubernetes Secret is.
	keyDir := t.TempDir()
	if err := os.Chmod(keyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(keyDir, "moengage-data-api-key")
	if err := os.WriteFile(keyFile, []byte(apiKey+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	httpPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := "127.0.0.1:" + strconv.Itoa(httpPort)
	env := map[string]string{
		"KAFKA_BROKERS":              brokerAddr,
		"KAFKA_TOPIC":                topic,
		"KAFKA_DLQ_TOPIC":            dlq,
		"KAFKA_GROUP_ID":             "ctr-" + topic,
		"MOENGAGE_BASE_URL":          api.URL,
		"MOENGAGE_WORKSPACE_ID":      workspace,
		"MOENGAGE_DATA_API_KEY_FILE": "/var/run/secrets/cohortsync/moengage-data-api-key",
		"BATCH_WINDOW":               "300ms",
		"RATE_LIMIT_RPM":             "6000",
		"HTTP_ADDR":                  httpAddr,
		"SHUTDOWN_TIMEOUT":           "20s",
		"LOG_FORMAT":                 "json",
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:              img,
			Env:                env,
			Labels:             testLabels(t),
			HostConfigModifier: hardened(keyDir + ":/var/run/secrets/cohortsync:ro"),
		},
		Started: true,
	})
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		t.Fatalf("start the worker image: %v", err)
	}
	t.Logf("worker: container %.12s from %s; emulator: container %.12s from %s", ctr.GetContainerID(), img, api.ctr.GetContainerID(), emuImg)
	defer func() {
		if t.Failed() {
			t.Logf("---- worker container log (tail) ----\n%s", tail(containerLogs(ctr), 40))
		}
	}()

	waitFor(t, 60*time.Second, "the worker container's /readyz", func() bool {
		if st, err := ctr.State(context.Background()); err == nil && !st.Running {
			t.Fatalf("worker container exited %d", st.ExitCode)
		}
		return httpStatus("http://"+httpAddr+"/readyz") == 200
	})
	if uid, ok := processUID(t, ctr); ok {
		if uid != nonrootUID {
			t.Errorf("worker process uid = %d, want %d", uid, nonrootUID)
		}
		t.Logf("worker process uid %d", uid)
	} else {
		t.Logf("worker process uid: not visible from this host (remote engine)")
	}
	if ins, err := ctr.Inspect(context.Background()); err == nil && !ins.HostConfig.ReadonlyRootfs {
		t.Errorf("worker container root filesystem is writable")
	}

	// More events while it runs, then fold(log) == membership.
	prod.sendN(t, g, 2000)
	want := prod.model()
	waitState(t, func() model { return api.state(t) }, want, 2*time.Minute)
	t.Logf("membership converged: %d events, %d cohorts", prod.count, len(want))

	// SIGTERM: drain, commit, exit 0 within the grace period.
	grace := 30 * time.Second
	start := time.Now()
	if err := ctr.Stop(context.Background(), &grace); err != nil {
		t.Fatalf("stop: %v", err)
	}
	st, err := ctr.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode != 0 || st.OOMKilled {
		t.Fatalf("worker exited %d (OOM %v) after SIGTERM", st.ExitCode, st.OOMKilled)
	}
	if took := time.Since(start); took >= grace {
		t.Fatalf("worker took %s to stop: killed at the grace period", took)
	}
	logs := containerLogs(ctr)
	if !strings.Contains(logs, `"msg":"stopped"`) {
		t.Errorf("no \"stopped\" log line after SIGTERM:\n%s", tail(logs, 20))
	}
	waitNoLag(t, topic, "ctr-"+topic, 30*time.Second)
	t.Logf("SIGTERM: drained and exited 0 in %s", time.Since(start).Round(time.Millisecond))
}

// startWorkerContainer starts the worker image on the host network with
// env, and waits for its /readyz at httpAddr.
func startWorkerContainer(t *testing.T, img string, env map[string]string, httpAddr string) testcontainers.Container {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image: img, Env: env, Labels: testLabels(t), HostConfigModifier: hardened(),
		},
		Started: true,
	})
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		t.Fatalf("start the worker image: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- worker container %.12s log (tail) ----\n%s", ctr.GetContainerID(), tail(containerLogs(ctr), 30))
		}
	})
	waitFor(t, 60*time.Second, "the worker container's /readyz", func() bool {
		if st, err := ctr.State(context.Background()); err == nil && !st.Running {
			t.Fatalf("worker container exited %d", st.ExitCode)
		}
		return httpStatus("http://"+httpAddr+"/readyz") == 200
	})
	return ctr
}

// metricValue reads an unlabelled metric from a worker's /metrics (NaN:
// absent or unreadable).
func metricValue(httpAddr, name string) float64 {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return math.NaN()
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return math.NaN()
}

// requestsSince returns the emulator container's request records after seq,
// and the last seq.
func (e *emulatorContainer) requestsSince(t *testing.T, seq uint64) ([]emulator.RequestRecord, uint64) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("%s%srequests?since=%d", e.URL, emulator.AdminPrefix, seq))
	if err != nil {
		t.Fatalf("emulator requests: %v", err)
	}
	defer resp.Body.Close()
	var body emulator.RequestsResponse
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("emulator requests: %v", err)
	}
	return body.Requests, body.LastSeq
}

// produceToPartition writes n add events of n distinct cohorts to
// partition p of topic: with one request per cohort, a backlog of n
// requests.
func produceToPartition(t *testing.T, topic string, p, n int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokerAddr), Topic: topic, BatchTimeout: 2 * time.Millisecond, BatchSize: 1000,
		RequiredAcks: kafka.RequireAll, Balancer: kafka.BalancerFunc(func(kafka.Message, ...int) int { return p })}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		ev := event.Event{Action: event.Add, Partner: partner, CohortID: fmt.Sprintf("hot-%d-%05d", p, i),
			CohortName: "IT_Hot", UIDs: []string{fmt.Sprintf("u%07d", i)}}
		msgs[i] = kafka.Message{Key: []byte(ev.CohortID), Value: event.Encode(ev)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// TestContainerReplicasShareOnHostNetwork: three replicas of the worker
// image on the host network -- one hostname (the host's), pid 1 each --
// share one budget (RATE_LIMIT_RPM=120) with the backlog in one of three
// partitions. Each has a name of its own, so the busy replica borrows the
// idle ones' spare and sends well above its static share (38/min); named
// by hostname and pid they were all "HOST-1", overwrote each other's
// budget records and kept their static shares (38 of 120/min measured).
func TestContainerReplicasShareOnHostNetwork(t *testing.T) {
	img := requireImage(t, envWorkerImage)
	emuImg := requireImage(t, envEmulatorImage)
	api := startEmulatorContainer(t, emuImg)
	topic, dlq := newTopic(t, 3)
	produceToPartition(t, topic, 0, 1500) // about 12 minutes at the whole budget
	produceToPartition(t, topic, 1, 2)    // the others send a little, under their names
	produceToPartition(t, topic, 2, 2)

	const budget = 120
	static := ratelimit.Share(budget, 1, 3)
	addrs := make([]string, 3)
	for i := range addrs {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = "127.0.0.1:" + strconv.Itoa(port)
		startWorkerContainer(t, img, map[string]string{
			"KAFKA_BROKERS": brokerAddr, "KAFKA_TOPIC": topic, "KAFKA_DLQ_TOPIC": dlq, "KAFKA_GROUP_ID": "ctr-" + topic,
			"KAFKA_SESSION_TIMEOUT": "6s", "KAFKA_HEARTBEAT_INTERVAL": "1s",
			"MOENGAGE_BASE_URL": api.URL, "MOENGAGE_WORKSPACE_ID": workspace, "MOENGAGE_DATA_API_KEY": apiKey,
			"RATE_LIMIT_RPM": strconv.Itoa(budget), "HTTP_ADDR": addrs[i], "LOG_FORMAT": "json",
			"MOENGAGE_MAX_PROCESSING_TIME": "16s", // the shortest accepted: the emulator never processes late
		}, addrs[i])
	}
	split := func() bool {
		for _, a := range addrs {
			if metricValue(a, "cohortsync_assigned_partitions") != 1 {
				return false
			}
		}
		return true
	}
	waitFor(t, 90*time.Second, "one partition per replica", split)
	// A first start reads nothing for MOENGAGE_MAX_PROCESSING_TIME (no
	// proof of a clean hand-over): wait for the busy partition's first
	// request, then let the rates settle within a few board ticks, then
	// count a window.
	waitFor(t, 90*time.Second, "the first request", func() bool {
		recs, _ := api.requestsSince(t, 0)
		return len(recs) > 0
	})
	time.Sleep(10 * time.Second)
	_, seq := api.requestsSince(t, 0)
	const window = 40 * time.Second
	start := time.Now()
	time.Sleep(window)
	recs, _ := api.requestsSince(t, seq)
	if !split() {
		t.Fatal("the group rebalanced during the measurement")
	}
	byReplica := map[string]int{}
	for _, r := range recs {
		if r.Time.Before(start.Add(window)) {
			byReplica[r.Replica]++
		}
	}
	busiest, total := 0, 0
	for _, n := range byReplica {
		busiest, total = max(busiest, n), total+n
	}
	perMin := func(n int) float64 { return float64(n) / window.Minutes() }
	t.Logf("requests in %s by replica: %v; busiest %.0f/min (static share %.0f), fleet %.0f/min of %d",
		window, byReplica, perMin(busiest), static, perMin(total), budget)
	for i, a := range addrs {
		t.Logf("replica %d: rate in force %v/min, duplicates %v", i, metricValue(a, "cohortsync_rate_limit_requests_per_minute"),
			metricValue(a, "cohortsync_budget_board_duplicates_total"))
		if d := metricValue(a, "cohortsync_budget_board_duplicates_total"); d != 0 {
			t.Errorf("replica %d counted %v duplicate budget records", i, d)
		}
	}
	if perMin(busiest) < 1.5*static {
		t.Errorf("the busy replica sent %.0f/min, not well above its static share %.0f/min: the replicas do not share", perMin(busiest), static)
	}
	if perMin(total) > budget*1.05 {
		t.Errorf("the fleet sent %.0f/min over a budget of %d", perMin(total), budget)
	}
	names := map[string]bool{}
	for _, r := range recs {
		names[r.Replica] = true
	}
	t.Logf("replica names seen by the API: %v", names)
}
