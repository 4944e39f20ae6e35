package main

// Phase (h''): 1,000 workspaces in the registry, 200 of them with changes,
// 3 worker processes (workspaces.go has the plan).

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/workspace"
)

const (
	manyRegistry = 1000
	manyActive   = 200
	manyReplicas = 3
	manyBudget   = 30 // per workspace (each replica's share: 8.8/min)
	manyRun      = 90 * time.Second
	// manyEvents keeps the 200 workspaces busy for the run: about 3,000
	// changes each (each workspace's budget bounds its requests; a replica
	// has MAX_IN_FLIGHT batches out per workspace, waiting for their
	// workspace's permits, and MAX_IN_FLIGHT requests on the wire).
	manyEvents = 600_000
)

type manyReplica struct {
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPercent float64 `json:"cpu_percent_of_a_core"`
	Requests   int     `json:"requests"`
}

type manyResult struct {
	Registry     int           `json:"registry_workspaces"`
	Active       int           `json:"active_workspaces"`
	Seconds      float64       `json:"seconds"`
	Replicas     []manyReplica `json:"replicas"`
	ReloadMillis float64       `json:"registry_load_ms_median"`
	ReloadRuns   []float64     `json:"registry_load_ms_runs"`
	Rejected429  int           `json:"answered_429"`
}

// phaseH2 runs (h″).
func (b *bench) phaseH2(ctx context.Context) error {
	m, err := b.manyWorkspaces(ctx)
	if err != nil {
		return err
	}
	b.res.ManyWorkspaces = m
	peak, cpu := 0.0, 0.0
	for _, r := range m.Replicas {
		peak, cpu = max(peak, r.PeakRSSMiB), max(cpu, r.CPUPercent)
	}
	b.say("(h'') %d workspaces, %d active: peak RSS %.1f MiB, CPU %.1f%% of a core (the highest replica's), registry load %.1f ms",
		m.Registry, m.Active, peak, cpu, m.ReloadMillis)
	b.res.Targets["h'' RSS"] = verdict{"<= 256 MiB a replica", fmt.Sprintf("%.1f MiB", peak), peak <= 256}
	b.res.Targets["h'' CPU"] = verdict{"reported (no goal in the issue)", fmt.Sprintf("%.1f%% of a core", cpu), true}
	b.res.Targets["h'' reload"] = verdict{"< 5 s (the registry's bound)", fmt.Sprintf("%.1f ms", m.ReloadMillis), m.ReloadMillis < 5000}
	return nil
}

func (b *bench) manyWorkspaces(ctx context.Context) (*manyResult, error) {
	o := b.o
	topic := fmt.Sprintf("bench-many-%d", time.Now().Unix())
	if err := b.admin.CreateTopics(ctx, o.partitions, topic, topic+".dlq"); err != nil {
		return nil, err
	}
	active := make([]string, manyActive)
	for i := range active {
		active[i] = wsID(i)
	}
	events := manyEvents
	if err := produceWS(ctx, b.brokers, topic, events, active, balancedCohortIDs(o.partitions, o.partitions), 77); err != nil {
		return nil, err
	}
	dir, a, err := workspacesFixture(manyRegistry, func(int) int { return manyBudget }, false)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	defer a.Close()
	m := &manyResult{Registry: manyRegistry, Active: manyActive, Seconds: manyRun.Seconds()}
	if m.ReloadRuns, err = registryLoads(dir, 5); err != nil {
		return nil, err
	}
	sorted := slices.Sorted(slices.Values(m.ReloadRuns))
	m.ReloadMillis = sorted[len(sorted)/2]
	bin, err := b.workerBinary(ctx)
	if err != nil {
		return nil, err
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
	}()
	for range manyReplicas {
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env = append(os.Environ(),
			"KAFKA_BROKERS="+strings.Join(b.brokers, ","), "KAFKA_TOPIC="+topic, "KAFKA_GROUP_ID=group-"+topic,
			"MOENGAGE_BASE_URL="+a.URL, "MOENGAGE_WORKSPACE_ID="+wsID(0), "MOENGAGE_WORKSPACES_DIR="+dir,
			fmt.Sprint("RATE_LIMIT_RPM=", manyBudget), fmt.Sprint("BATCH_MAX_BYTES=", wsMaxBytes),
			"HTTP_ADDR=127.0.0.1:0", "LOG_LEVEL=warn", "LOG_FORMAT=text")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		procs = append(procs, cmd)
	}
	b.say("(h'') %d worker processes, %d workspaces in the registry, %d with changes (%d events), for %s…",
		manyReplicas, manyRegistry, manyActive, events, manyRun)
	first, err := firstRequest(ctx, a)
	if err != nil {
		return nil, err
	}
	cpu0 := make([]float64, len(procs))
	for i, p := range procs {
		cpu0[i] = cpuSeconds(p.Process.Pid)
	}
	if err := sleepUntil(ctx, first.Add(manyRun)); err != nil {
		return nil, err
	}
	byReplica := map[string]int{}
	for _, r := range a.Requests() {
		byReplica[procName(r.Replica)]++
		if r.Status == 429 {
			m.Rejected429++
		}
	}
	host, _ := os.Hostname()
	for i, p := range procs {
		c := cpuSeconds(p.Process.Pid) - cpu0[i]
		m.Replicas = append(m.Replicas, manyReplica{PeakRSSMiB: peakRSSMiB(p.Process.Pid), CPUSeconds: c,
			CPUPercent: 100 * c / manyRun.Seconds(), Requests: byReplica[fmt.Sprintf("%s-%d", host, p.Process.Pid)]})
	}
	return m, nil
}

// registryLoads times n full loads of the registry in dir (workspace.Open:
// list, read and check every file, as a reload after a change does).
func registryLoads(dir string, n int) ([]float64, error) {
	var out []float64
	for range n {
		start := time.Now()
		r, err := workspace.Open(workspace.Options{Dir: dir, DefaultDC: "01", DefaultRPM: manyBudget,
			ValidDC: workspace.OneOf(config.DataCenters), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			return nil, err
		}
		out = append(out, float64(time.Since(start).Microseconds())/1000)
		if got := len(r.IDs()); got != manyRegistry {
			return nil, fmt.Errorf("registry load: %d workspaces, want %d", got, manyRegistry)
		}
	}
	return out, nil
}

// peakRSSMiB is a process's VmHWM.
func peakRSSMiB(pid int) float64 {
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	var kb float64
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			fmt.Sscanf(strings.TrimPrefix(line, "VmHWM:"), "%f", &kb)
		}
	}
	return kb / 1024
}

// cpuSeconds is a process's user + system CPU time (clock ticks of 1/100 s).
func cpuSeconds(pid int) float64 {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // after "pid (comm) "
	if len(fields) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(fields[11], 64)
	k, _ := strconv.ParseFloat(fields[12], 64)
	return (u + k) / 100
}
