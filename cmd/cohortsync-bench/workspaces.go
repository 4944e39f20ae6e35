package main

// Phases (h) and (h''): many workspaces, each with a budget of its own
// (issue 21). (h'), the same with a key revoked, is workspaces_parked.go.
//
//	h.   20 workspaces, budgets 60 and 120/min in turn, a uniform backlog,
//	     1 and 3 in-process replicas: each workspace's requests/min (from
//	     its first request) ÷ its budget, its busiest 60 s, and the packing,
//	     the same figures as (c) (rateFigures).
//	h''. 1,000 workspaces in the registry, 200 of them with changes, 3
//	     worker processes: each one's peak RSS and CPU, and the time a full
//	     load of a 1,000-workspace directory takes (workspace.Open).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

const (
	wsCount    = 20   // (h)
	wsMaxBytes = 2048 // (h): small bodies, so that a few minutes need a small backlog
	// MAX_IN_FLIGHT of (h) and (h'') is the default: the batcher's slots
	// are per workspace and the sink's are taken after the permit
	// (DESIGN.md Non-obvious 16).
)

// wsBudget is the budget of (h)'s workspace i: 60 and 120 in turn.
func wsBudget(i int) int { return 60 * (1 + i%2) }

func wsID(i int) string { return fmt.Sprintf("ws%04d", i) }

type wsFigure struct {
	Workspace        string  `json:"workspace"`
	Budget           int     `json:"budget"`
	Requests         int     `json:"requests"`
	PerMinOverBudget float64 `json:"requests_per_min_over_budget"`
	Busiest60s       int     `json:"busiest_60s_window"`
	Rejected429      int     `json:"answered_429"`
}

type wsResult struct {
	rateResult
	Workspaces []wsFigure `json:"workspaces"`
	// The worst workspace: the lowest use, the highest busiest-60 s ÷ budget.
	MinUse     float64 `json:"min_requests_per_min_over_budget"`
	MaxBusiest float64 `json:"max_busiest_60s_over_budget"`
}

// phaseH runs (h) with one replica and with three.
func (b *bench) phaseH(ctx context.Context) error {
	for _, replicas := range []int{1, 3} {
		wr, err := b.workspacesRun(ctx, replicas)
		if err != nil {
			return err
		}
		b.res.Workspaces = append(b.res.Workspaces, *wr)
		b.say("(h) %d replica(s), %d workspaces: lowest use %.3f of a budget, highest busiest 60 s %.3f of a budget, packing %.3f, 429s %d",
			replicas, wsCount, wr.MinUse, wr.MaxBusiest, wr.Packing, wr.Rejected429)
		k := fmt.Sprintf("h/%d", replicas)
		b.res.Targets[k+" use"] = verdict{">= 0.9 of each budget", fmt.Sprintf("lowest %.3f", wr.MinUse), wr.MinUse >= 0.9}
		b.res.Targets[k+" window"] = verdict{"each busiest 60 s <= its budget", fmt.Sprintf("highest %.3f", wr.MaxBusiest), wr.MaxBusiest <= 1}
		b.res.Targets[k+" packing"] = verdict{">= 0.97", fmt.Sprintf("%.3f", wr.Packing), wr.Packing >= 0.97}
	}
	return nil
}

// workspacesRun runs (h) with replicas in-process workers for o.shareRun.
func (b *bench) workspacesRun(ctx context.Context, replicas int) (*wsResult, error) {
	o := b.o
	topic := fmt.Sprintf("bench-ws%d-%d", replicas, time.Now().Unix())
	if err := b.admin.CreateTopics(ctx, o.partitions, topic, topic+".dlq"); err != nil {
		return nil, err
	}
	ids, total := make([]string, wsCount), 0
	for i := range ids {
		ids[i] = wsID(i)
		total += wsBudget(i)
	}
	// Enough full bodies for the whole run at every budget, with 25% to spare.
	events := int(float64(total)*o.shareRun.Minutes()*float64(wsMaxBytes)/19*1.25) + 1
	if err := produceWS(ctx, b.brokers, topic, events, ids, balancedCohortIDs(o.partitions, o.partitions), uint64(replicas)+20); err != nil {
		return nil, err
	}
	dir, a, err := workspacesFixture(wsCount, wsBudget, false)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	defer a.Close()
	cfg := workerConfig(b.brokers, topic, "bench-ws-"+topic, a.URL)
	cfg.MoEngageWorkspaceID, cfg.MoEngageDataAPIKey, cfg.MoEngageWorkspacesDir = ids[0], config.NewSecret(""), dir
	cfg.RateLimitRPM, cfg.BatchMaxBytes = 60, wsMaxBytes
	var ws []*inproc
	for i := range replicas {
		ws = append(ws, startWorker(ctx, cfg, fmt.Sprint("r", i), b.log))
	}
	defer func() {
		for _, w := range ws {
			w.Cancel()
		}
		for _, w := range ws {
			_ = w.Stop()
		}
	}()
	b.say("(h) %d replica(s), %d workspaces, over a backlog of %d events for %s…", replicas, wsCount, events, o.shareRun)
	first, err := firstRequest(ctx, a)
	if err != nil {
		return nil, err
	}
	end := first.Add(o.shareRun)
	if err := sleepUntil(ctx, end); err != nil {
		return nil, err
	}
	var in []emulator.RequestRecord
	for _, r := range a.Requests() {
		if r.Time.Before(end) {
			in = append(in, r)
		}
	}
	return wsFigures(in, replicas, end, cfg.BatchMaxBytes), nil
}

// wsFigures sums up the requests in of a run that ended at end: (c)'s
// figures over all of them, and each workspace's from its first request.
func wsFigures(in []emulator.RequestRecord, replicas int, end time.Time, batchMaxBytes int) *wsResult {
	byWS := map[string][]emulator.RequestRecord{}
	for _, r := range in {
		byWS[r.Workspace] = append(byWS[r.Workspace], r)
	}
	d := end.Sub(in[0].Time)
	wr := &wsResult{rateResult: *rateFigures(in, replicas, d, batchMaxBytes), MinUse: -1}
	for i := range wsCount {
		id, budget := wsID(i), wsBudget(i)
		f := wsFigure{Workspace: id, Budget: budget}
		if rs := byWS[id]; len(rs) > 0 {
			fig := rateFigures(rs, replicas, end.Sub(rs[0].Time), batchMaxBytes)
			f.Requests, f.Busiest60s, f.Rejected429 = fig.Requests, fig.Busiest60s, fig.Rejected429
			f.PerMinOverBudget = float64(len(rs)) / end.Sub(rs[0].Time).Minutes() / float64(budget)
		}
		wr.Workspaces = append(wr.Workspaces, f)
		if wr.MinUse < 0 || f.PerMinOverBudget < wr.MinUse {
			wr.MinUse = f.PerMinOverBudget
		}
		wr.MaxBusiest = max(wr.MaxBusiest, float64(f.Busiest60s)/float64(budget))
	}
	wr.PerMinOverRPM = 0 // (c)'s ÷ 300 means nothing here: each workspace has its own budget
	return wr
}

// workspacesFixture writes a registry of n workspaces (wsID(i).key,
// .rate_limit_rpm budget(i)) and starts an emulator that serves them, each
// enforcing its budget, keeping segment membership only if keep.
func workspacesFixture(n int, budget func(int) int, keep bool) (string, *rig.API, error) {
	dir, err := os.MkdirTemp("", "cohortsync-bench-ws-")
	if err != nil {
		return "", nil, err
	}
	cfg := emulator.DefaultConfig()
	cfg.DiscardMembers = !keep
	cfg.RequestLogMaxMembers = -1
	cfg.Workspaces = map[string]emulator.Workspace{}
	for i := range n {
		id, key := wsID(i), fmt.Sprintf("key-%04d", i)
		cfg.Workspaces[id] = emulator.Workspace{Key: key, RateLimit: budget(i)}
		for name, v := range map[string]string{id + ".key": key, id + ".rate_limit_rpm": fmt.Sprint(budget(i))} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
				os.RemoveAll(dir)
				return "", nil, err
			}
		}
	}
	a, err := rig.ServeAPI(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, a, nil
}

// produceWS writes n events as produce does, each naming one of the
// workspaces ws at random (workspace_id), keyed by cohort_id.
func produceWS(ctx context.Context, brokers []string, topic string, n int, ws, ids []string, seed uint64) error {
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		BatchSize: 5000, BatchBytes: 4 << 20, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireOne,
		Compression: kafka.Lz4}
	defer w.Close()
	const workers = 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := range workers {
		count := n / workers
		if g == workers-1 {
			count = n - n/workers*(workers-1)
		}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			msgs := make([]kafka.Message, 0, 5000)
			for i := range count {
				id := ids[rng.IntN(len(ids))]
				ev := event.Event{Action: event.Add, Partner: "bench", CohortID: id, CohortName: "Bench_" + id,
					UIDs: []string{uid(rng)}, Workspace: ws[rng.IntN(len(ws))]}
				if rng.Float64() >= 0.7 {
					ev.Action = event.Remove
				}
				msgs = append(msgs, kafka.Message{Key: []byte(ev.CohortID), Value: event.Encode(ev)})
				if len(msgs) == cap(msgs) || i == count-1 {
					if err := w.WriteMessages(ctx, msgs...); err != nil {
						errs <- err
						return
					}
					msgs = msgs[:0]
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// sortedWorkspaces returns the workspaces of rs, sorted (for the table).
func sortedWorkspaces(fs []wsFigure) []wsFigure {
	out := slices.Clone(fs)
	sort.Slice(out, func(i, j int) bool { return out[i].Workspace < out[j].Workspace })
	return out
}

// printWorkspaces adds the rows of (h) and (h″) to the table.
func printWorkspaces(row func(k, v string), r *results) {
	for _, wr := range r.Workspaces {
		p := fmt.Sprintf("(h) %d replica(s), %d workspaces", wr.Replicas, len(wr.Workspaces))
		row(p+": requests", fmt.Sprintf("%d in %.0fs (429s: %d)", wr.Requests, wr.Seconds, wr.Rejected429))
		row(p+": req/min ÷ budget", fmt.Sprintf("lowest %.3f; busiest 60 s ÷ budget: highest %.3f", wr.MinUse, wr.MaxBusiest))
		row(p+": packing", fmt.Sprintf("%.3f (mean body %.0f of %d bytes)", wr.Packing, wr.MeanBodyBytes, wsMaxBytes))
		for _, f := range sortedWorkspaces(wr.Workspaces) {
			row(fmt.Sprintf("(h) %d: %s, budget %d/min", wr.Replicas, f.Workspace, f.Budget),
				fmt.Sprintf("%.3f of it; busiest 60 s %d; %d requests, %d 429s", f.PerMinOverBudget, f.Busiest60s, f.Requests, f.Rejected429))
		}
	}
	printRevoked(row, r)
	if m := r.ManyWorkspaces; m != nil {
		p := fmt.Sprintf("(h'') %d workspaces, %d active, %d replicas", m.Registry, m.Active, len(m.Replicas))
		for i, rep := range m.Replicas {
			row(fmt.Sprintf("%s: replica %d", p, i), fmt.Sprintf("peak RSS %.1f MiB, CPU %.1f%% of a core (%.1fs in %.0fs), %d requests",
				rep.PeakRSSMiB, rep.CPUPercent, rep.CPUSeconds, m.Seconds, rep.Requests))
		}
		row(p+": registry load", fmt.Sprintf("median %.1f ms of %d (workspace.Open of %d workspaces, %d files)",
			m.ReloadMillis, len(m.ReloadRuns), m.Registry, 2*m.Registry))
	}
}
