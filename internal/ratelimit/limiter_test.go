package ratelimit_test

// The Limiter, inside testing/synctest bubbles (every permit's time is
// exact), and once on real time for the race detector.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

func TestSpacing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rpm  float64
		want time.Duration
	}{
		{300, 200 * time.Millisecond},
		{60, time.Second},
		{1, time.Minute},
		{0.5, 2 * time.Minute},
		{7, 8571428572 * time.Nanosecond}, // 60s/7 = 8571428571.43ns, rounded up
		{1e12, time.Nanosecond},           // 0.06ns, rounded up
		{0, 0},
		{-5, 0},
		{math.NaN(), 0},
		{math.Inf(1), 0},
		{math.Inf(-1), 0},
	} {
		if got := ratelimit.Spacing(tc.rpm); got != tc.want {
			t.Errorf("Spacing(%v) = %v, want %v", tc.rpm, got, tc.want)
		}
	}
	if got := ratelimit.Spacing(1e-30); got <= 100*365*24*time.Hour {
		t.Errorf("Spacing(1e-30) = %v, want practically never", got)
	}
}

// TestLimiterSpacing: permits come exactly 60s/rpm apart, the first at
// once, and again at once after an idle time longer than the spacing.
func TestLimiterSpacing(t *testing.T) {
	for _, tc := range []struct {
		rpm     float64
		spacing time.Duration
	}{
		{300, 200 * time.Millisecond},
		{60, time.Second},
		{7, 8571428572 * time.Nanosecond},
		{1, time.Minute},
		{0.5, 2 * time.Minute},
	} {
		t.Run("", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := ratelimit.NewLimiter(tc.rpm)
				if l.RPM() != tc.rpm {
					t.Fatalf("RPM() = %v, want %v", l.RPM(), tc.rpm)
				}
				if sp := ratelimit.Spacing(tc.rpm); sp != tc.spacing {
					t.Fatalf("Spacing(%v) = %v, want %v", tc.rpm, sp, tc.spacing)
				}
				got := permits(t, l, 10, time.Now())
				for i, at := range got {
					if want := time.Duration(i) * tc.spacing; at != want {
						t.Fatalf("rpm %v: permit %d at %v, want %v", tc.rpm, i, at, want)
					}
				}
				// After an idle time longer than the spacing, at once.
				time.Sleep(3 * tc.spacing)
				start := time.Now()
				if got := permits(t, l, 2, start); got[0] != 0 || got[1] != tc.spacing {
					t.Fatalf("rpm %v: after idling, permits at %v, want [0 %v]", tc.rpm, got, tc.spacing)
				}
			})
		})
	}
}

// TestLimiterWindow: over a long run, no 60-second window holds more than
// rpm permits, for rates that do not divide a minute evenly, while the
// long-run rate is rpm.
func TestLimiterWindow(t *testing.T) {
	for _, rpm := range []float64{7, 13, 300, 299, 37} {
		synctest.Test(t, func(t *testing.T) {
			l := ratelimit.NewLimiter(rpm)
			n := int(rpm) * 5
			got := permits(t, l, n, time.Now())
			k := int(rpm)
			for i := 0; i+k < len(got); i++ {
				if d := got[i+k] - got[i]; d < time.Minute {
					t.Fatalf("rpm %v: %d permits within %v (permits %d..%d)", rpm, k+1, d, i, i+k)
				}
			}
			span := got[n-1] - got[0]
			if want := time.Duration(float64(n-1) * float64(time.Minute) / rpm); span-want > time.Duration(n) {
				t.Fatalf("rpm %v: %d permits took %v, want %v", rpm, n, span, want)
			}
		})
	}
}

// TestLimiterLongRun: 2000 permits at 300 rpm taken by 4 concurrent
// waiters: no 60-second window [t, t+60s) holds more than 300, no two are
// closer than 200ms, and the mean rate is 300 a minute.
func TestLimiterLongRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			rpm     = 300
			permits = 2000
			waiters = 4
		)
		l := ratelimit.NewLimiter(rpm)
		times := permitsConcurrently(t, t.Context(), l, waiters, permits/waiters, time.Now())
		if len(times) != permits {
			t.Fatalf("%d permits, want %d", len(times), permits)
		}
		sp := ratelimit.Spacing(rpm)
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

// TestLimiterPauseUntil: a pause delays the next permit, for every waiter,
// and is never shortened; rate limiting resumes after it.
func TestLimiterPauseUntil(t *testing.T) {
	for _, rpm := range []float64{0, 60} {
		t.Run("", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := ratelimit.NewLimiter(rpm)
				start := time.Now()
				permits(t, l, 1, start)
				l.PauseUntil(start.Add(10 * time.Second))
				l.PauseUntil(start.Add(2 * time.Second)) // does not shorten
				l.PauseUntil(time.Time{})
				got := permits(t, l, 3, start)
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
					permits(t, l, 1, start)
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
				if got := permits(t, l, 1, start); got[0] != 45*time.Second {
					t.Fatalf("rpm %v: permit at %v, want 45s", rpm, got[0])
				}
			})
		})
	}
}

// TestLimiterPausesWhenUnlimited: a 429 pauses even an unlimited Limiter,
// before its first permit.
func TestLimiterPausesWhenUnlimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := ratelimit.NewLimiter(0)
		start := time.Now()
		l.PauseUntil(start.Add(3 * time.Second))
		if got := permits(t, l, 1, start); got[0] != 3*time.Second {
			t.Fatalf("permit at +%v, want +3s", got[0])
		}
	})
}

// TestLimiterSetRPM: a new rate applies from now on; the elapsed part of
// the interval under way counts at the old rate (token accrual), also for a
// waiter already asleep.
func TestLimiterSetRPM(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := ratelimit.NewLimiter(60)
		start := time.Now()
		permits(t, l, 2, start) // 0s, 1s
		l.SetRPM(600)
		if got := permits(t, l, 2, start); !slices.Equal(got, []time.Duration{1100 * time.Millisecond, 1200 * time.Millisecond}) {
			t.Fatalf("after SetRPM(600): permits at %v, want [1.1s 1.2s]", got)
		}
		l.SetRPM(30)
		if got := permits(t, l, 1, start); got[0] != 3200*time.Millisecond {
			t.Fatalf("after SetRPM(30): permit at %v, want 3.2s", got[0])
		}
		// A waiter asleep for a slow rate is woken by a faster one.
		l.SetRPM(1)
		res := make(chan time.Duration)
		go func() {
			permits(t, l, 1, start)
			res <- time.Since(start)
		}()
		time.Sleep(5 * time.Second) // 8.2s: the waiter sleeps until 63.2s
		l.SetRPM(6)                 // 55s of 60s were left: 55/60 of 10s from now
		want := 8200*time.Millisecond + 9166666667*time.Nanosecond
		if got := <-res; got != want {
			t.Fatalf("after SetRPM(6): the sleeping waiter got its permit at %v, want %v", got, want)
		}
		go func() {
			permits(t, l, 1, start)
			res <- time.Since(start)
		}()
		time.Sleep(time.Second)
		l.SetRPM(0) // unlimited: at once
		if got := <-res; got != want+time.Second {
			t.Fatalf("after SetRPM(0): the sleeping waiter got its permit at %v, want %v", got, want+time.Second)
		}
		if l.RPM() != 0 {
			t.Fatalf("RPM() = %v, want 0", l.RPM())
		}
	})
}

// TestLimiterSetRPMSlowerThenFaster: slowing down spaces the next permits
// at the new rate from the last one; speeding up again takes effect at once.
func TestLimiterSetRPMSlowerThenFaster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := ratelimit.NewLimiter(60)
		start := time.Now()
		permits(t, l, 2, start) // +0, +1s
		l.SetRPM(30)            // from the next permit on: 2s after the last one
		got := permits(t, l, 2, start)
		if got[0] != 3*time.Second || got[1] != 5*time.Second {
			t.Fatalf("after SetRPM(30): +%v, +%v; want +3s, +5s", got[0], got[1])
		}
		l.SetRPM(600)
		if got := permits(t, l, 1, start); got[0] != 5*time.Second+100*time.Millisecond {
			t.Fatalf("after SetRPM(600): +%v, want +5.1s", got[0])
		}
		if l.RPM() != 600 {
			t.Fatalf("RPM() = %v", l.RPM())
		}
	})
}

// TestLimiterSetRPMWakesWaiters: a waiter asleep on a slow rate's timer is
// served at the new, faster rate: what is left of its interval, at the new
// rate, from the change on.
func TestLimiterSetRPMWakesWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := ratelimit.NewLimiter(1e-4) // one permit every 10 weeks
		start := time.Now()
		permits(t, l, 1, start)
		done := make(chan time.Time)
		go func() {
			if err := l.Wait(t.Context()); err != nil {
				t.Error(err)
			}
			done <- time.Now()
		}()
		synctest.Wait()
		time.Sleep(time.Second)
		l.SetRPM(60)
		// 599999 of 600000 s were left: 599999/600000 of 1s from +1s.
		if at, want := <-done, start.Add(time.Second+999998334*time.Nanosecond); !at.Equal(want) {
			t.Fatalf("waiter served at +%v, want +%v", at.Sub(start), want.Sub(start))
		}
	})
}

// TestLimiterWaitCancelled: a Wait that ends with ctx returns ctx.Err()
// when ctx ends (also when it has already ended) and consumes nothing.
func TestLimiterWaitCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := ratelimit.NewLimiter(60)
		start := time.Now()

		// Already cancelled: an error even though a permit is free.
		done, cancel := context.WithCancel(t.Context())
		cancel()
		if err := l.Wait(done); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait(cancelled) = %v", err)
		}
		permits(t, l, 1, start) // still the first permit, at once

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
		if got := permits(t, l, 2, start); !slices.Equal(got, []time.Duration{time.Second, 2 * time.Second}) {
			t.Fatalf("permits at %v, want [1s 2s]", got)
		}
		// Cancelled during a pause: nothing consumed either.
		l.PauseUntil(start.Add(time.Minute))
		ctx4, cancel4 := context.WithTimeout(t.Context(), time.Second)
		defer cancel4()
		if err := l.Wait(ctx4); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait during a pause = %v", err)
		}
		if got := permits(t, l, 1, start); got[0] != time.Minute {
			t.Fatalf("permit at %v, want 1m", got[0])
		}
	})
}

// TestLimiterUnlimited: rpm <= 0 (and NaN, +Inf, the zero value) never
// waits.
func TestLimiterUnlimited(t *testing.T) {
	for _, mk := range []func() *ratelimit.Limiter{
		func() *ratelimit.Limiter { return ratelimit.NewLimiter(0) },
		func() *ratelimit.Limiter { return ratelimit.NewLimiter(-1) },
		func() *ratelimit.Limiter { return ratelimit.NewLimiter(math.NaN()) },
		func() *ratelimit.Limiter { return ratelimit.NewLimiter(math.Inf(1)) },
		func() *ratelimit.Limiter { return new(ratelimit.Limiter) },
	} {
		synctest.Test(t, func(t *testing.T) {
			l := mk()
			start := time.Now()
			if got := permitsConcurrently(t, t.Context(), l, 4, 250, start); len(got) != 1000 {
				t.Fatalf("rpm %v: %d permits, want 1000", l.RPM(), len(got))
			}
			if d := time.Since(start); d != 0 {
				t.Fatalf("rpm %v: 1000 permits took %v, want no wait", l.RPM(), d)
			}
		})
	}
}

// TestLimiterConcurrentWaiters: many goroutines share one Limiter; every
// permit is granted exactly once and spaced exactly from the others.
func TestLimiterConcurrentWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := ratelimit.NewLimiter(600) // 100ms
		times := permitsConcurrently(t, t.Context(), l, 10, 5, time.Now())
		if len(times) != 50 {
			t.Fatalf("%d permits, want 50", len(times))
		}
		for i := 1; i < len(times); i++ {
			if d := times[i] - times[i-1]; d != 100*time.Millisecond {
				t.Fatalf("permits %d and %d are %v apart, want 100ms", i-1, i, d)
			}
		}
	})
}

// TestLimiterConcurrentRealTime exercises the Limiter on real time with
// concurrent waiters, rate changes and pauses, for the race detector.
func TestLimiterConcurrentRealTime(t *testing.T) {
	l := ratelimit.NewLimiter(60000) // 1ms
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 20 {
			l.SetRPM(float64(60000 - i))
			l.PauseUntil(time.Now().Add(time.Millisecond))
			_ = l.RPM()
			time.Sleep(time.Millisecond)
		}
	})
	times := permitsConcurrently(t, ctx, l, 8, 10, time.Now())
	wg.Wait()
	if len(times) != 80 {
		t.Fatalf("%d permits, want 80", len(times))
	}
	// The spacing itself is checked exactly under synctest: times taken
	// after Wait returns include scheduling delay and can come closer than
	// the grants were, so this test only drives the Limiter concurrently
	// (for the race detector) and counts the permits.
}

// TestLimiterPermitsWithinTheRateIntegral: whatever the changes of rate
// (SetRPM, grants lent and ending), the permits over any span are at most
// one more than the integral of the rate over it, and between any two
// consecutive permits the integral is at least one: the bounds the fleet's
// budget rests on (fleet.go).
func TestLimiterPermitsWithinTheRateIntegral(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprint("seed-", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const slot = 100 * time.Millisecond
				rng := rand.New(rand.NewPCG(seed, 3))
				l := ratelimit.NewLimiter(60)
				start := time.Now()
				var permitAt []time.Duration
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan struct{})
				go func() {
					defer close(done)
					for l.Wait(ctx) == nil {
						permitAt = append(permitAt, time.Since(start))
					}
				}()
				var rates []float64 // the rate over each slot
				for i := range 6000 {
					if rng.IntN(50) == 0 {
						l.SetRPM(float64(1 + rng.IntN(600)))
					}
					if rng.IntN(80) == 0 {
						var gs []ratelimit.Grant
						for range rng.IntN(3) {
							gs = append(gs, ratelimit.Grant{RPM: float64(rng.IntN(300)),
								Until: start.Add(time.Duration(i+1+rng.IntN(100)) * slot)})
						}
						l.Lend(gs)
					}
					rates = append(rates, l.Rate())
					time.Sleep(slot)
					synctest.Wait()
				}
				cancel()
				<-done
				// The form the full share's argument uses (fleet.go): between
				// two consecutive permits, the rate's integral is at least one
				// permit (so n permits in a span shorter than 61 s at a rate of
				// at most k per 61 s are at most k).
				integral := func(from, to time.Duration) float64 {
					sum := 0.0
					for i, r := range rates {
						lo, hi := max(from, time.Duration(i)*slot), min(to, time.Duration(i+1)*slot)
						if hi > lo {
							sum += r / 60 * (hi - lo).Seconds()
						}
					}
					return sum
				}
				for j := 1; j < len(permitAt) && permitAt[j] < time.Duration(len(rates))*slot; j++ {
					if got := integral(permitAt[j-1], permitAt[j]); got < 1-1e-6 {
						t.Fatalf("permits at %v and %v: the rate's integral between them is %.6f, under one permit", permitAt[j-1], permitAt[j], got)
					}
				}
				for _, span := range []int{1, 7, 100, 610} {
					for a := 0; a+span <= len(rates); a++ {
						integral := 0.0
						for _, r := range rates[a : a+span] {
							integral += r / 60 * slot.Seconds()
						}
						from, to := time.Duration(a)*slot, time.Duration(a+span)*slot
						n := 0
						for _, p := range permitAt {
							if p >= from && p < to {
								n++
							}
						}
						if float64(n) > 1+integral+1e-6 {
							t.Fatalf("%d permits in [%v, %v), the rate's integral is %.3f", n, from, to, integral)
						}
					}
				}
			})
		})
	}
}

// TestLimiterDemandWhileAsleep: a waiter asleep across several calls of
// Demand (permits further apart than the Fleet's Ticks) counts as blocked
// at each of them, not only at the first.
func TestLimiterDemandWhileAsleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := ratelimit.NewLimiter(6) // a permit every 10 s
		if err := l.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, blocked := l.Demand(); blocked {
			t.Fatal("blocked before anything waited")
		}
		done := make(chan error, 1)
		go func() { done <- l.Wait(t.Context()) }()
		for i := range 5 {
			time.Sleep(time.Second)
			synctest.Wait()
			if _, blocked := l.Demand(); !blocked {
				t.Fatalf("call %d, %d s into a 10 s wait: not blocked", i+1, i+1)
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, blocked := l.Demand(); !blocked {
			t.Fatal("the wait that just ended is not reported")
		}
		if _, blocked := l.Demand(); blocked {
			t.Fatal("blocked with nothing waiting since the last call")
		}
	})
}

// TestLimiterWaitWithin: WaitWithin takes a permit due within its bound,
// waiting for it, and refuses at once, consuming nothing, one due later
// (also when the rate falls while it waits).
func TestLimiterWaitWithin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		l := ratelimit.NewLimiter(60) // one a second
		start := time.Now()
		if got, err := l.WaitWithin(ctx, 0); !got || err != nil {
			t.Fatalf("first permit: %v, %v; want it at once", got, err)
		}
		if got, err := l.WaitWithin(ctx, 500*time.Millisecond); got || err != nil {
			t.Fatalf("a permit due in 1 s within 500 ms: %v, %v; want false", got, err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("the refusal took %v, want 0", d)
		}
		if granted, _ := l.Demand(); granted != 1 {
			t.Errorf("%d permits granted, want 1: a refusal consumes nothing", granted)
		}
		time.Sleep(600 * time.Millisecond)
		if got, err := l.WaitWithin(ctx, 500*time.Millisecond); !got || err != nil {
			t.Fatalf("a permit due in 400 ms within 500 ms: %v, %v", got, err)
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("granted %v after the first, want 1s", d)
		}
		// Due in 1 s at first; the rate halves while it waits: due in 2 s.
		done := make(chan bool)
		go func() {
			got, _ := l.WaitWithin(ctx, 1500*time.Millisecond)
			done <- got
		}()
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		l.SetRPM(30)
		if got := <-done; got {
			t.Error("granted a permit pushed past the bound by a slower rate")
		}
		if d := time.Since(start); d != 1100*time.Millisecond {
			t.Errorf("gave up %v after the start, want at the rate change (1.1s)", d)
		}
		if granted, _ := l.Demand(); granted != 2 {
			t.Errorf("%d permits granted, want 2", granted)
		}
	})
}
