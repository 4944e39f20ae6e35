package sink

import (
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// What the consumer's parking needs of the unknown outcomes (unknown.go;
// DESIGN.md "Workspaces and parking", protocol 2 and 3).

// CohortHold is how long the cohort of h (either action) is still held by
// requests of this Client whose outcome is unknown: the not-before of a
// record of that cohort parked now (consumer.Parking.HoldOf).
func (c *Client) CohortHold(h wire.Header) time.Duration {
	c.unkMu.Lock()
	defer c.unkMu.Unlock()
	var until time.Time
	for _, u := range c.unknown[c.cohortOf(wire.Request{Header: h})] {
		if u.After(until) {
			until = u
		}
	}
	return max(0, time.Until(until))
}

// HoldCohort holds the cohort of h until until: the not-before of a parked
// record, taken over by the replica that reads it (consumer.Parking's
// HoldCohort; DESIGN.md "Workspaces and parking", protocol 2). No request
// of the cohort, of either action, starts an attempt before then (sender.hold),
// as for an unknown outcome of this Client's; the cohort's other records and
// every other cohort flow meanwhile. The hold is another replica's request,
// not one of this Client's: it counts neither in UnknownHold nor in Settle.
func (c *Client) HoldCohort(h wire.Header, until time.Time) {
	c.unkMu.Lock()
	defer c.unkMu.Unlock()
	c.raiseLocked(c.cohortOf(wire.Request{Header: h}), parkedHold, until)
}

// parkedHold is the key of a parked record's hold among a cohort's unknown
// holds (by action): it is not an action, so every request of the cohort
// waits for it (heldUntil).
const parkedHold = "parked"

// UnknownHold is how long a request of this Client whose outcome is unknown
// may still be processed: the hold= of a parking partition's commit
// (consumer.Parking.Hold).
func (c *Client) UnknownHold() time.Duration {
	c.unkMu.Lock()
	defer c.unkMu.Unlock()
	return max(0, time.Until(c.unknownLast))
}
