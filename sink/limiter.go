package sink

import (
	"context"
	"time"
)

// Limiter gives request permits (internal/ratelimit.Limiter is the one the
// worker uses).
type Limiter interface {
	// Wait blocks until a permit is granted, or returns ctx.Err().
	Wait(ctx context.Context) error
	// PauseUntil grants no permit before t (a 429: every request of the
	// Limiter's workspace backs off, not just the request that got it).
	PauseUntil(t time.Time)
}

// WithinWaiter is a Limiter that can take a permit only if one comes soon
// (internal/ratelimit.Limiter is one). A request whose permit went stale
// while it waited for an HTTP slot takes a new one with the slot held only
// this way, for at most permitMaxAge; else it gives the slot back first
// (Client.takeSlot).
type WithinWaiter interface {
	// WaitWithin takes a permit if one is granted within d, and returns
	// true; it returns false at once, consuming nothing, if none is due
	// within d; or ctx.Err().
	WaitWithin(ctx context.Context, d time.Duration) (bool, error)
}

// limiterFor returns the Limiter of the requests of workspace ws ("": the
// default workspace): Config.Limiters' for that workspace when set (a
// budget per workspace: a 429 for one pauses that one only), else
// Config.Limiter (nil: unlimited).
func (c *Client) limiterFor(ws string) Limiter {
	if c.cfg.Limiters != nil {
		if l := c.cfg.Limiters(c.workspaceOf(ws)); l != nil {
			return l
		}
	}
	return c.cfg.Limiter
}
