package integration

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

// handoverStats is what one replica's log says about a hand-over that began
// at since.
type handoverStats struct {
	joins        int       // generations joined after since
	firstJoin    time.Time // of those
	dropped      int       // members dropped by revokes after since
	drainStarted time.Time
	drainEnded   time.Time // the drain's own LeaveGroup, or the group left
}

func (w *worker) handoverStats(since time.Time) handoverStats {
	var s handoverStats
	for _, l := range w.logs() {
		ts, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"]))
		if ts.Before(since) {
			continue
		}
		switch l["msg"] {
		case "joined generation":
			if s.joins == 0 {
				s.firstJoin = ts
			}
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

// TestDrainSurvivesAJoin: a busy replica (A) is sent SIGTERM and a new one
// (B) starts at the same moment, next to a survivor (C): what
// `kubectl delete pod` does (maxSurge does not apply to deletes). B's join
// starts a rebalance while A drains. A finishes its drain (flush, commit)
// and leaves; the rebalance completes once, without A, and nobody gets A's
// partitions before it left. A drops nothing; C joins one generation, B one.
//
// The drain is made longer than the session timeout (the API answers after
// 4 s, one request in flight per replica, four batches to drain), so this also checks the premise
// the hand-over rests on: a Heartbeat answered REBALANCE_IN_PROGRESS keeps
// the member's session alive on the real broker (else A would be expelled
// after 10 s and its partitions handed on while it still sends).
func TestDrainSurvivesAJoin(t *testing.T) {
	const partitions = 4
	topic, dlq := newTopic(t, partitions)
	a := startAPI(t, func(c *emulator.Config) { c.Faults.Latency = 4 * time.Second })
	p := newProducer(t, topic)
	g := newGen(19, 4, 3000) // one cohort per partition: A drains two cohorts, add and remove each
	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["MAX_IN_FLIGHT"] = "1"
	env["MAX_PENDING_MEMBERS"] = "12000"
	env["SHUTDOWN_TIMEOUT"] = "40s"
	env["RATE_LIMIT_SHARING"] = "false"

	wa := startWorker(t, "A", env)
	wc := startWorker(t, "C", env)
	stop := p.background(t, g, 1000)
	waitFor(t, 30*time.Second, "A and C ready", func() bool { return wa.ready() && wc.ready() })
	// A first start has no proof of a clean hand-over: the partitions are
	// read only MOENGAGE_MAX_PROCESSING_TIME after the assignment
	// (DESIGN.md Non-obvious 11).
	waitFor(t, time.Minute, "A and C reading", func() bool {
		return wa.metric("cohortsync_events_consumed_total") > 0 && wc.metric("cohortsync_events_consumed_total") > 0
	})
	time.Sleep(10 * time.Second) // both busy: a backlog pending behind the slow API
	stop()
	pendingA := wa.metric("cohortsync_pending_members")

	since := time.Now()
	if err := wa.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wb := startWorker(t, "B", env)
	select {
	case <-wa.done:
		wa.exited = true
	case <-time.After(60 * time.Second):
		t.Fatal("A did not stop within 60 s")
	}
	if wa.err != nil {
		t.Errorf("A exited with %v", wa.err)
	}
	if err := a.SetFaults(emulator.Faults{}); err != nil { // converge quickly now
		t.Fatal(err)
	}
	waitConverged(t, a, p.model(), 2*time.Minute)
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], time.Minute)

	sa, sb, sc := wa.handoverStats(since), wb.handoverStats(since), wc.handoverStats(since)
	drain := sa.drainEnded.Sub(sa.drainStarted)
	t.Logf("A: %.0f members pending at SIGTERM, drain %s, dropped %d; B: %d generation(s), first at +%s, dropped %d; C: %d generation(s), dropped %d",
		pendingA, drain.Round(time.Millisecond), sa.dropped, sb.joins, sb.firstJoin.Sub(since).Round(time.Millisecond),
		sb.dropped, sc.joins, sc.dropped)
	if pendingA < 1000 {
		t.Fatalf("A had only %.0f members pending: not a busy replica, the test proves nothing", pendingA)
	}
	if sa.drainStarted.IsZero() || sa.drainEnded.IsZero() {
		t.Fatal("A's log has no drain")
	}
	if sa.dropped != 0 {
		t.Errorf("A dropped %d pending members: the join threw its drain away", sa.dropped)
	}
	if sb.joins != 1 || sc.joins != 1 {
		t.Errorf("B joined %d generations and C %d after the SIGTERM, want 1 each (one rebalance)", sb.joins, sc.joins)
	}
	if !sb.firstJoin.After(sa.drainEnded) {
		t.Errorf("B joined a generation at %s, before A left at %s", sb.firstJoin.Format(time.RFC3339Nano),
			sa.drainEnded.Format(time.RFC3339Nano))
	}
	if drain <= 10*time.Second {
		t.Errorf("A's drain took %s, not longer than the session timeout (10s): the session premise is not exercised", drain)
	}
	for _, w := range []*worker{wb, wc} {
		if err := w.stop(40 * time.Second); err != nil {
			t.Errorf("stopping %s: %v", w.name, err)
		}
	}
}
