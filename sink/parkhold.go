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

// UnknownHold is how long a request of this Client whose outcome is unknown
// may still be processed: the hold= of a parking partition's commit
// (consumer.Parking.Hold).
func (c *Client) UnknownHold() time.Duration {
	c.unkMu.Lock()
	defer c.unkMu.Unlock()
	return max(0, time.Until(c.unknownLast))
}
