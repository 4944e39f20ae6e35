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
