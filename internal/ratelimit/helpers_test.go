package ratelimit_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

// permits takes n permits from l one after the other and returns when each
// was granted, relative to start.
func permits(t *testing.T, l *ratelimit.Limiter, n int, start time.Time) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	for range n {
		if err := l.Wait(t.Context()); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		out = append(out, time.Since(start))
	}
	return out
}

// permitsConcurrently has waiters goroutines take n permits each from l,
// with ctx, and returns when every permit was granted, relative to start,
// in order. A failed Wait fails the test.
func permitsConcurrently(t *testing.T, ctx context.Context, l *ratelimit.Limiter, waiters, n int, start time.Time) []time.Duration {
	t.Helper()
	var (
		mu    sync.Mutex
		times []time.Duration
		wg    sync.WaitGroup
	)
	for range waiters {
		wg.Go(func() {
			for range n {
				if err := l.Wait(ctx); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				times = append(times, time.Since(start))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(times)
	return times
}
