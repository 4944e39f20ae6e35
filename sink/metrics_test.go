package sink_test

// The request metrics: requests_total, retries_total,
// request_duration_seconds, rate_limit_wait_seconds_total and the
// auth_failing gauge.

import (
	"maps"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestMetrics: requests_total counts every attempt by action and code ("0":
// no answer), retries_total every repeated attempt by reason,
// request_duration_seconds every attempt, rate_limit_wait_seconds_total the
// 429 pause.
func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		script := []reply{
			{status: 500}, // 0
			{reset: true}, // 1: code 0, network
			{status: 429, header: map[string]string{"Retry-After": "2"}}, // 2
			{status: 408},               // 3
			{hold: make(chan struct{})}, // 4: no answer: attempt timeout, code 0
			{status: 413},               // 5: split [u0 u1] [u2 u3]
			{status: 401},               // 6: first half
			ok(),                        // 7: first half accepted
			fail(400, "InvalidAttributeError", "bad uid", "uid"), // 8: second half
			ok(), // 9: u2
			fail(400, "InvalidAttributeError", "bad uid", "uid"), // 10: u3 rejected
		}
		e := newEnv(t, "mem", func(n int, _ call) reply { return script[n] },
			func(c *sink.Config) { c.AttemptTimeout = 3 * time.Second })
		req := request(4)
		req.Action = event.Remove
		rej, err := e.client.Send(t.Context(), req)
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		if want := []wire.Rejection{{UID: "u3", Reason: "400 InvalidAttributeError: bad uid"}}; !slices.Equal(rej, want) {
			t.Fatalf("rejections %v, want %v", rej, want)
		}
		if n := len(e.api.got()); n != len(script) {
			t.Fatalf("%d requests, want %d", n, len(script))
		}
		wantRequests := map[string]float64{"500": 1, "0": 2, "429": 1, "408": 1, "413": 1, "401": 1, "200": 2, "400": 2}
		for code, want := range wantRequests {
			if got := testutil.ToFloat64(e.m.Requests.WithLabelValues(string(event.Remove), code)); got != want {
				t.Errorf("requests_total{action=remove_members,code=%s} = %v, want %v", code, got, want)
			}
		}
		if n := testutil.CollectAndCount(e.m.Requests); n != len(wantRequests) {
			t.Errorf("requests_total has %d series, want %d", n, len(wantRequests))
		}
		wantRetries := map[string]float64{"server_error": 1, "network": 1, "rate_limited": 1, "timeout": 2,
			"too_large": 2, "auth": 1, "invalid": 2}
		if got := e.allRetries(); !maps.Equal(got, wantRetries) {
			t.Errorf("retries_total = %v, want %v", got, wantRetries)
		}
		var m dto.Metric
		if err := e.m.RequestDuration.Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetHistogram().GetSampleCount(); got != uint64(len(script)) {
			t.Errorf("request_duration_seconds count = %d, want %d", got, len(script))
		}
		if got := m.GetHistogram().GetSampleSum(); got != 3 { // only the timed-out attempt took time
			t.Errorf("request_duration_seconds sum = %v, want 3 (the attempt timeout)", got)
		}
		if got := testutil.ToFloat64(e.m.RateLimitWait); got != 2 {
			t.Errorf("rate_limit_wait_seconds_total = %v, want 2", got)
		}
		if got := testutil.ToFloat64(e.m.AuthFailing); got != 0 || e.client.LineStopped() {
			t.Errorf("auth failing after acceptance: gauge %v, AuthFailing %v", got, e.client.LineStopped())
		}
	})
}

// TestRequestsMetricByAction: the action label is the request's.
func TestRequestsMetricByAction(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "http", nil, nil)
	req := request(1)
	req.Action = event.Remove
	if _, err := e.client.Send(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(e.m.Requests.WithLabelValues("remove_members", "200")); got != 1 {
		t.Fatalf("requests_total{remove_members,200} = %v, want 1", got)
	}
	if e.requests("200") != 0 {
		t.Fatal("counted under add_members")
	}
}
