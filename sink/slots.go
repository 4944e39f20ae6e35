package sink

import (
	"context"
	"time"
)

// httpSlots bounds the attempts on the wire at once (Config.MaxConcurrent,
// MAX_IN_FLIGHT): a slot is taken after the attempt's permit and given
// back when the attempt ends. Taken after the permit, a request waiting
// for its workspace's permit holds no slot, so a workspace with a small
// budget (or one whose Limiter gives nothing) never keeps another's
// requests off the wire; the batcher hands out batches per workspace
// (batcher/slots.go), and this bounds what they send together. A permit
// that grew older than permitMaxAge while its slot was waited for is
// replaced without a long wait with the slot held (takeSlot); one that grew
// old during the dial or TLS handshake is taken anew before the request is
// written (freshen). nil: no bound.
type httpSlots chan struct{}

func newHTTPSlots(n int) httpSlots {
	if n <= 0 {
		return nil
	}
	return make(httpSlots, n)
}

// take waits for a free slot, or returns ctx.Err().
func (s httpSlots) take(ctx context.Context) error {
	if s == nil {
		return nil
	}
	select {
	case s <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// give frees a slot taken by take.
func (s httpSlots) give() {
	if s != nil {
		<-s
	}
}

// takeSlot takes a slot for a request whose permit of lim was granted at
// permitAt, and returns when the permit it goes with was granted. A permit
// that grew older than permitMaxAge while the slot was waited for is
// replaced, without a long wait with the slot held where it can be:
//
//  1. with a WithinWaiter, by a permit that comes within permitMaxAge,
//     taken with the slot;
//  2. else, the first time, the slot is given back, renew waits for a new
//     permit (and whatever else must come before one: a lease) and returns
//     its time, and the slot is taken again;
//  3. a request whose renewed permit went stale too waits for a new one
//     with the slot held (lim.Wait), as every stale permit did before.
//
// The first version did 3 at once, and a burst of stale permits (the first
// batches of a generation, all granted together) then turned into a convoy
// that did not end: at a small budget a workspace's next permit is seconds
// away, so every other request waited that long for a slot, found its own
// permit stale and waited for a new one with the slot in turn. The replica
// sent a few requests per permit spacing, and since most of its
// workspaces' Limiters were never waited on, it showed little demand and
// lent their rates away (bench (h): half of every budget fleet-wide;
// TestStalePermitRetakenWithoutTheSlot). With 2, slots are held only while
// requests are on the wire, and the convoy has nothing to feed on. Without
// 3, a request of a small budget could starve when the slots are the
// bottleneck (a slow API): behind requests of big budgets that come with
// fresh permits, it would find its own stale at every turn
// (TestSmallBudgetNotStarvedBySlots).
func (c *Client) takeSlot(ctx context.Context, lim Limiter, permitAt time.Time, renew func() (time.Time, error)) (time.Time, error) {
	for renewed := false; ; renewed = true {
		if err := c.slots.take(ctx); err != nil {
			return time.Time{}, err
		}
		if c.slots == nil || lim == nil || time.Since(permitAt) <= permitMaxAge {
			return permitAt, nil
		}
		if w, ok := lim.(WithinWaiter); ok {
			start := time.Now()
			got, err := w.WaitWithin(ctx, permitMaxAge)
			c.m.RateLimitWait.Add(time.Since(start).Seconds())
			if err != nil {
				c.slots.give()
				return time.Time{}, err
			}
			if got {
				return time.Now(), nil
			}
		}
		if renewed {
			if err := c.freshen(ctx, lim, &permitAt); err != nil { // stale: a new permit, with the slot
				c.slots.give()
				return time.Time{}, err
			}
			return permitAt, nil
		}
		c.slots.give()
		var err error
		if permitAt, err = renew(); err != nil {
			return time.Time{}, err
		}
	}
}
