package rig

import (
	"context"
	"time"

	"go.uber.org/goleak"
)

// NoLeaks fails tb (Fatalf) if goroutines that opts do not exempt are still
// running after within. Start the check with goleak.IgnoreCurrent() taken
// before the code under test ran. It waits because goroutines end a little
// after what stopped them (a broker notices a closed connection late on a
// loaded machine), longer than goleak's own retries (about half a second).
func NoLeaks(tb TB, within time.Duration, opts ...goleak.Option) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var leaks error
	_ = Wait(ctx, func() bool { leaks = goleak.Find(opts...); return leaks == nil })
	if leaks != nil {
		tb.Fatalf("goroutines still running after %s: %v", within, leaks)
	}
}
