package integration

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
)

// explainDiff describes, for a failed convergence of workspace ws, where
// the first differing member's changes went: its events in the input
// topic, its records in the parking topic, the requests that carried it,
// the group's commits, and what each live replica reports of the workspace.
// It reads; it asserts nothing.
func explainDiff(t *testing.T, a *api, topic, group, ws string, want, got model, replicas []*worker) string {
	t.Helper()
	var b strings.Builder
	perCohort := map[string][2]int{}
	type member struct{ cohort, uid string }
	var first *member
	for _, k := range slices.SortedFunc(maps.Keys(keysOf(want, got)), func(x, y cohortKey) int { return cmp.Compare(x.id, y.id) }) {
		c := perCohort[k.id]
		for _, u := range slices.Sorted(maps.Keys(want[k])) {
			if !got[k][u] {
				c[0]++
				if first == nil {
					first = &member{k.id, u}
				}
			}
		}
		for _, u := range slices.Sorted(maps.Keys(got[k])) {
			if !want[k][u] {
				c[1]++
				if first == nil {
					first = &member{k.id, u}
				}
			}
		}
		if c != [2]int{} {
			perCohort[k.id] = c
		}
	}
	fmt.Fprintf(&b, "workspace %s: differences by cohort (missing, extra): %v\n", ws, perCohort)
	if first == nil {
		return b.String()
	}
	fmt.Fprintf(&b, "first: %s %s\n", first.cohort, first.uid)
	for _, m := range readAll(t, topic) {
		ev, err := event.Decode(m.Value, "")
		if err != nil || cmp.Or(ev.Workspace, workspace) != ws || ev.CohortID != first.cohort || !slices.Contains(ev.UIDs, first.uid) {
			continue
		}
		fmt.Fprintf(&b, "  event %d/%d at %s: %s %v\n", m.Partition, m.Offset, m.Time.Format(time.RFC3339Nano), ev.Action, ev.UIDs)
	}
	for _, m := range readAll(t, group+".parked") {
		if !strings.Contains(string(m.Value), first.uid) || !strings.Contains(string(m.Value), first.cohort) {
			continue
		}
		var hs []string
		for _, h := range m.Headers {
			hs = append(hs, h.Key+"="+string(h.Value))
		}
		fmt.Fprintf(&b, "  parked %d/%d at %s: %s %v\n", m.Partition, m.Offset, m.Time.Format(time.RFC3339Nano), m.Value, hs)
	}
	for _, r := range a.Requests() {
		if r.Workspace != ws || r.CohortID != first.cohort || !slices.Contains(r.Members, first.uid) {
			continue
		}
		fmt.Fprintf(&b, "  request %d at %s from %s: %s (%d members) status %d fault %q applied %v\n",
			r.Seq, r.Time.Format(time.RFC3339Nano), r.Replica, r.Action, len(r.Members), r.Status, r.Fault, r.Applied)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tp := range []string{topic, group + ".parked"} {
		ends, committed, err := offsets(ctx, tp, group)
		fmt.Fprintf(&b, "  %s: ends %v committed %v %v\n", tp, ends, committed, err)
	}
	explainParking(ctx, t, &b, group, ws)
	for _, w := range replicas {
		m, err := rig.Scrape(ctx, "http://"+w.addr+"/metrics")
		if err != nil {
			fmt.Fprintf(&b, "  %s: %v\n", w.name, err)
			continue
		}
		var ss []string
		for _, name := range []string{"cohortsync_parked_changes", "cohortsync_workspace_stopped", "cohortsync_workspace_blocked"} {
			for _, s := range m.Samples(name) {
				if s.Labels["workspace"] == ws && s.Value != 0 {
					ss = append(ss, fmt.Sprintf("%s%v=%g", name, s.Labels, s.Value))
				}
			}
		}
		fmt.Fprintf(&b, "  %s: %v\n", w.name, ss)
	}
	dumpGoroutines(t, &b, replicas)
	return b.String()
}

// explainParking writes the parking partitions' committed state and, for
// each, the records past its committed offset in runs of (workspace,
// writer generation); those of ws are the ones that should flow.
func explainParking(ctx context.Context, t *testing.T, b *strings.Builder, group, ws string) {
	t.Helper()
	topic := parkio.TopicName(group)
	ends, _, err := offsets(ctx, topic, group)
	if err != nil {
		fmt.Fprintf(b, "  %s: %v\n", topic, err)
		return
	}
	commits, err := parkio.Committed(ctx, parkio.Config{Brokers: []string{brokerAddr}, Topic: topic}, group, len(ends))
	if err != nil {
		fmt.Fprintf(b, "  %s commits: %v\n", topic, err)
		return
	}
	for k, c := range commits {
		fmt.Fprintf(b, "  %s/%d: end %d, commit %+v\n", topic, k, ends[k], c)
		if c.Offset < 0 || c.Offset >= ends[k] {
			continue
		}
		type run struct {
			from, to int64
			what     string
		}
		var runs []run
		for _, m := range readPartition(ctx, t, topic, k, ends[k]) {
			if m.Offset < c.Offset {
				continue
			}
			rec, err := parkio.Decode(m)
			what := fmt.Sprintf("%s g%d", rec.Workspace, rec.Generation)
			switch {
			case err != nil:
				what = "undecodable: " + err.Error()
			case rec.Marker:
				what = fmt.Sprintf("marker g%d", rec.Generation)
			}
			if n := len(runs); n > 0 && runs[n-1].what == what {
				runs[n-1].to = m.Offset
				continue
			}
			runs = append(runs, run{m.Offset, m.Offset, what})
		}
		for i, r := range runs {
			if i == 40 {
				fmt.Fprintf(b, "    … %d more runs\n", len(runs)-i)
				break
			}
			fmt.Fprintf(b, "    [%d, %d] %s\n", r.from, r.to, r.what)
		}
	}
}

// dumpGoroutines ends every live replica with SIGQUIT and writes its whole
// output, goroutine dump included, to a file named in b (the test's log
// keeps only a tail).
func dumpGoroutines(t *testing.T, b *strings.Builder, replicas []*worker) {
	t.Helper()
	dir, err := os.MkdirTemp("", "cohortsync-dump-")
	if err != nil {
		fmt.Fprintf(b, "  goroutine dumps: %v\n", err)
		return
	}
	for _, w := range replicas {
		if w.exited {
			continue
		}
		_ = w.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			w.kill()
		}
		w.exited = true
		f := filepath.Join(dir, w.name+".log")
		if err := os.WriteFile(f, []byte(w.out.String()), 0o644); err != nil {
			fmt.Fprintf(b, "  %s: %v\n", w.name, err)
			continue
		}
		fmt.Fprintf(b, "  %s: output and goroutine dump in %s\n", w.name, f)
	}
}

// keysOf is the union of the cohorts of two models.
func keysOf(x, y model) map[cohortKey]bool {
	out := map[cohortKey]bool{}
	for k := range x {
		out[k] = true
	}
	for k := range y {
		out[k] = true
	}
	return out
}
