package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// pause stops the worker process (SIGSTOP: a VM pause, a stall) until
// resume is called; resume is also registered as a cleanup.
func (w *worker) pause(t *testing.T) (resume func()) {
	t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %s: %v", w.name, err)
	}
	resumed := false
	resume = func() {
		if !resumed {
			resumed = true
			_ = w.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	return resume
}

// joinedAfter reports whether w joined a generation after since that holds
// every one of the topic's partitions.
func (w *worker) joinedAfter(since time.Time, partitions int) bool {
	_, gens := w.generations()
	for _, g := range gens {
		if g.from.After(since) && len(g.parts) == partitions {
			return true
		}
	}
	return false
}

// flipAll produces one event per uid with action, keyed by uid.
func flipAll(t *testing.T, p *producer, cohort string, uids []string, action event.Action) {
	t.Helper()
	evs := make([]event.Event, len(uids))
	for i, u := range uids {
		evs[i] = event.Event{Action: action, Partner: partner, CohortID: cohort,
			CohortName: "IT_Paused", UIDs: []string{u}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.send(ctx, evs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// TestPausedReplica: a replica stopped for longer than the session timeout
// while it holds unsent changes must not send them when it resumes: the
// group has given its partitions to the other replica, which has sent newer
// changes for the same members meanwhile (DESIGN.md invariant 4). Two pause
// points: while the changes wait in open batches (before they are due), and
// while they are being retried through an API outage. Without the lease,
// the resumed replica's timers fire at once and its stale removes land
// after the newer adds.
func TestPausedReplica(t *testing.T) {
	for _, point := range []string{"before_due", "during_retry"} {
		t.Run(point, func(t *testing.T) { testPausedReplica(t, point) })
	}
}

func testPausedReplica(t *testing.T, point string) {
	const partitions = 4
	topic, dlq := newTopic(t, partitions)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	p.byUID = true
	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["RETRY_MAX_INTERVAL"] = "500ms"
	if point == "before_due" {
		env["BATCH_WINDOW"] = "6s" // the removes wait in open batches when the pause starts
	}
	wa := startWorker(t, "a", env)
	wb := startWorker(t, "b", env)
	waitFor(t, time.Minute, "both replicas in one generation", func() bool {
		_, ga := wa.generations()
		_, gb := wb.generations()
		return len(ga) > 0 && len(gb) > 0 && wa.ready() && wb.ready() &&
			len(ga[len(ga)-1].parts) == partitions/2 && len(gb[len(gb)-1].parts) == partitions/2
	})
	replicaB, _ := wb.generations()

	const cohort = "cohort-paused"
	uids := make([]string, 200)
	for i := range uids {
		uids[i] = fmt.Sprintf("p%05d", i)
	}
	// 1. Everyone in, accepted and committed.
	flipAll(t, p, cohort, uids, event.Add)
	waitConverged(t, a, p.model(), time.Minute)
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], time.Minute)

	// 2. Everyone out: b reads its half and holds it (in an open batch, or
	// in a retry loop through an outage) when it is stopped.
	if point == "during_retry" {
		if err := a.SetFaults(emulator.Faults{Outage: true}); err != nil {
			t.Fatal(err)
		}
	}
	flipAll(t, p, cohort, uids, event.Remove)
	waitFor(t, 20*time.Second, "b to read the removes", func() bool {
		return wb.metric("cohortsync_pending_members") > 0
	})
	if point == "during_retry" {
		waitFor(t, 20*time.Second, "b to retry through the outage", func() bool {
			return wb.metric("cohortsync_retries_total") > 0
		})
	} else {
		time.Sleep(500 * time.Millisecond)
	}
	paused := time.Now()
	resume := wb.pause(t)

	// 3. Everyone in again; a takes b's partitions once b's session has
	// expired, reads the removes and the adds again, and sends the adds.
	flipAll(t, p, cohort, uids, event.Add)
	waitFor(t, 60*time.Second, "a to take over every partition", func() bool {
		return wa.joinedAfter(paused, partitions)
	})
	if point == "during_retry" {
		if err := a.SetFaults(emulator.Faults{}); err != nil {
			t.Fatal(err)
		}
	}
	// a has sent and committed everything (it commits only what the API
	// accepted), so the membership is final before b resumes.
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], time.Minute)
	if d := diff(p.model(), a.state()); d != "" {
		t.Fatalf("before b resumes: %s", d)
	}

	// 4. b resumes after far more than the session timeout.
	resumed := time.Now()
	resume()
	t.Logf("b paused for %s", resumed.Sub(paused).Round(time.Millisecond))
	waitFor(t, time.Minute, "b to rejoin the group", func() bool {
		_, gens := wb.generations()
		for _, g := range gens {
			if g.from.After(resumed) {
				return true
			}
		}
		return false
	})
	time.Sleep(3 * time.Second) // b's timers have long fired; any stale send has landed
	if d := diff(p.model(), a.state()); d != "" {
		t.Errorf("after b resumed, the membership differs from the log's fold: %s", d)
	}

	// Fencing, directly: nothing from b between its resumption and its
	// next generation.
	_, gens := wb.generations()
	rejoined := time.Time{}
	for _, g := range gens {
		if g.from.After(resumed) {
			rejoined = g.from
			break
		}
	}
	var stale []string
	for _, r := range a.Requests() {
		if r.Replica == replicaB && r.Time.After(resumed) && r.Time.Before(rejoined) {
			stale = append(stale, fmt.Sprintf("#%d %s %s (%d)", r.Seq, r.Action, r.CohortID, r.Status))
		}
	}
	if len(stale) > 0 {
		t.Errorf("b sent %d requests after resuming, before it rejoined: %s", len(stale), strings.Join(stale[:min(len(stale), 5)], ", "))
	}
	if !slices.ContainsFunc(wb.logs(), func(l map[string]any) bool {
		return l["msg"] == "the group coordinator fenced this member; nothing more is sent for this generation" ||
			l["msg"] == "fenced generation: nothing of it is pending or in flight"
	}) {
		t.Errorf("b never logged that it was fenced")
	}
	if err := wb.stop(40 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := wa.stop(40 * time.Second); err != nil {
		t.Fatal(err)
	}
}
