package main

// Phase (h'): (h) with one workspace's key revoked for 2 minutes mid-run
// (issue 21, "Measure"; DESIGN.md invariant 8). The set-up is (h)'s: 20
// workspaces with budgets of 60 and 120/min in turn, a uniform backlog of
// the other 19, small bodies, 1 and 3 in-process replicas. The revoked
// workspace, ws0019 (120/min), has a bounded set of changes of its own, so
// that its convergence can be checked against the fold of its events: 1,000
// events produced before the backlog, and 12 chunks of 400 produced during
// the revocation (one every 10 s), which the worker reads and parks.
//
// The key comes back in one of two ways:
//   - "probe": the emulator's RestoreKey, and the worker finds out by its
//     own probe of the blocked workspace (sink/blocked.go: AuthRetryInterval,
//     30 s, doubling: after 2 minutes of refusals the pause is 120 s, so the
//     probe that sees the key again may come up to that long after it);
//   - "registry": the operator's fix, a new key in the emulator and then in
//     the registry's key file (TargetsChanged ends the hold at once).
//
// Figures: each other workspace's requests/min during the revocation ÷ its
// budget; the largest consumer-group lag over the source topic during the
// revocation, and the longest time a source partition with lag went without
// a commit; the parking topic's records; and how long after the restore the
// revoked workspace's membership in the emulator equals the fold of its
// events. The RSS sub-run (1 M changes parked) is in workspaces_parked_rss.go.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

const (
	hpRevoked    = wsCount - 1 // ws0019, budget 120/min
	hpBefore     = 30 * time.Second
	hpRevocation = 2 * time.Minute
	hpConverge   = 60 * time.Second  // the target: converged within this of the restore
	hpWaitMax    = 240 * time.Second // how long a run waits for convergence after the restore
	// hpGapBound bounds a lagging source partition's time without a commit
	// during the revocation: half of it. A revoked workspace that held
	// back the others' commits would stop a partition for the whole
	// revocation. Below that, gaps come from the backlog itself: a
	// partition's commit moves when the oldest change in it is accepted,
	// and each workspace sends its cohorts in turn (12 per workspace at 1
	// replica, at 59/min: about 12 s a round), so gaps of 8–27 s occur with
	// no revocation and no replan (the figure printed as "before"), and a
	// replan, which re-reads from the last commit, adds to one. The first
	// bound, 30 s, was below what the backlog alone gives.
	hpGapBound = hpRevocation / 2
	hpChunks   = 12 // chunks of the revoked workspace's events during the revocation
	hpChunk    = 400
	hpFirst    = 1000 // its events before the backlog
	hpUIDPool  = 3000 // its uids: a small pool, so that removes and re-adds make order matter
)

type hpResult struct {
	Replicas int    `json:"replicas"`
	Restore  string `json:"restore"` // "probe" (RestoreKey) or "registry" (new key in the emulator and the key file)
	// Others: each other workspace's requests during the revocation.
	Others []wsFigure `json:"others_during_revocation"`
	MinUse float64    `json:"min_requests_per_min_over_budget"`
	// Lag over the source topic: at the revocation, the largest during
	// it, the records produced during it, and the longest time any
	// partition with lag went without a commit during it.
	LagAtRevoke  int64   `json:"lag_at_revocation"`
	MaxLag       int64   `json:"max_lag_during_revocation"`
	Produced     int     `json:"records_produced_during_revocation"`
	MaxNoCommitS float64 `json:"max_seconds_without_commit"`
	// MaxNoCommitBeforeS is the same from the first request to the
	// revocation: the backlog's own commit cadence.
	MaxNoCommitBeforeS float64 `json:"max_seconds_without_commit_before_revocation"`
	MaxParked          int64   `json:"max_parking_topic_records"`
	Revoked401         int     `json:"revoked_answered_401"`
	RevokedEvts        int     `json:"revoked_events"`
	// ConvergedS: seconds from the restore to membership == fold; -1: not
	// within hpWaitMax.
	ConvergedS float64 `json:"converged_seconds_after_restore"`
	// FirstOKS: seconds from the restore to the revoked workspace's first
	// 2xx (the worker found out); -1: none.
	FirstOKS float64 `json:"first_2xx_seconds_after_restore"`
	// The revoked workspace's 2xx from the restore to the end of the run,
	// and their mean members (how the parked changes were delivered).
	AfterRequests    int     `json:"revoked_2xx_after_restore"`
	AfterMeanMembers float64 `json:"revoked_mean_members_after_restore"`
	// Replans: cohortsync_replans_total over the replicas at the end.
	Replans float64 `json:"replans"`
}

// phaseHPrime runs (h'): with the probe for 1 and 3 replicas, and with the
// registry fix for 1 (the probe's pause has doubled past 60 s by then).
func (b *bench) phaseHPrime(ctx context.Context) error {
	for _, r := range []struct {
		replicas int
		restore  string
	}{{1, "probe"}, {1, "registry"}, {3, "probe"}} {
		if !b.hprimeSelected(r.replicas, r.restore) {
			continue
		}
		hr, err := b.hprimeRun(ctx, r.replicas, r.restore)
		if err != nil {
			return err
		}
		b.res.Revoked = append(b.res.Revoked, *hr)
		b.hprimeTargets(hr)
	}
	if b.hprimeSelected(1, "rss") {
		return b.phaseHPrimeRSS(ctx)
	}
	return nil
}

// hprimeSelected reports whether -hprime-runs names the sub-run.
func (b *bench) hprimeSelected(replicas int, what string) bool {
	return slices.Contains(splitList(b.o.hprimeRuns), fmt.Sprintf("%d/%s", replicas, what)) ||
		(what == "rss" && slices.Contains(splitList(b.o.hprimeRuns), "rss"))
}

func (b *bench) hprimeTargets(hr *hpResult) {
	conv := fmt.Sprintf("%.1fs", hr.ConvergedS)
	if hr.ConvergedS < 0 {
		conv = fmt.Sprintf("not within %s", hpWaitMax)
	}
	b.say("(h') %d replica(s), restore by %s: others' lowest use %.3f, lag %d at the revocation, max %d (+%d produced), longest without a commit %.1fs (%.1fs before the revocation), parked %d records, first 2xx %.1fs after the restore (then %d 2xx of %.1f members on average), %.0f replans, converged %s",
		hr.Replicas, hr.Restore, hr.MinUse, hr.LagAtRevoke, hr.MaxLag, hr.Produced, hr.MaxNoCommitS, hr.MaxNoCommitBeforeS, hr.MaxParked, hr.FirstOKS,
		hr.AfterRequests, hr.AfterMeanMembers, hr.Replans, conv)
	k := fmt.Sprintf("h'/%d %s", hr.Replicas, hr.Restore)
	b.res.Targets[k+" use"] = verdict{"others >= 0.9 of each budget", fmt.Sprintf("lowest %.3f", hr.MinUse), hr.MinUse >= 0.9}
	b.res.Targets[k+" lag"] = verdict{fmt.Sprintf("no commit gap > %s; lag <= start+produced", hpGapBound),
		fmt.Sprintf("%.1fs (before: %.1fs); %d <= %d+%d", hr.MaxNoCommitS, hr.MaxNoCommitBeforeS, hr.MaxLag, hr.LagAtRevoke, hr.Produced),
		hr.MaxNoCommitS <= hpGapBound.Seconds() && hr.MaxLag <= hr.LagAtRevoke+int64(hr.Produced)}
	b.res.Targets[k+" converge"] = verdict{fmt.Sprintf("<= %s after the restore", hpConverge), conv,
		hr.ConvergedS >= 0 && hr.ConvergedS <= hpConverge.Seconds()}
}

// hprimeRun runs one (h') sub-run.
func (b *bench) hprimeRun(ctx context.Context, replicas int, restore string) (*hpResult, error) {
	topic := fmt.Sprintf("bench-hp%d%s-%d", replicas, restore, time.Now().Unix())
	group := "bench-hp-" + topic
	revoked := wsID(hpRevoked)
	rev := newRevokedEvents(revoked, uint64(replicas)+40)
	w := &kafka.Writer{Addr: kafka.TCP(b.brokers...), Topic: topic, Balancer: &kafka.Hash{},
		BatchSize: 1000, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireOne}
	defer w.Close()
	dir, a, cfg, err := b.hprimeSetup(ctx, topic, group, w, rev)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	defer a.Close()
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
	first, err := firstRequest(ctx, a)
	if err != nil {
		return nil, err
	}
	revokeAt, restoreAt := first.Add(hpBefore), first.Add(hpBefore+hpRevocation)
	lagc := b.watchLag(ctx, topic, group, revokeAt, restoreAt)
	if err := sleepUntil(ctx, revokeAt); err != nil {
		return nil, err
	}
	b.say("(h') %d replica(s): revoking %s's key for %s…", replicas, revoked, hpRevocation)
	if err := a.RevokeKey(revoked); err != nil {
		return nil, err
	}
	produced, err := rev.produceDuring(ctx, w, revokeAt)
	if err != nil {
		return nil, err
	}
	if err := sleepUntil(ctx, restoreAt); err != nil {
		return nil, err
	}
	if err := restoreKey(a, dir, revoked, restore, wsBudget(hpRevoked)); err != nil {
		return nil, err
	}
	hr := &hpResult{Replicas: replicas, Restore: restore, Produced: produced, RevokedEvts: len(rev.events)}
	hr.ConvergedS = rev.converge(ctx, a, restoreAt)
	for _, w := range ws {
		if m, err := rig.Gather(w.reg); err == nil {
			hr.Replans += m.Sum("cohortsync_replans_total")
		}
	}
	lw := <-lagc
	hr.LagAtRevoke, hr.MaxLag, hr.MaxNoCommitS, hr.MaxParked = lw.atStart, lw.maxLag, lw.maxGap.Seconds(), lw.maxParked
	hr.MaxNoCommitBeforeS = lw.maxGapBefore.Seconds()
	hprimeFigures(hr, a.Requests(), revokeAt, restoreAt)
	return hr, nil
}

// hprimeSetup creates the topic, produces the revoked workspace's first
// events and then the others' backlog, and starts the emulator (keeping
// membership) over (h)'s registry. It returns the registry directory, the
// emulator and the workers' configuration.
func (b *bench) hprimeSetup(ctx context.Context, topic, group string, w *kafka.Writer, rev *revokedEvents) (string, *rig.API, config.Config, error) {
	o := b.o
	if err := b.admin.CreateTopics(ctx, o.partitions, topic, topic+".dlq"); err != nil {
		return "", nil, config.Config{}, err
	}
	if err := rev.produce(ctx, w, hpFirst); err != nil {
		return "", nil, config.Config{}, err
	}
	var others []string
	budget := 0
	for i := range wsCount {
		if i != hpRevoked {
			others, budget = append(others, wsID(i)), budget+wsBudget(i)
		}
	}
	// Enough full bodies at every budget until 30 s past the restore, with
	// 25% to spare (as (h)).
	run := hpBefore + hpRevocation + 30*time.Second
	events := int(float64(budget)*run.Minutes()*float64(wsMaxBytes)/19*1.25) + 1
	b.say("(h') producing %d events of %d workspaces, and %d of %s…", events, len(others), hpFirst, wsID(hpRevoked))
	if err := produceWS(ctx, b.brokers, topic, events, others, rev.cohorts, 60); err != nil {
		return "", nil, config.Config{}, err
	}
	dir, a, err := workspacesFixture(wsCount, wsBudget, true)
	if err != nil {
		return "", nil, config.Config{}, err
	}
	cfg := workerConfig(b.brokers, topic, group, a.URL)
	cfg.MoEngageWorkspaceID, cfg.MoEngageDataAPIKey, cfg.MoEngageWorkspacesDir = wsID(0), config.NewSecret(""), dir
	cfg.RateLimitRPM, cfg.BatchMaxBytes = 60, wsMaxBytes
	return dir, a, cfg, nil
}

// restoreKey gives workspace id its key back: "probe", the emulator's
// RestoreKey alone; "registry", a new key in the emulator (with rateLimit),
// then in its key file (written aside and renamed in, as an atomic update).
func restoreKey(a *rig.API, dir, id, how string, rateLimit int) error {
	if how == "probe" {
		return a.RestoreKey(id)
	}
	key := "key-" + id + "-fixed"
	if err := a.AddWorkspace(id, emulator.Workspace{Key: key, RateLimit: rateLimit}); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(dir), "key-")
	if err != nil {
		return err
	}
	if _, err := f.WriteString(key); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, id+".key"))
}

// hprimeFigures fills hr's figures from the request log: each other
// workspace's requests in [from, to) ÷ its budget, and the revoked
// workspace's 401s.
func hprimeFigures(hr *hpResult, recs []emulator.RequestRecord, from, to time.Time) {
	count, r429 := map[string]int{}, map[string]int{}
	hr.FirstOKS = -1
	for _, r := range recs {
		if r.Workspace == wsID(hpRevoked) && r.Status == 401 {
			hr.Revoked401++
		}
		if r.Workspace == wsID(hpRevoked) && r.Status/100 == 2 && !r.Time.Before(to) {
			if hr.FirstOKS < 0 {
				hr.FirstOKS = r.Time.Sub(to).Seconds()
			}
			hr.AfterRequests++
			hr.AfterMeanMembers += float64(len(r.Members))
		}
		if r.Time.Before(from) || !r.Time.Before(to) {
			continue
		}
		count[r.Workspace]++
		if r.Status == 429 {
			r429[r.Workspace]++
		}
	}
	if hr.AfterRequests > 0 {
		hr.AfterMeanMembers /= float64(hr.AfterRequests)
	}
	hr.MinUse = -1
	for i := range wsCount {
		if i == hpRevoked {
			continue
		}
		id, budget := wsID(i), wsBudget(i)
		f := wsFigure{Workspace: id, Budget: budget, Requests: count[id], Rejected429: r429[id],
			PerMinOverBudget: float64(count[id]) / to.Sub(from).Minutes() / float64(budget)}
		hr.Others = append(hr.Others, f)
		if hr.MinUse < 0 || f.PerMinOverBudget < hr.MinUse {
			hr.MinUse = f.PerMinOverBudget
		}
	}
}

// revokedEvents are the revoked workspace's events, in the order produced
// (keyed by cohort, so each cohort's are in one partition in this order).
type revokedEvents struct {
	id      string
	cohorts []string
	rng     *rand.Rand
	pool    []string
	events  []event.Event
}

func newRevokedEvents(id string, seed uint64) *revokedEvents {
	r := &revokedEvents{id: id, cohorts: balancedCohortIDs(6, 6), rng: rand.New(rand.NewPCG(seed, 19))}
	for range hpUIDPool {
		r.pool = append(r.pool, uid(r.rng))
	}
	return r
}

// produce writes n more events of the workspace (70% adds), one uid each.
func (r *revokedEvents) produce(ctx context.Context, w *kafka.Writer, n int) error {
	msgs := make([]kafka.Message, 0, n)
	for range n {
		id := r.cohorts[r.rng.IntN(len(r.cohorts))]
		ev := event.Event{Action: event.Add, Partner: "bench", CohortID: id, CohortName: "Bench_" + id,
			UIDs: []string{r.pool[r.rng.IntN(len(r.pool))]}, Workspace: r.id}
		if r.rng.Float64() >= 0.7 {
			ev.Action = event.Remove
		}
		r.events = append(r.events, ev)
		msgs = append(msgs, kafka.Message{Key: []byte(id), Value: event.Encode(ev)})
	}
	return w.WriteMessages(ctx, msgs...)
}

// produceDuring writes hpChunks chunks of hpChunk events, one every
// hpRevocation/hpChunks from start, and returns how many it wrote.
func (r *revokedEvents) produceDuring(ctx context.Context, w *kafka.Writer, start time.Time) (int, error) {
	for i := range hpChunks {
		if err := sleepUntil(ctx, start.Add(time.Duration(i)*hpRevocation/hpChunks)); err != nil {
			return 0, err
		}
		if err := r.produce(ctx, w, hpChunk); err != nil {
			return 0, err
		}
	}
	return hpChunks * hpChunk, nil
}

// fold is the membership the events make, per cohort (sorted uids).
func (r *revokedEvents) fold() map[string][]string {
	state := map[string]map[string]bool{}
	for _, ev := range r.events {
		if state[ev.CohortID] == nil {
			state[ev.CohortID] = map[string]bool{}
		}
		for _, u := range ev.UIDs {
			state[ev.CohortID][u] = ev.Action == event.Add
		}
	}
	out := map[string][]string{}
	for c, m := range state {
		for u, in := range m {
			if in {
				out[c] = append(out[c], u)
			}
		}
		slices.Sort(out[c])
	}
	return out
}

// converge waits up to hpWaitMax from restored for the emulator's
// membership of every cohort of the workspace to equal the fold, and
// returns the seconds it took (-1: it did not).
func (r *revokedEvents) converge(ctx context.Context, a *rig.API, restored time.Time) float64 {
	want := r.fold()
	for time.Since(restored) < hpWaitMax && ctx.Err() == nil {
		same := true
		for _, c := range r.cohorts {
			if got := a.Members(r.id, "bench", c); len(got) != len(want[c]) || !slices.Equal(got, want[c]) {
				same = false
				break
			}
		}
		if same {
			return time.Since(restored).Seconds()
		}
		time.Sleep(250 * time.Millisecond)
	}
	return -1
}

type lagWatch struct {
	atStart int64
	maxLag  int64
	maxGap  time.Duration
	// maxGapBefore is maxGap over the polls before from.
	maxGapBefore time.Duration
	maxParked    int64
	from         time.Time
	last         map[int]int64     // each partition's committed offset at the last poll
	moved        map[int]time.Time // when it last moved (or was first seen)
}

func newLagWatch(from time.Time) *lagWatch {
	return &lagWatch{atStart: -1, from: from, last: map[int]int64{}, moved: map[int]time.Time{}}
}

// observe takes one poll at now of the end and committed offsets (-1:
// none) of every partition; only polls from lw.from on count.
func (lw *lagWatch) observe(now time.Time, ends, committed map[int]int64) {
	counts := !now.Before(lw.from)
	var lag int64
	for p, end := range ends {
		c := max(committed[p], 0)
		if c != lw.last[p] || lw.moved[p].IsZero() {
			lw.last[p], lw.moved[p] = c, now
		}
		lag += max(end-c, 0)
		if end > c && counts {
			lw.maxGap = max(lw.maxGap, now.Sub(lw.moved[p]))
		} else if end > c {
			lw.maxGapBefore = max(lw.maxGapBefore, now.Sub(lw.moved[p]))
		}
	}
	if counts {
		if lw.atStart < 0 {
			lw.atStart = lag
		}
		lw.maxLag = max(lw.maxLag, lag)
	}
}

// watchLag polls the group's offsets over topic every second from now to
// until, and sends what it saw from from on (lagWatch.observe): the lag at
// from, the largest lag, the longest time a partition with lag went
// without its committed offset moving, and the most records in the
// parking topic.
func (b *bench) watchLag(ctx context.Context, topic, group string, from, until time.Time) <-chan lagWatch {
	out := make(chan lagWatch, 1)
	go func() {
		lw := newLagWatch(from)
		for now := time.Now(); now.Before(until) && ctx.Err() == nil; now = time.Now() {
			if ends, committed, err := b.admin.Offsets(ctx, topic, group); err == nil {
				lw.observe(now, ends, committed)
			}
			lw.maxParked = max(lw.maxParked, b.topicRecords(ctx, group+".parked"))
			time.Sleep(time.Second)
		}
		out <- *lw
	}()
	return out
}

// topicRecords is the sum of topic's end offsets (0 while it is missing).
func (b *bench) topicRecords(ctx context.Context, topic string) int64 {
	parts, err := b.admin.Partitions(ctx, topic)
	if err != nil {
		return 0
	}
	ends, err := b.admin.EndOffsets(ctx, topic, parts)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range ends {
		n += e
	}
	return n
}
