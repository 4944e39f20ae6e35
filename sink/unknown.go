package sink

import (
	"context"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Unknown outcomes (DESIGN.md "Unknown outcomes").
//
// An attempt that ends without an answer after its request may have reached
// the API (an attempt timeout, a lease lapse, a connection lost after the
// write) has an unknown outcome: the API may still process it, up to
// MaxProcessingTime after it was sent. The rule: no request that a late copy
// of it could overtake is sent before then. Only a request of the other
// action for the same cohort can be overtaken (a late "add u" after a later
// "remove u" leaves u in; a late "add u" after another add, or after the
// same add resent, changes nothing), so that is what waits: the Send of the
// unknown request itself retries at once (the same members, the same
// action), and so do later Sends of the same action. A resend that is
// accepted does not lift the hold: the first copy may still come after it.
//
// Across a rebalance, the replica that fences a generation waits, before it
// rejoins, until its own unknown requests can no longer be processed
// (Settle; the group's new generation cannot start before it rejoins, or is
// expelled).

// cohortKey identifies a cohort: the API's cohorts are per workspace and
// partner (two customers' cohort ids may collide).
type cohortKey struct{ workspace, partner, cohort string }

// cohortOf returns the key of req's cohort ("" workspace: the default one).
func (c *Client) cohortOf(req wire.Request) cohortKey {
	return cohortKey{c.workspaceOf(req.Workspace), req.Partner, req.CohortID}
}

// noteUnknown records that req, sent at sentAt, has an unknown outcome.
func (c *Client) noteUnknown(req wire.Request, sentAt time.Time) {
	until := sentAt.Add(c.cfg.MaxProcessingTime)
	c.unkMu.Lock()
	defer c.unkMu.Unlock()
	c.raiseLocked(c.cohortOf(req), string(req.Action), until)
	if until.After(c.unknownLast) {
		c.unknownLast = until
	}
}

// raiseLocked extends cohort k's hold named a (an action, or parkedHold)
// to until, if that is later. c.unkMu must be held.
func (c *Client) raiseLocked(k cohortKey, a string, until time.Time) {
	m := c.unknown[k]
	if m == nil {
		m = map[string]time.Time{}
		c.unknown[k] = m
	}
	if until.After(m[a]) {
		m[a] = until
	}
}

// heldUntil returns when the last unknown request that req could overtake
// can no longer be processed, or the zero time if there is none; it forgets
// the records that have passed.
func (c *Client) heldUntil(req wire.Request) time.Time {
	c.unkMu.Lock()
	defer c.unkMu.Unlock()
	k := c.cohortOf(req)
	now := time.Now()
	var until time.Time
	for a, u := range c.unknown[k] {
		switch {
		case !now.Before(u):
			delete(c.unknown[k], a)
		case a != string(req.Action) && u.After(until):
			until = u
		}
	}
	if len(c.unknown[k]) == 0 {
		delete(c.unknown, k)
	}
	return until
}

// hold waits until no unknown request that req could overtake can still be
// processed. The wait does not count toward MaxElapsed.
func (s *sender) hold(ctx context.Context, req wire.Request) error {
	for {
		until := s.c.heldUntil(req)
		if until.IsZero() {
			return nil
		}
		s.log().Warn("waiting for an earlier request of the cohort whose outcome is unknown (of the other action, or one a parked record's not-before stands for) to be past processing",
			"members", len(req.UIDs), "until", until, "max_processing_time", s.c.cfg.MaxProcessingTime)
		if err := sleep(ctx, time.Until(until)); err != nil {
			return err
		}
		s.since = time.Now()
	}
}

// Settle waits until no request this Client sent with an unknown outcome
// can still be processed by the API (MaxProcessingTime after it was sent),
// or until ctx ends. The consumer's fence calls it (through the app) after
// the batcher's Revoke, so that the next owner of the partitions, whose
// generation cannot start before this replica rejoins, never sends while
// one of this replica's requests may still be processed.
func (c *Client) Settle(ctx context.Context) error {
	c.unkMu.Lock()
	until := c.unknownLast
	c.unkMu.Unlock()
	if d := time.Until(until); d > 0 {
		c.log.Info("waiting for requests whose outcome is unknown to be past processing before the hand-over",
			"for", d)
	}
	return sleep(ctx, time.Until(until))
}
