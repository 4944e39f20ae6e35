package sink_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/sink"
)

// stopPauses is the time n probes of a stopped line wait with the default
// intervals: 30s, doubled after each probe, up to 5m.
func stopPauses(n int) time.Duration {
	var total time.Duration
	d := sink.DefaultAuthRetryInterval
	for range n {
		total += d
		d = min(2*d, sink.DefaultAuthRetryMaxInterval)
	}
	return total
}

// TestStoppedLineProbesSparingly (issue 19 §1): a line stopped for an hour
// (a revoked key) probes the API with pauses that double from 30s to 5m,
// not every 30s: each probe counts against the budget. The probes are
// counted by reason.
func TestStoppedLineProbesSparingly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", func(int, call) reply {
			return fail(401, "Authentication required", "App Secret key mismatch. Please login to the dashboard to verify key", "")
		}, nil)
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		if _, err := e.client.Send(ctx, request(3)); err == nil {
			t.Fatal("Send returned nil on a stopped line")
		}
		calls := e.api.got()
		// 30s 1m 2m 4m, then 5m: 1 + 4 + (60 - 7.5)/5 = 15 requests in the
		// hour (the old fixed 30s: 120).
		if n := len(calls); n != 15 {
			t.Fatalf("%d requests in an hour of a stopped line, want 15", n)
		}
		if got := testutil.ToFloat64(e.m.LineStoppedProbes.WithLabelValues("auth")); got != 15 {
			t.Fatalf("line_stopped_probes_total{auth} = %v, want 15 (one per pause)", got)
		}
	})
}
