package consumer

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// handover is the soft stop of one generation, shared by the drain (in
// Run's goroutine), the fence and keepLease.
//
// Without it, a member that joins while this replica drains (a replacement
// pod started at once by `kubectl delete pod`, an eviction, a node drain)
// starts a rebalance; kafka-go ends the generation, and the fence revoked
// everything the drain was flushing: thousands of members read again by the
// next owner, and further rebalances when this replica then left.
//
// With it, the drain keeps its partitions through the rebalance: the
// coordinator completes a rebalance only once every member of the old
// generation has rejoined or left, or after the rebalance timeout, so a
// member that neither rejoins nor leaves still owns its partitions. The
// fence waits for the drain (flush, dead letters, commit), keepLease goes on
// proving membership (a Heartbeat answered REBALANCE_IN_PROGRESS still
// restarts the member's session: TestDrainSurvivesAJoin checks it on the
// real broker), and the drain then leaves the group itself, so that
// kafka-go does not rejoin the rebalance it is about to leave. One
// rebalance: the joining member and the others get this replica's
// partitions at the offsets it committed.
type handover struct {
	stopping chan struct{} // closed when the drain begins
	ended    chan struct{} // closed by the fence when the generation has ended
	drained  chan struct{} // closed when the drain has committed (and left)
	lost     chan struct{} // closed by keepLease when it ended the term
	lostOnce sync.Once
}

func newHandover() *handover {
	return &handover{stopping: make(chan struct{}), ended: make(chan struct{}),
		drained: make(chan struct{}), lost: make(chan struct{})}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// handingOver reports whether the drain has begun.
func (h *handover) handingOver() bool { return isClosed(h.stopping) }

// loseTerm records that keepLease ended the term: the drain can send
// nothing more, so the fence need not wait for it.
func (h *handover) loseTerm() { h.lostOnce.Do(func() { close(h.lost) }) }

// awaitDrain holds the fence while the drain finishes: until it has
// committed and left, the lease is lost, or RebalanceTimeout has passed
// (after which the coordinator has expelled this member anyway).
func (c *Consumer) awaitDrain(h *handover, log *slog.Logger) {
	if isClosed(h.lost) {
		return
	}
	log.Info("the group is rebalancing during the drain: finishing the drain (flush, commit, leave) before handing the partitions over",
		"within", c.cfg.RebalanceTimeout)
	t := time.NewTimer(c.cfg.RebalanceTimeout)
	defer t.Stop()
	select {
	case <-h.drained:
	case <-h.lost:
		if isClosed(h.drained) {
			return
		}
		log.Warn("group membership lost during the drain; what was not committed is read again by the next owner")
	case <-t.C:
		log.Warn("the drain outlived the rebalance timeout; what was not committed is read again by the next owner")
	}
}

// rebalanceLeaseUntil is how long a Heartbeat answered REBALANCE_IN_PROGRESS,
// sent at sent, proves membership while the drain hands over, given that
// the last one answered without error was sent at lastOK: the member's
// session runs until sent + SessionTimeout (the answer restarted it), and
// the rebalance, which began after lastOK, cannot complete without this
// member before lastOK + RebalanceTimeout. The same margins as the lease's
// are taken off both.
func (c *Consumer) rebalanceLeaseUntil(sent, lastOK time.Time) time.Time {
	bySession := sent.Add(c.leaseValidity())
	byRebalance := lastOK.Add(c.cfg.RebalanceTimeout - c.cfg.HeartbeatInterval - leaseMargin)
	if byRebalance.Before(bySession) {
		return byRebalance
	}
	return bySession
}

// leave sends LeaveGroup for gen's member over the transport, after a drain
// that a rebalance caught: kafka-go would otherwise rejoin the rebalance
// once the generation's functions return (it rejoins before it looks at
// Close) and leave only after the rebalance completed with this member in
// it, a second rebalance for the others.
func (c *Consumer) leave(gen *kafka.Generation, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Transport: c.cfg.Transport}
	res, err := cl.LeaveGroup(ctx, &kafka.LeaveGroupRequest{GroupID: gen.GroupID,
		Members: []kafka.LeaveGroupRequestMember{{ID: gen.MemberID}}})
	if err == nil {
		err = res.Error
		for _, m := range res.Members {
			if err == nil {
				err = m.Error
			}
		}
	}
	if err != nil {
		log.Warn("leaving the group after the drain failed; the coordinator expels this member after the session timeout", "err", err)
		return
	}
	log.Info("left the group after the drain")
}
