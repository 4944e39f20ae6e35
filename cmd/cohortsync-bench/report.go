package main

// The results: what the phases measured, the table printed and the JSON
// written.

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

type results struct {
	Machine      string      `json:"machine"`
	KafkaVersion string      `json:"kafka_version"`
	Events       int         `json:"events"`
	Cohorts      int         `json:"cohorts"`
	Partitions   int         `json:"partitions"`
	BareReader   *throughput `json:"bare_reader,omitempty"` // the median run
	Worker       *throughput `json:"worker_unlimited,omitempty"`
	WorkerRatio  float64     `json:"worker_to_bare_ratio,omitempty"` // median of the runs' ratios
	BareRuns     []float64   `json:"bare_reader_runs_events_per_second,omitempty"`
	WorkerRuns   []float64   `json:"worker_runs_events_per_second,omitempty"`
	RatioRuns    []float64   `json:"ratio_runs,omitempty"`
	// (b) again against an emulator that keeps every segment's members, as
	// the other phases do: the bookkeeping then runs on the same cores.
	WorkerState      *throughput         `json:"worker_unlimited_emulator_state,omitempty"`
	WorkerStateRatio float64             `json:"worker_emulator_state_to_bare_ratio,omitempty"`
	WorkerStateRuns  []float64           `json:"worker_emulator_state_runs_events_per_second,omitempty"`
	StateRatioRuns   []float64           `json:"ratio_emulator_state_runs,omitempty"`
	RateLimited      []rateResult        `json:"rate_limited,omitempty"`
	Shared           []shareResult       `json:"shared_budget,omitempty"`
	PeakRSS          *rssResult          `json:"peak_rss,omitempty"`
	PeakRSSLimited   *rssResult          `json:"peak_rss_with_gomemlimit,omitempty"`
	LargeRecords     *largeRecordsResult `json:"peak_rss_large_records,omitempty"`
	Latency          *latencyResult      `json:"latency,omitempty"`
	Workspaces       []wsResult          `json:"workspaces,omitempty"`            // (h)
	Revoked          []hpResult          `json:"revoked_workspace,omitempty"`     // (h')
	RevokedRSS       *hpRSSResult        `json:"revoked_workspace_rss,omitempty"` // (h'), 1 M changes parked
	ManyWorkspaces   *manyResult         `json:"many_workspaces,omitempty"`       // (h'')
	Targets          map[string]verdict  `json:"targets"`
}

type verdict struct {
	Target string `json:"target"`
	Value  string `json:"value"`
	Met    bool   `json:"met"`
}

// runs formats a run list as "x / y / z".
func runs(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, " / ")
}

func printTable(w io.Writer, r *results) {
	fmt.Fprintf(w, "\ncohortsync-worker benchmark — %s, Apache Kafka %s, %d partitions\n\n", r.Machine, r.KafkaVersion, r.Partitions)
	fmt.Fprintf(w, "%-48s %s\n", "figure", "value")
	row := func(k, v string) { fmt.Fprintf(w, "%-48s %s\n", k, v) }
	if r.BareReader != nil {
		row("(a) bare kafka-go reader", fmt.Sprintf("%.0f events/s (%d events, %.2fs; median of runs %s)", r.BareReader.PerSec, r.BareReader.Events, r.BareReader.Seconds, runs(r.BareRuns, "%.0f")))
	}
	if r.Worker != nil {
		row("(b) worker, no rate limit", fmt.Sprintf("%.0f events/s (first fetch to last acceptance %.2fs, %d requests)", r.Worker.PerSec, r.Worker.Seconds, r.Worker.Requests))
		row("(b) from start: first fetch / all read / all accepted / lag 0", fmt.Sprintf("%.2fs / %.2fs / %.2fs / %.2fs",
			r.Worker.FirstFetchSeconds, r.Worker.AllReadSeconds, r.Worker.AllAcceptedSecs, r.Worker.LagZeroSeconds))
		row("(b) last request received / requests after all read", fmt.Sprintf("%.2fs / %d", r.Worker.LastRequestSecs, r.Worker.RequestsAfterRead))
		row("(b) runs", runs(r.WorkerRuns, "%.0f")+" events/s")
		row("(b)/(a)", fmt.Sprintf("%.2f (median of the runs' ratios %s)", r.WorkerRatio, runs(r.RatioRuns, "%.2f")))
		if r.WorkerState != nil {
			row("(b') emulator keeping members: events/s", fmt.Sprintf("%.0f (runs %s)", r.WorkerState.PerSec, runs(r.WorkerStateRuns, "%.0f")))
			row("(b')/(a)", fmt.Sprintf("%.2f (median of the runs' ratios %s)", r.WorkerStateRatio, runs(r.StateRatioRuns, "%.2f")))
		}
	}
	for _, rr := range r.RateLimited {
		p := fmt.Sprintf("(c) %d replica(s), RATE_LIMIT_RPM=300", rr.Replicas)
		row(p+": requests", fmt.Sprintf("%d in %.0fs (busiest 60 s window: %d; 429s: %d)", rr.Requests, rr.Seconds, rr.Busiest60s, rr.Rejected429))
		row(p+": req/min ÷ 300", fmt.Sprintf("%.3f", rr.PerMinOverRPM))
		row(p+": packing", fmt.Sprintf("%.3f (mean body %.0f bytes)", rr.Packing, rr.MeanBodyBytes))
	}
	for _, sr := range r.Shared {
		p := fmt.Sprintf("(%s) %d replicas, hot partitions %v", sr.Name, sr.Replicas, sr.HotPartitions)
		row(p+": requests", fmt.Sprintf("%d in %.0fs (busiest 60 s window: %d; 429s: %d)", sr.Requests, sr.Seconds, sr.Busiest60s, sr.Rejected429))
		row(p+": req/min ÷ 300", fmt.Sprintf("%.3f", sr.PerMinOverRPM))
		row(p+": packing", fmt.Sprintf("%.3f (mean body %.0f of %d bytes)", sr.Packing, sr.MeanBodyBytes, shareMaxBytes))
		if sr.Killed != "" {
			row(p+": SIGKILL", fmt.Sprintf("%s at %.0fs; >= 90%% of the budget again %.1fs later", sr.Killed, sr.KilledAfter, sr.BackInUseAfter))
		}
	}
	if r.PeakRSS != nil {
		row("(d) peak RSS", fmt.Sprintf("%.1f MiB with %d members pending", r.PeakRSS.PeakRSSMiB, r.PeakRSS.PendingMembers))
	}
	if r.PeakRSSLimited != nil {
		row("(d) peak RSS, GOMEMLIMIT="+r.PeakRSSLimited.GOMEMLIMIT, fmt.Sprintf("%.1f MiB", r.PeakRSSLimited.PeakRSSMiB))
	}
	if r.LargeRecords != nil {
		l := r.LargeRecords
		row("(d-large) peak RSS, API down", fmt.Sprintf("%.1f MiB (%d partitions × %d records of %d bytes = %.0f MiB; %d read when it stopped)",
			l.PeakRSSMiB, l.Partitions, l.Records/l.Partitions, l.RecordBytes, l.TopicMiB, l.Consumed))
	}
	if r.Latency != nil {
		row("(e) produce→accept latency", fmt.Sprintf("p50 %.3fs, p99 %.3fs (%d samples at %d/s over %d cohorts, BATCH_WINDOW=%.1fs)", r.Latency.P50, r.Latency.P99, r.Latency.Samples, r.Latency.Rate, r.Latency.Cohorts, r.Latency.Window))
	}
	printWorkspaces(row, r)
	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "\n%-20s %-36s %-22s %s\n", "target", "goal", "measured", "met")
		keys := make([]string, 0, len(r.Targets))
		for k := range r.Targets {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v := r.Targets[k]
			fmt.Fprintf(w, "%-20s %-36s %-22s %v\n", k, v.Target, v.Value, v.Met)
		}
	}
}

// writeJSON writes res to path and says where on w.
func writeJSON(w io.Writer, path string, res *results) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nJSON: %s\n", path)
	return nil
}
