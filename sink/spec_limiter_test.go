package sink_test

// The Limiter, inside testing/synctest bubbles: every permit's time is
// exact.

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/sink"
)

// specPermits takes n permits one after the other and returns their times
// relative to start.
func specPermits(t *testing.T, l *sink.Limiter, n int, start time.Time) []time.Duration {
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

func TestSpecSpacing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rpm  float64
		want time.Duration
	}{
		{300, 200 * time.Millisecond},
		{60, time.Second},
		{1, time.Minute},
		{0.5, 2 * time.Minute},
		{7, 8571428572 * time.Nanosecond}, // 60s/7 rounded up
		{1e12, time.Nanosecond},           // 0.06ns, rounded up
		{0, 0},
		{-5, 0},
		{math.NaN(), 0},
		{math.Inf(1), 0},
		{math.Inf(-1), 0},
	} {
		if got := sink.Spacing(tc.rpm); got != tc.want {
			t.Errorf("Spacing(%v) = %v, want %v", tc.rpm, got, tc.want)
		}
	}
	if got := sink.Spacing(1e-30); got <= 100*365*24*time.Hour {
		t.Errorf("Spacing(1e-30) = %v, want practically never", got)
	}
}

// TestSpecLimiterSpacing: permits come exactly 60s/rpm apart, the first at
// once.
func TestSpecLimiterSpacing(t *testing.T) {
	for _, rpm := range []float64{300, 60, 7, 1, 0.5} {
		t.Run("", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := sink.NewLimiter(rpm)
				if l.RPM() != rpm {
					t.Fatalf("RPM() = %v, want %v", l.RPM(), rpm)
				}
				got := specPermits(t, l, 10, time.Now())
				sp := sink.Spacing(rpm)
				for i, at := range got {
					if want := time.Duration(i) * sp; at != want {
						t.Fatalf("rpm %v: permit %d at %v, want %v", rpm, i, at, want)
					}
				}
				// After an idle time longer than the spacing, at once.
				time.Sleep(3 * sp)
				start := time.Now()
				if got := specPermits(t, l, 2, start); got[0] != 0 || got[1] != sp {
					t.Fatalf("rpm %v: after idling, permits at %v, want [0 %v]", rpm, got, sp)
				}
			})
		})
	}
}

// TestSpecLimiterLongRun: 2000 permits at 300 rpm taken by 4 concurrent
// waiters: no 60-second window [t, t+60s) holds more than 300, no two are
// closer than 200ms, and the mean rate is 300 a minute.
func TestSpecLimiterLongRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			rpm     = 300
			permits = 2000
			waiters = 4
		)
		l := sink.NewLimiter(rpm)
		start := time.Now()
		var (
			mu    sync.Mutex
			times []time.Duration
			wg    sync.WaitGroup
		)
		for range waiters {
			wg.Go(func() {
				for range permits / waiters {
					if err := l.Wait(t.Context()); err != nil {
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
		if len(times) != permits {
			t.Fatalf("%d permits, want %d", len(times), permits)
		}
		slices.Sort(times)
		sp := sink.Spacing(rpm)
		for i := 1; i < len(times); i++ {
			if d := times[i] - times[i-1]; d < sp {
				t.Fatalf("permits %d and %d only %v apart, want >= %v", i-1, i, d, sp)
			}
		}
		// The busiest half-open window [times[i], times[i]+60s).
		busiest, j := 0, 0
		for i := range times {
			for j < len(times) && times[j] < times[i]+time.Minute {
				j++
			}
			busiest = max(busiest, j-i)
		}
		if busiest > rpm {
			t.Fatalf("a 60s window holds %d permits, want <= %d", busiest, rpm)
		}
		if busiest < rpm {
			t.Fatalf("the busiest 60s window holds %d permits: the Limiter is slower than %d rpm", busiest, rpm)
		}
		elapsed := times[len(times)-1] - times[0]
		if mean := float64(permits-1) / elapsed.Minutes(); math.Abs(mean-rpm) > 0.01*rpm {
			t.Fatalf("mean rate %.2f/min, want %d", mean, rpm)
		}
	})
}

// TestSpecLimiterPauseUntil: a pause delays the next permit, for every
// waiter, and is never shortened; rate limiting resumes after it.
func TestSpecLimiterPauseUntil(t *testing.T) {
	for _, rpm := range []float64{0, 60} {
		t.Run("", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := sink.NewLimiter(rpm)
				start := time.Now()
				specPermits(t, l, 1, start)
				l.PauseUntil(start.Add(10 * time.Second))
				l.PauseUntil(start.Add(2 * time.Second)) // does not shorten
				l.PauseUntil(time.Time{})
				got := specPermits(t, l, 3, start)
				want := []time.Duration{10 * time.Second, 10 * time.Second, 10 * time.Second}
				if rpm > 0 {
					want = []time.Duration{10 * time.Second, 11 * time.Second, 12 * time.Second}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("rpm %v: permits at %v, want %v", rpm, got, want)
				}
				// A pause that arrives while a waiter sleeps holds it too.
				l.PauseUntil(start.Add(20 * time.Second))
				res := make(chan time.Duration)
				go func() {
					specPermits(t, l, 1, start)
					res <- time.Since(start)
				}()
				time.Sleep(500 * time.Millisecond)
				l.PauseUntil(start.Add(30 * time.Second))
				if got := <-res; got != 30*time.Second {
					t.Fatalf("rpm %v: the sleeping waiter got its permit at %v, want 30s", rpm, got)
				}
				// Extending a pause works.
				l.PauseUntil(start.Add(40 * time.Second))
				l.PauseUntil(start.Add(45 * time.Second))
				if got := specPermits(t, l, 1, start); got[0] != 45*time.Second {
					t.Fatalf("rpm %v: permit at %v, want 45s", rpm, got[0])
				}
			})
		})
	}
}

// TestSpecLimiterSetRPM: a new rate applies to the next permit, counted
// from the last one, also for a waiter already asleep.
func TestSpecLimiterSetRPM(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := sink.NewLimiter(60)
		start := time.Now()
		specPermits(t, l, 2, start) // 0s, 1s
		l.SetRPM(600)
		if got := specPermits(t, l, 2, start); !slices.Equal(got, []time.Duration{1100 * time.Millisecond, 1200 * time.Millisecond}) {
			t.Fatalf("after SetRPM(600): permits at %v, want [1.1s 1.2s]", got)
		}
		l.SetRPM(30)
		if got := specPermits(t, l, 1, start); got[0] != 3200*time.Millisecond {
			t.Fatalf("after SetRPM(30): permit at %v, want 3.2s", got[0])
		}
		// A waiter asleep for a slow rate is woken by a faster one.
		l.SetRPM(1)
		res := make(chan time.Duration)
		go func() {
			specPermits(t, l, 1, start)
			res <- time.Since(start)
		}()
		time.Sleep(5 * time.Second) // 8.2s: the waiter sleeps until 63.2s
		l.SetRPM(6)                 // due at 3.2s + 10s
		if got := <-res; got != 13200*time.Millisecond {
			t.Fatalf("after SetRPM(6): the sleeping waiter got its permit at %v, want 13.2s", got)
		}
		go func() {
			specPermits(t, l, 1, start)
			res <- time.Since(start)
		}()
		time.Sleep(time.Second)
		l.SetRPM(0) // unlimited: at once
		if got := <-res; got != 14200*time.Millisecond {
			t.Fatalf("after SetRPM(0): the sleeping waiter got its permit at %v, want 14.2s", got)
		}
		if l.RPM() != 0 {
			t.Fatalf("RPM() = %v, want 0", l.RPM())
		}
	})
}

// TestSpecLimiterWaitCancelled: a Wait that ends with ctx returns ctx.Err()
// when ctx ends and consumes nothing.
func TestSpecLimiterWaitCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := sink.NewLimiter(60)
		start := time.Now()

		// Already cancelled: an error even though a permit is free.
		done, cancel := context.WithCancel(t.Context())
		cancel()
		if err := l.Wait(done); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait(cancelled) = %v", err)
		}
		specPermits(t, l, 1, start) // still the first permit, at once

		ctx, cancel2 := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel2()
		err := l.Wait(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 300*time.Millisecond {
			t.Fatalf("Wait = %v at %v, want DeadlineExceeded at 300ms", err, time.Since(start))
		}
		ctx3, cancel3 := context.WithCancel(t.Context())
		go func() {
			time.Sleep(200 * time.Millisecond)
			cancel3()
		}()
		if err := l.Wait(ctx3); !errors.Is(err, context.Canceled) || time.Since(start) != 500*time.Millisecond {
			t.Fatalf("Wait = %v at %v, want Canceled at 500ms", err, time.Since(start))
		}
		// Nothing consumed: the next permit is due 1s after the first.
		if got := specPermits(t, l, 2, start); !slices.Equal(got, []time.Duration{time.Second, 2 * time.Second}) {
			t.Fatalf("permits at %v, want [1s 2s]", got)
		}
		// Cancelled during a pause: nothing consumed either.
		l.PauseUntil(start.Add(time.Minute))
		ctx4, cancel4 := context.WithTimeout(t.Context(), time.Second)
		defer cancel4()
		if err := l.Wait(ctx4); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait during a pause = %v", err)
		}
		if got := specPermits(t, l, 1, start); got[0] != time.Minute {
			t.Fatalf("permit at %v, want 1m", got[0])
		}
	})
}

// TestSpecLimiterUnlimited: rpm <= 0 (and NaN, +Inf, the zero value) never
// waits.
func TestSpecLimiterUnlimited(t *testing.T) {
	for _, mk := range []func() *sink.Limiter{
		func() *sink.Limiter { return sink.NewLimiter(0) },
		func() *sink.Limiter { return sink.NewLimiter(-1) },
		func() *sink.Limiter { return sink.NewLimiter(math.NaN()) },
		func() *sink.Limiter { return sink.NewLimiter(math.Inf(1)) },
		func() *sink.Limiter { return new(sink.Limiter) },
	} {
		synctest.Test(t, func(t *testing.T) {
			l := mk()
			start := time.Now()
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() { specPermits(t, l, 250, start) })
			}
			wg.Wait()
			if d := time.Since(start); d != 0 {
				t.Fatalf("rpm %v: 1000 permits took %v, want no wait", l.RPM(), d)
			}
		})
	}
}
