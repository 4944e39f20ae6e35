package consumer

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/lease"
)

// leaseMargin is taken off every lease on top of the heartbeat interval: it
// covers the difference in clock rates between this host and the group
// coordinator, and the transit of a request to the API.
const leaseMargin = time.Second

// leaseValidity is how long one successful heartbeat proves membership,
// counted from just before it was sent (package lease has the argument).
func (c *Consumer) leaseValidity() time.Duration {
	return c.cfg.SessionTimeout - c.cfg.HeartbeatInterval - leaseMargin
}

// leaseEvery is the pause between two proofs: a third of the heartbeat
// interval, so that a healthy replica's lease always has most of its
// validity left.
func (c *Consumer) leaseEvery() time.Duration {
	return max(c.cfg.HeartbeatInterval/3, 50*time.Millisecond)
}

// fencedErrors are the heartbeat answers after which this member may not
// send for the generation any more: it was expelled or replaced, or a
// rebalance is under way (kafka-go ends the generation on its own heartbeat
// soon after; sending nothing meanwhile is the safe side).
var fencedErrors = []error{kafka.IllegalGeneration, kafka.UnknownMemberId,
	kafka.RebalanceInProgress, kafka.FencedInstanceID}

// keepLease proves the generation's membership to the lease until gctx ends
// (the generation is over), by sending Heartbeat requests of its own for
// gen (see heartbeat.go): kafka-go's ConsumerGroup heartbeats too, but does
// not say when one succeeded. The term is ended at once when the
// coordinator answers that the member is fenced, and when the generation
// ends.
//
// While the drain hands over (handover.go) it goes on after the generation
// ended, until the drain is done, and a REBALANCE_IN_PROGRESS answer
// renews the lease as far as rebalanceLeaseUntil allows instead of ending
// it.
func (c *Consumer) keepLease(gctx context.Context, gen *kafka.Generation, term lease.Term, h *handover, log *slog.Logger) {
	defer func() {
		c.lease.End(term)
		c.m.LeaseValid.Set(0)
		h.loseTerm()
	}()
	addr := kafka.TCP(c.cfg.Brokers...)
	valid := c.leaseValidity()
	t := time.NewTimer(0)
	defer t.Stop()
	var lastErr string
	var lastOK time.Time // when the last heartbeat answered without error was sent
	hctx, done := gctx, gctx.Done()
	for {
		select {
		case <-done:
			if hctx == gctx && h.handingOver() {
				// The generation ended under the drain: prove membership
				// until the drain is done.
				hctx, done = context.WithoutCancel(gctx), h.drained
				continue
			}
			return
		case <-t.C:
		}
		sent, err := c.heartbeatOnce(hctx, addr, gen, valid)
		switch until, proven := c.proofUntil(err, sent, lastOK, h); {
		case proven:
			if err == nil {
				lastOK = sent
			}
			if !c.lease.Renew(term, until) {
				return
			}
			c.m.LeaseRenewals.WithLabelValues("ok").Inc()
			if lastErr != "" {
				log.Info("membership proven again; sending may go on")
				lastErr = ""
			}
		case isFenced(err):
			c.fenced(term, h, err, log)
			<-gctx.Done() // kafka-go ends the generation after its own heartbeat
			return
		default:
			// Not proven, not disproven: the lease runs out on its own.
			c.m.LeaseRenewals.WithLabelValues("error").Inc()
			if hctx.Err() != nil {
				return
			}
			if err.Error() != lastErr {
				lastErr = err.Error()
				log.Warn("proving group membership failed; sending stops when the lease runs out", "err", err)
			}
		}
		c.m.LeaseValid.Set(gauge(c.lease.Valid()))
		t.Reset(c.leaseEvery())
	}
}

// heartbeatOnce sends one Heartbeat for gen, waiting at most valid for the
// answer, and returns when it was sent (just before the request: a proof
// counts from there) and the answer.
func (c *Consumer) heartbeatOnce(ctx context.Context, addr net.Addr, gen *kafka.Generation, valid time.Duration) (sent time.Time, err error) {
	sent = time.Now() // before the request: the proof counts from here
	ctx, cancel := context.WithTimeout(ctx, valid)
	defer cancel()
	return sent, heartbeat(ctx, c.cfg.Transport, addr, gen)
}

// proofUntil is until when the heartbeat sent at sent and answered err
// proves membership (proven false: it proves nothing). lastOK is when the
// last heartbeat answered without error was sent.
func (c *Consumer) proofUntil(err error, sent, lastOK time.Time, h *handover) (until time.Time, proven bool) {
	switch {
	case err == nil:
		return sent.Add(c.leaseValidity()), true
	case errors.Is(err, kafka.RebalanceInProgress) && h.handingOver() && !lastOK.IsZero():
		// Still a member, and the rebalance waits for this one while it
		// drains (handover.go).
		return c.rebalanceLeaseUntil(sent, lastOK), true
	}
	return time.Time{}, false
}

// fenced ends term after the coordinator answered that this member is
// fenced.
func (c *Consumer) fenced(term lease.Term, h *handover, err error, log *slog.Logger) {
	c.m.LeaseRenewals.WithLabelValues("fenced").Inc()
	c.lease.End(term)
	c.m.LeaseValid.Set(0)
	h.loseTerm()
	log.Warn("the group coordinator fenced this member; nothing more is sent for this generation", "err", err)
}

// gauge is 1 for true, 0 for false.
func gauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func isFenced(err error) bool {
	for _, f := range fencedErrors {
		if errors.Is(err, f) {
			return true
		}
	}
	return false
}
