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
	// PauseUntil grants no permit before t (a 429: the whole replica backs
	// off, not just the request that got it).
	PauseUntil(t time.Time)
}
