package metrics

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestTrackReady(t *testing.T) {
	m := New(nil)
	var ok atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.TrackReady(ctx, ok.Load, time.Millisecond) }()
	wait := func(want float64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for testutil.ToFloat64(m.Ready) != want {
			if time.Now().After(deadline) {
				t.Fatalf("cohortsync_ready = %v, want %v", testutil.ToFloat64(m.Ready), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	wait(0)
	ok.Store(true)
	wait(1)
	ok.Store(false)
	wait(0)
	ok.Store(true)
	wait(1)
	cancel()
	<-done
	if v := testutil.ToFloat64(m.Ready); v != 0 {
		t.Fatalf("cohortsync_ready = %v after stop, want 0", v)
	}
}
