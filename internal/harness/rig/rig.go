// Package rig is the test rig the demo, the benchmark and the tests share to
// drive a worker from outside: polling until a condition holds ([Poll],
// [WaitFor]), until a consumer group has caught up ([WaitNoLag]), running
// a worker in the background ([Start]) against an emulated API
// ([ServeAPI]), reading its metrics ([Scrape], [Gather]), collecting its
// logs ([Buffer]) and checking that it left no goroutine behind
// ([NoLeaks]).
//
// It does not import the testing package: the functions a test calls take
// a [TB], which *testing.T and *testing.B satisfy, and the rest return
// errors.
package rig

import (
	"context"
	"time"
)

// TB is the part of testing.TB the helpers use.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Poll calls cond until it reports done, returns an error, or ctx ends; it
// returns nil, cond's error or ctx.Err(). It calls cond at once, then after
// a pause that starts at 1 ms and doubles up to 50 ms: quick for what is
// nearly there, light on a broker for what takes seconds.
func Poll(ctx context.Context, cond func() (done bool, err error)) error {
	pause := time.Millisecond
	for {
		done, err := cond()
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// Wait polls cond as [Poll] does until it holds or ctx ends.
func Wait(ctx context.Context, cond func() bool) error {
	return Poll(ctx, func() (bool, error) { return cond(), nil })
}

// WaitFor polls cond as [Poll] does until it holds, and fails tb (Fatalf)
// naming what it waited for if it has not held within timeout.
func WaitFor(tb TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if Wait(ctx, cond) != nil {
		tb.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}
