package consumer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/parking"
)

// With Config.Parking, one goroutine of the generation (run, the
// supervisor) sets up the parking state (protocol 6 (b)), then runs the
// fetch, process and park-queue loops of every owned partition in epochs.
// An epoch ends with the generation, with the drain (stopFetch), or with a
// replan, within the generation (the lease goes on):
//
//  1. stop every loop and wait for them (a park queue finishes its writes);
//  2. Batcher.Revoke: drop what is pending, wait for the attempts under way
//     (their unknown outcomes stay held by the sink);
//  3. wait for the parking writer to be idle;
//  4. StartDetour on every owned source partition for every blocked
//     workspace met (ErrFull: it is not detoured there, its records wait in
//     the partition as without parking); Undetour where CanUndetour allows;
//  5. commit every partition at its watermark with the new metadata, and
//     wait until the commit is accepted (write-ahead: nothing of a newly
//     detoured workspace is parked before);
//  6. wait the longest un-detour wait (protocol 5), then restart every loop
//     from the settled state: source partitions from their watermark with a
//     new tracker, parking partitions from m (and the o_V of the held
//     workspaces no longer blocked).
//
// What was read and not settled is read again: the other workspaces'
// changes are sent again (duplicates in log order), the blocked one's are
// parked. What settled past a watermark is not handled again (the new
// tracker's done, from the old one's carry; DESIGN.md, "The plumbing").
// This realises the protocol's "take W's records out of the batcher and
// park them in order". A replan is asked for by a process loop that
// meets a record of a blocked workspace not detoured (errReplan), by a
// change of what Blocked reports for a workspace met (BlockedChanged, and
// every UndetourInterval), and by an un-detour that became possible.

// startParked starts the supervisor in gen. fetchers counts it until every
// loop it ran has stopped.
func (c *Consumer) startParked(gen *kafka.Generation, parts []*partitionState, stop <-chan struct{}, fetchers *sync.WaitGroup, log *slog.Logger) {
	pl := newPlumb(c, gen, parts, log)
	fetchers.Add(1)
	gen.Start(func(gctx context.Context) {
		if err := pl.run(gctx, stop, fetchers); err != nil {
			return // a reader could not start: end the generation (Run)
		}
		<-gctx.Done()
	})
}

// epoch is one run of the loops.
type epoch struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	failed chan error
}

func (pl *plumb) run(gctx context.Context, stop <-chan struct{}, fetchers *sync.WaitGroup) error {
	defer fetchers.Done()
	defer pl.forgetAges()
	for {
		err := pl.setup(gctx)
		if err == nil {
			break
		}
		pl.log.Warn("parking set-up failed; nothing is read until it succeeds", "err", err)
		select {
		case <-gctx.Done():
			return nil
		case <-stop:
			return nil
		case <-time.After(time.Second):
		}
	}
	for {
		ep := pl.startEpoch(gctx)
		reason, end, err := pl.await(gctx, stop, ep)
		close(ep.stop)
		ep.wg.Wait()
		if end || err != nil {
			return err
		}
		rctx, cancel := stopCtx(gctx, stop)
		ok := pl.doReplan(rctx, reason)
		ended := rctx.Err() != nil
		cancel()
		switch {
		case ended:
			return nil // the generation or the drain ends anyway
		case !ok:
			return errReplanFailed // end the generation: the fence and a rejoin start afresh
		}
	}
}

// errReplanFailed ends the generation: a replan could not revoke the
// batcher or wait for the parking writes in time.
var errReplanFailed = errors.New("consumer: replan failed")

// stopCtx is gctx, also cancelled when stop closes (the drain began): a
// replan does not hold the drain up.
func stopCtx(gctx context.Context, stop <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(gctx)
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// startEpoch starts every owned partition's loops.
func (pl *plumb) startEpoch(gctx context.Context) *epoch {
	ep := &epoch{stop: make(chan struct{}), failed: make(chan error, len(pl.parts))}
	for _, p := range pl.parts {
		if p.pk != nil {
			start := p.pk.begin()
			ep.wg.Add(1)
			go func() {
				defer ep.wg.Done()
				if !awaitHandOff(gctx, ep.stop, p) {
					return
				}
				if err := p.pk.run(gctx, ep.stop, start, pl.log); err != nil {
					ep.failed <- err
				}
			}()
			continue
		}
		q := make(chan parkItem, parkQueue)
		p.src.q = q
		ep.wg.Add(2)
		go func() {
			defer ep.wg.Done()
			p.src.runParkQueue(gctx, q, pl.log)
		}()
		go func() {
			defer close(q) // after the process loop returned (fetch waits for it)
			if !awaitHandOff(gctx, ep.stop, p) {
				ep.wg.Done()
				return
			}
			if !pl.c.fetch(gctx, ep.stop, p, &ep.wg, pl.log) {
				ep.failed <- p.startErr
			}
		}()
	}
	return ep
}

// await waits for the end of an epoch: the generation's or the drain's
// (end), a reader that could not start (err), or a replan (reason).
func (pl *plumb) await(gctx context.Context, stop <-chan struct{}, ep *epoch) (reason string, end bool, err error) {
	tick := time.NewTicker(pl.c.cfg.Parking.UndetourInterval)
	defer tick.Stop()
	changed := pl.blockedChan()
	for {
		select {
		case <-gctx.Done():
			return "", true, nil
		case <-stop:
			return "", true, nil
		case err := <-ep.failed:
			return "", true, err
		case r := <-pl.replan:
			return r, false, nil
		case <-changed:
			changed = pl.blockedChan()
			if pl.blockedChanged() {
				return "blocked_changed", false, nil
			}
		case <-tick.C:
			pl.publishAges()
			if pl.blockedChanged() {
				return "blocked_changed", false, nil
			}
			if pl.undetourDue(gctx) {
				return "undetour", false, nil
			}
		}
	}
}

func (pl *plumb) blockedChan() <-chan struct{} {
	if pl.c.cfg.BlockedChanged == nil {
		return nil
	}
	return pl.c.cfg.BlockedChanged()
}

// doReplan runs steps 2–6 once the loops stopped. False: the generation
// ended or the drain began (ctx), or the batcher could not be revoked in
// time (the supervisor then ends the generation: the fence and a rejoin
// start everything afresh).
func (pl *plumb) doReplan(ctx context.Context, reason string) bool {
	c := pl.c
	c.m.Replans.WithLabelValues(reason).Inc()
	pl.log.Info("replanning: every loop stopped, the batcher revoked, the detours and holds redone", "reason", reason)
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RebalanceTimeout)
	defer cancel()
	revoke := c.cfg.Batcher.Revoke
	if c.cfg.Parking.Revoke != nil {
		revoke = c.cfg.Parking.Revoke
	}
	if err := revoke(rctx); err != nil {
		pl.log.Error("replan: in-flight requests outlived the rebalance timeout; ending the generation", "err", err)
		return false
	}
	select {
	case <-pl.io.writer.Idle():
	case <-rctx.Done():
		pl.log.Error("replan: parking writes outlived the rebalance timeout; ending the generation")
		return false
	}
	c.commitMu.Lock()
	for _, p := range pl.parts {
		if p.src != nil {
			p.start = sourceOffset(p)
			if tr := p.tr.Load(); tr != nil {
				p.carried = tr.carry(nil)
			}
			p.tr.Store(nil)
		}
	}
	c.commitMu.Unlock()
	wait := pl.replanDetours(ctx)
	for {
		err := c.commitParking(pl.gen, pl.parts, pl.log, nil, true)
		if err == nil {
			break
		}
		pl.log.Warn("replan: the commit with the new metadata failed; retrying (nothing is parked before it is accepted)", "err", err)
		if !sleepCtx(ctx, time.Second) {
			return false
		}
	}
	if wait > 0 {
		pl.log.Info("un-detour: waiting for the parking replicas' holds before direct sends", "wait", wait)
		if !sleepCtx(ctx, wait) {
			return false
		}
	}
	select {
	case <-pl.replan: // asked for before this replan: done
	default:
	}
	return true
}

// replanDetours is step 4. It returns the longest wait of an un-detour.
func (pl *plumb) replanDetours(ctx context.Context) (wait time.Duration) {
	_, blocked := pl.workspaces()
	var commits []parking.Commit
	if pl.undetourCandidates(blocked) {
		var err error
		if commits, err = pl.io.committed(ctx); err != nil {
			pl.log.Warn("reading the parking partitions' commits failed; no un-detour this time", "err", err)
		}
	}
	for _, p := range pl.parts {
		sp := p.src
		if sp == nil {
			continue
		}
		sp.mu.Lock()
		for w := range blocked {
			if sp.src.Detoured(w) || p.start < 0 || sp.full[w] {
				continue
			}
			if _, err := sp.src.StartDetour(w); errors.Is(err, parking.ErrFull) {
				if sp.full == nil {
					sp.full = map[string]bool{}
				}
				sp.full[w] = true
				pl.c.m.ParkingFull.WithLabelValues("source").Inc()
				pl.log.Error("cannot detour a blocked workspace: the partition's commit metadata is full; its records wait in the partition",
					"workspace", w, "partition", partName(p))
				continue
			}
			pl.log.Info("detouring a blocked workspace to the parking topic", "workspace", w, "partition", partName(p), "offset", p.start)
		}
		if commits != nil {
			for _, w := range sp.src.Workspaces() {
				if blocked[w] {
					continue
				}
				if ok, wt := sp.src.CanUndetour(w, false, func(k int) parking.Commit { return commits[k] }); ok {
					sp.src.Undetour(w)
					wait = max(wait, wt)
					pl.log.Info("un-detouring a workspace: its parked records are settled", "workspace", w, "partition", partName(p))
				}
			}
		}
		sp.mu.Unlock()
	}
	return wait
}

// publishAges sets cohortsync_parked_oldest_age_seconds for the workspaces
// held or resuming in the owned parking partitions, and deletes the series
// of those no longer (and all of them when the generation ends: forgetAges).
func (pl *plumb) publishAges() {
	byWS := map[string]time.Time{}
	for _, p := range pl.parts {
		if p.pk != nil {
			p.pk.ages(byWS)
		}
	}
	oldest := map[string]time.Time{} // by label: the oldest of the workspaces counted under it
	for w, t := range byWS {
		l := pl.c.label(w)
		if o, ok := oldest[l]; !ok || t.Before(o) {
			oldest[l] = t
		}
	}
	g := pl.c.m.ParkedOldestAge
	for w := range pl.aged {
		if _, ok := oldest[w]; !ok {
			g.DeleteLabelValues(w)
			delete(pl.aged, w)
		}
	}
	for w, t := range oldest {
		g.WithLabelValues(w).Set(time.Since(t).Seconds())
		pl.aged[w] = true
	}
}

func (pl *plumb) forgetAges() {
	for w := range pl.aged {
		pl.c.m.ParkedOldestAge.DeleteLabelValues(w)
	}
	clear(pl.aged)
}
