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
// that grew older than permitMaxAge while its slot was waited for is taken
// anew with the slot given back (sender.slot), so that no request holds a
// slot while it waits for a permit; one that grew old during the dial or
// TLS handshake is taken anew before the request is written (freshen).
// nil: no bound.
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
// that grew older than permitMaxAge while the slot was waited for is not
// freshened with the slot held: the slot is given back, renew waits for a
// new permit (and whatever else must come before one: a lease) and returns
// its time, and the slot is taken again. So a request waiting for a permit
// never holds a slot. Were it to wait with the slot (a workspace's next
// permit is seconds away at a small budget), every other request would
// wait for the slot longer, find its own permit stale and wait for a new
// one with the slot in turn: the replica then sent a few requests per
// permit spacing, lent away the rates its workspaces seemed not to use,
// and stayed there (bench (h): half of every budget fleet-wide;
// TestStalePermitRetakenWithoutTheSlot).
func (c *Client) takeSlot(ctx context.Context, lim Limiter, permitAt time.Time, renew func() (time.Time, error)) (time.Time, error) {
	for {
		if err := c.slots.take(ctx); err != nil {
			return time.Time{}, err
		}
		if c.slots == nil || lim == nil || time.Since(permitAt) <= permitMaxAge {
			return permitAt, nil
		}
		c.slots.give()
		var err error
		if permitAt, err = renew(); err != nil {
			return time.Time{}, err
		}
	}
}
