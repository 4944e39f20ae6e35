package consumer_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// answerHeartbeats makes the coordinator answer Heartbeats with code while
// it is non-zero (kfake answers normally otherwise): the lease's, and with
// group set also the next one of kafka-go's group heartbeat, which ends the
// generation (code is then cleared: the member rejoins). kafka-go's
// ConsumerGroup heartbeats with version 0 on its group connection, and the
// lease with the highest version both sides support, so the two are told
// apart by version.
func (h *harness) answerHeartbeats(code *atomic.Int32, group bool) {
	h.cluster.ControlKey(int16(kmsg.Heartbeat), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		h.cluster.KeepControl()
		c := int16(code.Load())
		if c == 0 || !group && kr.GetVersion() == 0 {
			return nil, nil, false
		}
		if kr.GetVersion() == 0 {
			code.Store(0)
		}
		resp := kr.(*kmsg.HeartbeatRequest).ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = c
		return resp, nil, true
	})
}

// TestLeaseProvenAfterJoin: a member's lease becomes valid once its own
// heartbeat is answered, and stays valid while the coordinator keeps
// answering.
func TestLeaseProvenAfterJoin(t *testing.T) {
	h := newHarness(t)
	r := h.startReplica("a", replicaOpts{})
	waitFor(t, 20*time.Second, "a lease", func() bool { return r.c.Lease().Valid() })
	time.Sleep(6 * time.Second) // longer than one lease (4.8s here): it must have been renewed
	if !r.c.Lease().Valid() {
		t.Fatal("lease expired while the coordinator answers every heartbeat")
	}
	if n := testutil.ToFloat64(r.m.LeaseRenewals.WithLabelValues("ok")); n < 10 {
		t.Fatalf("only %v successful renewals in 6s", n)
	}
	if testutil.ToFloat64(r.m.LeaseValid) != 1 {
		t.Fatal("cohortsync_lease_valid is not 1 while the lease is valid")
	}
}

// TestLeaseEndsWhenFenced: when the coordinator answers that the member is
// unknown (it was expelled), the lease ends at once, long before it would
// run out, and is proven again only in the next generation.
func TestLeaseEndsWhenFenced(t *testing.T) {
	h := newHarness(t)
	var code atomic.Int32
	h.answerHeartbeats(&code, true)
	r := h.startReplica("a", replicaOpts{})
	waitFor(t, 20*time.Second, "a lease", func() bool { return r.c.Lease().Valid() })
	code.Store(int32(kerr.UnknownMemberID.Code))
	start := time.Now()
	waitFor(t, 3*time.Second, "the lease to end", func() bool { return !r.c.Lease().Valid() })
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the lease ended %s after the member was fenced: it ran out rather than being ended", took)
	}
	waitFor(t, 30*time.Second, "a lease in a new generation", func() bool { return r.c.Lease().Valid() })
	if n := len(r.assignments()); n < 2 {
		t.Fatalf("lease valid again after %d generation(s): it must come from a new one", n)
	}
}

// TestLeaseHeartbeatSeesFencing: the lease's own heartbeat reads the
// coordinator's "fenced" answer (kafka-go's Client.Heartbeat misreads it as
// success from version 1 on; see heartbeat.go) and ends the lease at once,
// even before kafka-go's group heartbeat notices.
func TestLeaseHeartbeatSeesFencing(t *testing.T) {
	h := newHarness(t)
	var code atomic.Int32
	h.answerHeartbeats(&code, false)
	r := h.startReplica("a", replicaOpts{})
	waitFor(t, 20*time.Second, "a lease", func() bool { return r.c.Lease().Valid() })
	code.Store(int32(kerr.IllegalGeneration.Code))
	start := time.Now()
	waitFor(t, 3*time.Second, "the lease to end", func() bool { return !r.c.Lease().Valid() })
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the lease ended %s after the member was fenced: it ran out rather than being ended", took)
	}
	if testutil.ToFloat64(r.m.LeaseRenewals.WithLabelValues("fenced")) == 0 {
		t.Fatal("no fenced renewal counted")
	}
	if testutil.ToFloat64(r.m.LeaseValid) != 0 {
		t.Fatal("cohortsync_lease_valid is not 0 after fencing")
	}
	time.Sleep(6 * time.Second) // longer than a lease: an ended term stays ended
	if r.c.Lease().Valid() {
		t.Fatal("the lease of a fenced generation became valid again")
	}
	code.Store(0)
}

// TestLeaseRunsOutWithoutProof: when heartbeats fail without saying the
// member is fenced (the coordinator is unavailable), the lease is not
// renewed and runs out within its validity.
func TestLeaseRunsOutWithoutProof(t *testing.T) {
	h := newHarness(t)
	var code atomic.Int32
	h.answerHeartbeats(&code, false)
	r := h.startReplica("a", replicaOpts{})
	waitFor(t, 20*time.Second, "a lease", func() bool { return r.c.Lease().Valid() })
	code.Store(int32(kerr.CoordinatorLoadInProgress.Code))
	exp, _ := r.c.Lease().Deadline()
	if max := time.Until(exp); max > 4800*time.Millisecond {
		t.Fatalf("lease lasts %s, more than session timeout − heartbeat interval − margin (4.8s)", max)
	}
	waitFor(t, 6*time.Second, "the lease to run out", func() bool { return !r.c.Lease().Valid() })
	if testutil.ToFloat64(r.m.LeaseRenewals.WithLabelValues("error")) == 0 {
		t.Fatal("no failed renewal counted")
	}
	code.Store(0)
}

// TestIdleReplicaStaysInItsGeneration: a replica beyond the partition count
// (no partition assigned) stays in its generation instead of ending it at
// once and rejoining in a loop (a generation ends when any of its
// goroutines returns).
func TestIdleReplicaStaysInItsGeneration(t *testing.T) {
	h := newHarness(t)
	var rs []*replica
	for i := range partitions + 1 {
		rs = append(rs, h.startReplica(string(rune('a'+i)), replicaOpts{}))
	}
	waitFor(t, 30*time.Second, "an idle replica", func() bool {
		for _, r := range rs {
			if a := r.assignments(); len(a) > 0 && len(a[len(a)-1].parts) == 0 {
				return true
			}
		}
		return false
	})
	before := 0.0
	for _, r := range rs {
		before += testutil.ToFloat64(r.m.Rebalances)
	}
	time.Sleep(3 * time.Second)
	after := 0.0
	for _, r := range rs {
		after += testutil.ToFloat64(r.m.Rebalances)
	}
	if after-before > 2*float64(len(rs)) {
		t.Fatalf("%v generations joined in 3 s by %d settled replicas: an idle one keeps ending its generation", after-before, len(rs))
	}
}
