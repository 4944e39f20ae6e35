package kube

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

// stuckUID is refused by the emulator with a 400 that names nothing: a batch
// holding only it stops its line (no evidence against the member), while
// every other cohort syncs.
const stuckUID = "stuck-uid"

// TestKubeFirstDeploy follows the README's "A first deploy" on the cluster:
// the namespace and the Secret, the pre-deploy Job (the full check) with the
// overlay's own ConfigMap, the example overlay applied (its NetworkPolicy
// accepted by the API server), the rollout, and "verify it works": events
// produced to the topic become members in the API. Then the pre-deploy Job
// with a wrong key fails, without any request that carries a deliberately
// wrong key.
func TestKubeFirstDeploy(t *testing.T) {
	d := newDeployment(t, 4)
	t.Run("PreDeployJob", func(t *testing.T) {
		since := lastSeq()
		d.precheck(t, true)
		for _, r := range api.RequestsSince(since) {
			if !r.AuthOK {
				t.Errorf("the check sent a request the API could not authenticate (status %d, %s): a deliberate wrong key?", r.Status, r.ErrorMessage)
			}
		}
	})
	t.Run("Apply", func(t *testing.T) {
		// The API server validates every object, the NetworkPolicy included.
		mustKubectl(t, "apply", "--dry-run=server", "-k", d.render("example"))
		d.apply()
		start := time.Now()
		if err := d.rollout(3 * time.Minute); err != nil {
			t.Fatal(err)
		}
		t.Logf("first rollout complete in %s", time.Since(start).Round(time.Second))
		if out := mustKubectl(t, "-n", d.ns, "get", "networkpolicy", "cohortsync-worker", "-o", "jsonpath={.spec.policyTypes}"); !strings.Contains(out, "Egress") {
			t.Errorf("NetworkPolicy policyTypes %s", out)
		}
	})
	t.Run("VerifyItWorks", func(t *testing.T) {
		us := uids("first", 50)
		produce(t, d.topic, "kube-first", us...)
		took := waitFor(t, 2*time.Minute, "the members to reach the API", func() bool { return len(api.members("kube-first")) == len(us) })
		t.Logf("%d members synced %s after producing", len(us), took.Round(time.Second))
	})
	t.Run("PreDeployJobWrongKey", func(t *testing.T) {
		d.setKey("not-the-key")
		defer d.setKey(apiKey)
		since := lastSeq()
		logs := d.precheck(t, false)
		reqs := api.RequestsSince(since)
		if len(reqs) > 1 {
			t.Errorf("the failing check sent %d requests, want at most 1 (the budget)", len(reqs))
		}
		if !regexp.MustCompile(`(?i)key|credential|401`).MatchString(logs) {
			t.Errorf("the Job's log does not name the key:\n%s", logs)
		}
	})
}

// TestKubeStoppedLine: one cohort's line is stopped (every request for it
// gets a 400 that names nothing). Readiness is this pod's own state, so:
// a rollout triggered by a ConfigMap edit completes and the pods stay Ready;
// a drain of the node is neither blocked by the stopped line nor allowed by
// the PDB to take every pod.
func TestKubeStoppedLine(t *testing.T) {
	d := newDeployment(t, 4)
	cohortOK := "kube-ok"
	d.settings["MOENGAGE_BASE_URL"] = api.url
	if err := api.SetFaults(emulator.Faults{RejectUIDs: []string{stuckUID}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.SetFaults(emulator.Faults{}) })
	d.apply()
	if err := d.rollout(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	produce(t, d.topic, "kube-stuck", stuckUID)
	produce(t, d.topic, cohortOK, uids("ok", 20)...)
	waitFor(t, 2*time.Minute, "the stuck cohort's line to stop", func() bool {
		return d.metric(`cohortsync_line_stopped{reason="invalid_batch"}`) >= 1
	})
	waitFor(t, time.Minute, "the other cohort to sync", func() bool { return len(api.members(cohortOK)) == 20 })

	t.Run("ConfigMapEditRollsWhileStopped", func(t *testing.T) {
		before := d.pods()
		d.settings["BATCH_WINDOW"] = "2s"
		d.apply()
		start := time.Now()
		if err := d.rollout(3 * time.Minute); err != nil {
			t.Fatalf("the rollout did not complete with one cohort's line stopped: %v", err)
		}
		t.Logf("rollout complete in %s with the line stopped", time.Since(start).Round(time.Second))
		after := d.readyPods()
		if len(after) != 2 {
			t.Fatalf("%d ready pods after the rollout", len(after))
		}
		old := map[string]bool{}
		for _, p := range before {
			old[p.Metadata.Name] = true
		}
		for _, p := range after {
			if old[p.Metadata.Name] {
				t.Errorf("pod %s survived a ConfigMap edit", p.Metadata.Name)
			}
			if p.configMap() == before[0].configMap() {
				t.Errorf("pod %s still uses ConfigMap %s", p.Metadata.Name, p.configMap())
			}
		}
		// The stuck partition is taken by a new pod: its line stops again,
		// and the pod stays Ready (observed before: unready 20 s later).
		waitFor(t, 2*time.Minute, "the line to stop on the new pods", func() bool {
			return d.metric(`cohortsync_line_stopped{reason="invalid_batch"}`) >= 1
		})
		time.Sleep(20 * time.Second)
		if n := len(d.readyPods()); n != 2 {
			t.Errorf("%d of 2 pods ready 20 s after the stuck partition moved", n)
		}
	})

	t.Run("DrainWithStoppedLine", func(t *testing.T) {
		node := strings.TrimSpace(mustKubectl(t, "get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"))
		before := d.readyPods()
		defer mustKubectl(t, "uncordon", node)
		// One node: the first eviction is allowed, its replacement cannot
		// be scheduled (cordoned), so the PDB must refuse the second one and
		// the drain times out with one pod still serving.
		start := time.Now()
		out, err := kubectl(t, 2*time.Minute, "drain", node, "--pod-selector="+selector, "--timeout=60s",
			"--ignore-daemonsets", "--delete-emptydir-data")
		took := time.Since(start)
		if err == nil {
			t.Fatalf("the drain completed in %s: the PDB let it take every pod:\n%s", took.Round(time.Second), out)
		}
		serving := 0
		for _, p := range d.readyPods() {
			for _, b := range before {
				if p.Metadata.Name == b.Metadata.Name {
					serving++
				}
			}
		}
		if serving != 1 {
			t.Fatalf("%d of the 2 pods still serving after the drain, want 1 (one evicted, one protected):\n%v", serving, err)
		}
		if !strings.Contains(err.Error(), "evicted") && !strings.Contains(out, "evicted") {
			t.Errorf("no pod was evicted: the stopped line blocked the drain:\n%v", err)
		}
		t.Logf("drain: one pod evicted, the other protected by the PDB (drain gave up after %s)", took.Round(time.Second))
		mustKubectl(t, "uncordon", node)
		if err := d.rollout(3 * time.Minute); err != nil {
			t.Fatalf("no recovery after uncordon: %v", err)
		}
	})
}

// TestKubeStartWhileAPIUnreachable: a pod starts and becomes Ready while the
// API refuses connections: the init container checks the configuration
// only, and readiness does not depend on the API. Once the API is back, the
// events sync.
func TestKubeStartWhileAPIUnreachable(t *testing.T) {
	d := newDeployment(t, 2)
	api.down()
	defer func() {
		if err := api.up(); err != nil {
			t.Fatal(err)
		}
	}()
	d.apply()
	start := time.Now()
	if err := d.rollout(3 * time.Minute); err != nil {
		for _, p := range d.pods() {
			t.Logf("pod %s: init %+v", p.Metadata.Name, p.Status.InitContainerStatuses)
		}
		t.Fatalf("no rollout while the API is unreachable: %v", err)
	}
	t.Logf("2 pods Ready in %s with the API unreachable", time.Since(start).Round(time.Second))
	for _, p := range d.pods() {
		for _, s := range p.Status.InitContainerStatuses {
			if s.RestartCount > 0 {
				t.Errorf("pod %s: init container %s restarted %d times", p.Metadata.Name, s.Name, s.RestartCount)
			}
		}
	}
	produce(t, d.topic, "kube-later", uids("later", 10)...)
	if err := api.up(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitFor(t, 2*time.Minute, "the members once the API is back", func() bool { return len(api.members("kube-later")) == 10 })
	t.Logf("synced %s after the API came back", time.Since(back).Round(time.Second))
}

// TestKubeSIGTERMDrainsWithinGrace: deleting a pod under load sends SIGTERM;
// the worker drains and exits on its own, well within
// terminationGracePeriodSeconds (the kubelet never has to SIGKILL it).
func TestKubeSIGTERMDrainsWithinGrace(t *testing.T) {
	d := newDeployment(t, 2)
	d.apply()
	if err := d.rollout(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	grace := strings.TrimSpace(mustKubectl(t, "-n", d.ns, "get", "deployment", "cohortsync-worker",
		"-o", "jsonpath={.spec.template.spec.terminationGracePeriodSeconds}"))
	var graceS int
	if _, err := fmt.Sscan(grace, &graceS); err != nil || graceS < 30 {
		t.Fatalf("terminationGracePeriodSeconds %q", grace)
	}
	// Load: a backlog the pods are syncing, through an API that takes 3 s
	// to answer, so that requests are under way when SIGTERM arrives.
	if err := api.SetFaults(emulator.Faults{Latency: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.SetFaults(emulator.Faults{}) })
	for i := range 8 {
		produce(t, d.topic, fmt.Sprintf("kube-load-%d", i), uids(fmt.Sprintf("load%d", i), 50)...)
	}
	// A first start reads nothing for MOENGAGE_MAX_PROCESSING_TIME (no
	// proof of a clean hand-over yet): wait until a pod has a request to
	// the slow API under way.
	var p pod
	waitFor(t, 2*time.Minute, "a request under way", func() bool {
		for _, q := range d.readyPods() {
			if scrape(q.Status.PodIP, "cohortsync_in_flight_requests") > 0 {
				p = q
				return true
			}
		}
		return false
	})
	logs := make(chan string, 1)
	go func() {
		out, _ := kubectl(t, 2*time.Minute, "-n", d.ns, "logs", "-f", p.Metadata.Name, "-c", "worker")
		logs <- out
	}()
	time.Sleep(time.Second)
	start := time.Now()
	mustKubectl(t, "-n", d.ns, "delete", "pod", p.Metadata.Name, "--wait=true", "--timeout=2m")
	took := time.Since(start)
	t.Logf("pod deleted in %s (grace %ds)", took.Round(100*time.Millisecond), graceS)
	if took >= time.Duration(graceS)*time.Second {
		t.Errorf("the pod took %s to go, the whole grace period: killed, not drained", took)
	}
	out := <-logs
	last := lastLog(out)
	if last["msg"] != "stopped" {
		t.Errorf("the worker's last log line is %v, want its clean exit (\"stopped\"):\n%s", last, tailLines(out, 10))
	}
	_ = api.SetFaults(emulator.Faults{})
	waitFor(t, 3*time.Minute, "the backlog to sync", func() bool {
		for i := range 8 {
			if len(api.members(fmt.Sprintf("kube-load-%d", i))) != 50 {
				return false
			}
		}
		return true
	})
}

// ---- helpers ----

func lastSeq() uint64 {
	r := api.Requests()
	if len(r) == 0 {
		return 0
	}
	return r[len(r)-1].Seq
}

// precheck runs the pre-deploy Job (overlays/example-precheck with the
// test's settings), waits for it to finish and returns its log; it fails
// the test unless the outcome is want.
func (d *deployment) precheck(t *testing.T, want bool) string {
	t.Helper()
	_, _ = kubectl(t, time.Minute, "-n", d.ns, "delete", "job", "cohortsync-worker-precheck", "--ignore-not-found", "--wait=true")
	mustKubectl(t, "apply", "-k", d.render("example-precheck"))
	var status struct {
		Succeeded int `json:"succeeded"`
		Failed    int `json:"failed"`
	}
	waitFor(t, 3*time.Minute, "the pre-deploy Job to finish", func() bool {
		out, err := kubectl(t, time.Minute, "-n", d.ns, "get", "job", "cohortsync-worker-precheck", "-o", "jsonpath={.status}")
		return err == nil && json.Unmarshal([]byte(out), &status) == nil && status.Succeeded+status.Failed > 0
	})
	logs, _ := kubectl(t, time.Minute, "-n", d.ns, "logs", "job/cohortsync-worker-precheck")
	if got := status.Succeeded > 0; got != want {
		t.Fatalf("pre-deploy Job succeeded=%v, want %v; its log:\n%s", got, want, logs)
	}
	t.Logf("pre-deploy Job (want success %v):\n%s", want, tailLines(logs, 12))
	return logs
}

func lastLog(out string) map[string]any {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var m map[string]any
		if json.Unmarshal([]byte(lines[i]), &m) == nil {
			return m
		}
	}
	return nil
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestKubeMemoryLimitFromCgroup: the worker sizes its Go memory limit from
// the container's memory limit (the manifest sets no GOMEMLIMIT): its start
// log names the cgroup's limit, which equals the manifest's limits.memory,
// and a Go limit below it.
func TestKubeMemoryLimitFromCgroup(t *testing.T) {
	d := newDeployment(t, 1)
	d.apply()
	if err := d.rollout(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	limit := strings.TrimSpace(mustKubectl(t, "-n", d.ns, "get", "deployment", "cohortsync-worker", "-o",
		`jsonpath={.spec.template.spec.containers[?(@.name=="worker")].resources.limits.memory}`))
	if limit != "512Mi" {
		t.Fatalf("limits.memory %q, want the base's 512Mi", limit)
	}
	const want = 512 << 20
	p := d.readyPods()[0]
	out := mustKubectl(t, "-n", d.ns, "logs", p.Metadata.Name, "-c", "worker")
	for _, line := range strings.Split(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != "Go memory limit" {
			continue
		}
		cg, _ := m["cgroup_limit_bytes"].(float64)
		gl, _ := m["gomemlimit_bytes"].(float64)
		if m["source"] != "cgroup" || cg != want || gl <= 0 || gl >= want {
			t.Fatalf("the worker's memory limit line %v: want source cgroup, cgroup_limit_bytes %d and a Go limit below it", m, want)
		}
		t.Logf("Go memory limit %.0f MiB from the cgroup's %.0f MiB", gl/(1<<20), cg/(1<<20))
		return
	}
	t.Fatalf("no \"Go memory limit\" line in the worker's log:\n%s", tailLines(out, 20))
}

// TestKubeDeleteUnderLoadHandsOver: `kubectl delete pod` on a busy replica
// starts its replacement at once (maxSurge does not apply to deletes), and
// the replacement's join starts a rebalance during the old pod's drain.
// The hand-over must not throw the drain away: the deleted pod drops no
// pending member, and the survivor and the replacement join one generation
// each (one rebalance, not a burst).
func TestKubeDeleteUnderLoadHandsOver(t *testing.T) {
	d := newDeployment(t, 4)
	d.settings["MAX_IN_FLIGHT"] = "1"
	d.settings["MAX_PENDING_MEMBERS"] = "12000"
	d.settings["RATE_LIMIT_SHARING"] = "false"
	d.settings["BATCH_WINDOW"] = "1s"
	if err := api.SetFaults(emulator.Faults{Latency: 4 * time.Second}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.SetFaults(emulator.Faults{}) })
	d.apply()
	if err := d.rollout(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	// One cohort per partition is likely; adds and removes alternate so
	// that batches keep coming behind the slow API.
	const cohorts, perCohort = 8, 1500
	for i := range cohorts {
		produce(t, d.topic, fmt.Sprintf("kube-busy-%d", i), uids(fmt.Sprintf("busy%d", i), perCohort)...)
	}
	// A first start reads nothing for MOENGAGE_MAX_PROCESSING_TIME (no
	// proof of a clean hand-over yet), so wait for the backlog to build
	// rather than a fixed time.
	var a, c pod
	var pendingA float64
	waitFor(t, 2*time.Minute, "a busy replica (1,000 members pending)", func() bool {
		pods := d.readyPods()
		if len(pods) != 2 {
			return false
		}
		a, c = pods[0], pods[1]
		if scrape(a.Status.PodIP, "cohortsync_pending_members") < scrape(c.Status.PodIP, "cohortsync_pending_members") {
			a, c = c, a
		}
		pendingA = scrape(a.Status.PodIP, "cohortsync_pending_members")
		return pendingA >= 1000
	})
	follow := func(name string) chan string {
		ch := make(chan string, 1)
		go func() {
			out, _ := kubectl(t, 3*time.Minute, "-n", d.ns, "logs", "-f", name, "-c", "worker")
			ch <- out
		}()
		return ch
	}
	logsA, logsC := follow(a.Metadata.Name), follow(c.Metadata.Name)
	time.Sleep(time.Second)
	since := time.Now()
	mustKubectl(t, "-n", d.ns, "delete", "pod", a.Metadata.Name, "--wait=false")
	var outA string
	select {
	case outA = <-logsA:
	case <-time.After(2 * time.Minute):
		t.Fatal("the deleted pod's log did not end within 2 min")
	}
	waitFor(t, 2*time.Minute, "the replacement to be Ready", func() bool { return len(d.readyPods()) == 2 })
	var b pod
	for _, p := range d.readyPods() {
		if p.Metadata.Name != c.Metadata.Name {
			b = p
		}
	}
	time.Sleep(5 * time.Second)
	outB := mustKubectl(t, "-n", d.ns, "logs", b.Metadata.Name, "-c", "worker")
	_ = api.SetFaults(emulator.Faults{})
	waitFor(t, 3*time.Minute, "every member to sync", func() bool {
		for i := range cohorts {
			if len(api.members(fmt.Sprintf("kube-busy-%d", i))) != perCohort {
				return false
			}
		}
		return true
	})
	_, _ = kubectl(t, time.Minute, "-n", d.ns, "delete", "pod", c.Metadata.Name, "--wait=false") // ends C's log stream
	outC := <-logsC
	sa, sb, sc := handover(outA, since), handover(outB, since), handover(outC, since)
	t.Logf("A: %.0f pending at deletion, drained %s, dropped %d; B: %d generation(s), dropped %d; C: %d generation(s), dropped %d",
		pendingA, sa.drainEnded.Sub(sa.drainStarted).Round(100*time.Millisecond), sa.dropped, sb.joins, sb.dropped, sc.joins, sc.dropped)
	if sa.drainStarted.IsZero() || sa.drainEnded.IsZero() {
		t.Fatalf("the deleted pod's log shows no drain:\n%s", tailLines(outA, 15))
	}
	if sa.dropped != 0 {
		t.Errorf("the deleted pod dropped %d pending members: the replacement's join threw its drain away", sa.dropped)
	}
	if sb.joins != 1 || sc.joins != 1 {
		t.Errorf("the replacement joined %d generations and the survivor %d after the deletion, want 1 each (one rebalance)", sb.joins, sc.joins)
	}
}

type handoverStats struct {
	joins, dropped           int
	drainStarted, drainEnded time.Time
}

// handover reads a worker's JSON log from since: generations joined,
// pending members dropped at a revocation, the drain's start and end.
func handover(out string, since time.Time) handoverStats {
	var s handoverStats
	for _, line := range strings.Split(out, "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		ts, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"]))
		if ts.Before(since) {
			continue
		}
		switch l["msg"] {
		case "joined generation":
			s.joins++
		case "revoked: dropped pending changes":
			n, _ := l["members"].(float64)
			s.dropped += int(n)
		case "draining":
			s.drainStarted = ts
		case "left the group after the drain", "left the consumer group":
			if s.drainEnded.IsZero() {
				s.drainEnded = ts
			}
		}
	}
	return s
}
