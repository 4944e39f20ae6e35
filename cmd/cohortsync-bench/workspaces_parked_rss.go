package main

// Phase (h'), the RSS sub-run: the worker binary's peak RSS with 1 M
// changes of a revoked workspace parked, and while they are delivered.
//
// One worker process, (h)'s 20 workspaces with no budgets (emulator and
// worker unlimited, default BATCH_MAX_BYTES), so that 1 M changes are
// delivered in seconds, not hours. ws0019's key is revoked, one event of it
// blocks it (cohortsync_workspace_blocked), then 1,000 bulk events of 1,000
// distinct uids each (adds) are produced: the worker parks them. Once the
// parking topic holds them and the source topic's lag is 0, its VmHWM is
// "while parked". The key is then fixed through the registry (a new key in
// the emulator and the key file: TargetsChanged, at once, rather than
// waiting for the probe), and the run waits until the emulator has accepted
// every one of the 1,000,001 uids; VmHWM then, and the largest VmRSS sampled
// during the delivery, are "while delivered".

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

const (
	hpBulkEvents = 1000 // bulk events of the revoked workspace in the RSS sub-run
	hpBulkUIDs   = 1000 // uids of each
	hpRSSOthers  = 20_000
)

type hpRSSResult struct {
	ParkedChanges      int     `json:"parked_changes"` // produced while blocked, each a distinct uid
	ParkingRecords     int64   `json:"parking_topic_records"`
	ParkedGauge        float64 `json:"parked_changes_gauge"` // cohortsync_parked_changes (records)
	PeakRSSParkedMiB   float64 `json:"peak_rss_parked_mib"`  // VmHWM once parked
	PeakRSSMiB         float64 `json:"peak_rss_mib"`         // VmHWM after the delivery
	MaxRSSDeliveryMiB  float64 `json:"max_rss_during_delivery_mib"`
	DeliveredSeconds   float64 `json:"delivered_seconds_after_fix"`
	MembersAfterwards  int     `json:"revoked_workspace_members"`
	ParkedAfterSeconds float64 `json:"parked_seconds_after_produce"`
}

// phaseHPrimeRSS runs the RSS sub-run of (h').
func (b *bench) phaseHPrimeRSS(ctx context.Context) error {
	r, err := b.hprimeRSS(ctx)
	if err != nil {
		return err
	}
	b.res.RevokedRSS = r
	b.say("(h') 1 M parked: peak RSS %.1f MiB while parked (%d parking records, gauge %.0f), %.1f MiB after the delivery (max VmRSS during it %.1f MiB; %.1fs)",
		r.PeakRSSParkedMiB, r.ParkingRecords, r.ParkedGauge, r.PeakRSSMiB, r.MaxRSSDeliveryMiB, r.DeliveredSeconds)
	b.res.Targets["h' RSS parked"] = verdict{"< 256 MiB, 1 M changes parked", fmt.Sprintf("%.1f MiB", r.PeakRSSParkedMiB), r.PeakRSSParkedMiB < 256}
	b.res.Targets["h' RSS delivered"] = verdict{"< 256 MiB, delivering them", fmt.Sprintf("%.1f MiB", r.PeakRSSMiB), r.PeakRSSMiB < 256}
	return nil
}

func (b *bench) hprimeRSS(ctx context.Context) (*hpRSSResult, error) {
	topic := fmt.Sprintf("bench-hprss-%d", time.Now().Unix())
	group := "bench-hprss-" + topic
	revoked := wsID(hpRevoked)
	if err := b.admin.CreateTopics(ctx, b.o.partitions, topic, topic+".dlq"); err != nil {
		return nil, err
	}
	cohorts := balancedCohortIDs(6, 6)
	var others []string
	for i := range hpRevoked {
		others = append(others, wsID(i))
	}
	if err := produceWS(ctx, b.brokers, topic, hpRSSOthers, others, cohorts, 91); err != nil {
		return nil, err
	}
	dir, a, err := unlimitedFixture(wsCount)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	defer a.Close()
	cmd, addr, err := b.startWorkerProcess(ctx, topic, group, a.URL, dir)
	if err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	if _, err := firstRequest(ctx, a); err != nil {
		return nil, err
	}
	w := &kafka.Writer{Addr: kafka.TCP(b.brokers...), Topic: topic, Balancer: &kafka.Hash{},
		BatchSize: 100, BatchBytes: 16 << 20, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireOne}
	defer w.Close()
	if err := b.blockRevoked(ctx, a, w, addr, revoked, cohorts[0]); err != nil {
		return nil, err
	}
	r := &hpRSSResult{ParkedChanges: hpBulkEvents * hpBulkUIDs}
	b.say("(h') %s blocked; producing %d changes of it in %d bulk events…", revoked, r.ParkedChanges, hpBulkEvents)
	produced := time.Now()
	if err := produceBulk(ctx, w, revoked, cohorts); err != nil {
		return nil, err
	}
	if err := b.waitParked(ctx, topic, group, addr, r); err != nil {
		return nil, err
	}
	r.ParkedAfterSeconds = time.Since(produced).Seconds()
	r.PeakRSSParkedMiB = peakRSSMiB(cmd.Process.Pid)
	fixed := time.Now()
	if err := restoreKey(a, dir, revoked, "registry", -1); err != nil {
		return nil, err
	}
	if err := waitDelivered(ctx, a, revoked, r.ParkedChanges+1, cmd.Process.Pid, r); err != nil {
		return nil, err
	}
	r.DeliveredSeconds = time.Since(fixed).Seconds()
	r.PeakRSSMiB = peakRSSMiB(cmd.Process.Pid)
	for _, s := range a.WorkspaceSegments(revoked) {
		r.MembersAfterwards += len(s.Members)
	}
	if r.MembersAfterwards != r.ParkedChanges+1 {
		return nil, fmt.Errorf("(h') RSS: %s has %d members, want %d", revoked, r.MembersAfterwards, r.ParkedChanges+1)
	}
	return r, nil
}

// unlimitedFixture writes a registry of n workspaces (keys only: budgets
// are RATE_LIMIT_RPM's, 0) and starts an emulator serving them with no rate
// limit, keeping membership.
func unlimitedFixture(n int) (string, *rig.API, error) {
	dir, err := os.MkdirTemp("", "cohortsync-bench-hprss-")
	if err != nil {
		return "", nil, err
	}
	cfg := emulator.DefaultConfig()
	cfg.Workspaces = map[string]emulator.Workspace{}
	for i := range n {
		id, key := wsID(i), fmt.Sprintf("key-%04d", i)
		cfg.Workspaces[id] = emulator.Workspace{Key: key, RateLimit: -1}
		if err := os.WriteFile(filepath.Join(dir, id+".key"), []byte(key), 0o600); err != nil {
			os.RemoveAll(dir)
			return "", nil, err
		}
	}
	a, err := rig.ServeAPI(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, a, nil
}

// startWorkerProcess starts the worker binary over topic with the registry
// dir, unlimited, its metrics on a free loopback port (returned).
func (b *bench) startWorkerProcess(ctx context.Context, topic, group, url, dir string) (*exec.Cmd, string, error) {
	bin, err := b.workerBinary(ctx)
	if err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(),
		"KAFKA_BROKERS="+strings.Join(b.brokers, ","), "KAFKA_TOPIC="+topic, "KAFKA_GROUP_ID="+group,
		"MOENGAGE_BASE_URL="+url, "MOENGAGE_WORKSPACE_ID="+wsID(0), "MOENGAGE_WORKSPACES_DIR="+dir,
		"RATE_LIMIT_RPM=0", "HTTP_ADDR="+addr, "LOG_LEVEL=warn", "LOG_FORMAT=text")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	return cmd, addr, nil
}

// blockRevoked revokes id's key, produces one add of it to cohort, and
// waits for the worker to report the workspace blocked.
func (b *bench) blockRevoked(ctx context.Context, a *rig.API, w *kafka.Writer, addr, id, cohort string) error {
	if err := a.RevokeKey(id); err != nil {
		return err
	}
	ev := event.Event{Action: event.Add, Partner: "bench", CohortID: cohort, CohortName: "Bench_" + cohort,
		UIDs: []string{"trigger"}, Workspace: id}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(cohort), Value: event.Encode(ev)}); err != nil {
		return err
	}
	return waitMetric(ctx, addr, time.Minute, fmt.Sprintf("%s blocked", id), func(m rig.Metrics) bool {
		return m.Sum(fmt.Sprintf(`cohortsync_workspace_blocked{workspace=%q}`, id)) >= 1
	})
}

// produceBulk writes hpBulkEvents adds of hpBulkUIDs distinct uids each for
// workspace id, over the cohorts in turn.
func produceBulk(ctx context.Context, w *kafka.Writer, id string, cohorts []string) error {
	msgs := make([]kafka.Message, 0, 100)
	for i := range hpBulkEvents {
		c := cohorts[i%len(cohorts)]
		uids := make([]string, hpBulkUIDs)
		for j := range uids {
			uids[j] = fmt.Sprintf("p%09d", i*hpBulkUIDs+j)
		}
		ev := event.Event{Action: event.Add, Partner: "bench", CohortID: c, CohortName: "Bench_" + c, UIDs: uids, Workspace: id}
		msgs = append(msgs, kafka.Message{Key: []byte(c), Value: event.Encode(ev)})
		if len(msgs) == cap(msgs) || i == hpBulkEvents-1 {
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				return err
			}
			msgs = msgs[:0]
		}
	}
	return nil
}

// waitParked waits until the parking topic holds the bulk events and the
// group has committed the whole source topic, then reads the parked gauge.
func (b *bench) waitParked(ctx context.Context, topic, group, addr string, r *hpRSSResult) error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		r.ParkingRecords = b.topicRecords(ctx, group+".parked")
		lag, err := b.admin.GroupLag(ctx, topic, group)
		if err == nil && lag == 0 && r.ParkingRecords >= hpBulkEvents {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("(h') RSS: %d records parked, source lag %d (%v) after 3 minutes", r.ParkingRecords, lag, err)
		}
		time.Sleep(time.Second)
	}
	time.Sleep(2 * time.Second)
	m, _ := rig.Scrape(ctx, "http://"+addr+"/metrics")
	r.ParkedGauge = m.Sum("cohortsync_parked_changes")
	return nil
}

// waitDelivered waits until the emulator has accepted want adds of
// workspace id (from its request log), sampling pid's VmRSS.
func waitDelivered(ctx context.Context, a *rig.API, id string, want, pid int, r *hpRSSResult) error {
	deadline := time.Now().Add(4 * time.Minute)
	var seq uint64
	got := 0
	for got < want {
		for _, rec := range a.RequestsSince(seq) {
			seq = rec.Seq
			if rec.Workspace == id && rec.Status == 200 && rec.Action == string(event.Add) {
				got += len(rec.Members)
			}
		}
		r.MaxRSSDeliveryMiB = max(r.MaxRSSDeliveryMiB, rssMiB(pid))
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("(h') RSS: %d of %d changes delivered after 4 minutes", got, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return nil
}

// waitMetric scrapes addr every half second until ok or within passes.
func waitMetric(ctx context.Context, addr string, within time.Duration, what string, ok func(rig.Metrics) bool) error {
	deadline := time.Now().Add(within)
	for {
		m, _ := rig.Scrape(ctx, "http://"+addr+"/metrics")
		if ok(m) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("(h') %s: not within %s", what, within)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// rssMiB is a process's current VmRSS.
func rssMiB(pid int) float64 {
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	var kb float64
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			fmt.Sscanf(strings.TrimPrefix(line, "VmRSS:"), "%f", &kb)
		}
	}
	return kb / 1024
}

// printRevoked adds the rows of (h') to the table.
func printRevoked(row func(k, v string), r *results) {
	for _, hr := range r.Revoked {
		p := fmt.Sprintf("(h') %d replica(s), %s revoked %s, restore by %s", hr.Replicas, wsID(hpRevoked), hpRevocation, hr.Restore)
		row(p+": others' req/min ÷ budget", fmt.Sprintf("lowest %.3f during the revocation", hr.MinUse))
		row(p+": source lag", fmt.Sprintf("%d at the revocation, max %d during it (%d records produced); longest without a commit %.1fs (%.1fs before the revocation)",
			hr.LagAtRevoke, hr.MaxLag, hr.Produced, hr.MaxNoCommitS, hr.MaxNoCommitBeforeS))
		conv := fmt.Sprintf("%.1fs after the restore", hr.ConvergedS)
		if hr.ConvergedS < 0 {
			conv = fmt.Sprintf("not within %s of the restore", hpWaitMax)
		}
		row(p+": revoked workspace", fmt.Sprintf("fold == membership %s; its first 2xx %.1fs after it, then %d 2xx of %.1f members on average (%d events, %d 401s; parking topic %d records; %.0f replans)",
			conv, hr.FirstOKS, hr.AfterRequests, hr.AfterMeanMembers, hr.RevokedEvts, hr.Revoked401, hr.MaxParked, hr.Replans))
		for _, f := range sortedWorkspaces(hr.Others) {
			row(fmt.Sprintf("(h') %d %s: %s, budget %d/min", hr.Replicas, hr.Restore, f.Workspace, f.Budget),
				fmt.Sprintf("%.3f of it during the revocation; %d requests, %d 429s", f.PerMinOverBudget, f.Requests, f.Rejected429))
		}
	}
	if x := r.RevokedRSS; x != nil {
		row("(h') 1 M parked: peak RSS while parked", fmt.Sprintf("%.1f MiB (%d changes; parking topic %d records; parked gauge %.0f records; parked %.1fs after produce)",
			x.PeakRSSParkedMiB, x.ParkedChanges, x.ParkingRecords, x.ParkedGauge, x.ParkedAfterSeconds))
		row("(h') 1 M parked: peak RSS delivering", fmt.Sprintf("%.1f MiB VmHWM, max VmRSS %.1f MiB; all %d delivered %.1fs after the registry fix",
			x.PeakRSSMiB, x.MaxRSSDeliveryMiB, x.MembersAfterwards, x.DeliveredSeconds))
	}
}
