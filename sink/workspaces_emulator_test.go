package sink_test

import (
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestTargetsAgainstEmulator: the emulator serves two workspaces; one
// Client sends both workspaces' changes of a cohort with the same id, each
// into its own workspace. Workspace A's key is revoked: A's batch stops
// (auth) while B's goes through; once A's key is restored and
// TargetsChanged called, A's batch is delivered within a second, not after
// the minute-long stop pause.
func TestTargetsAgainstEmulator(t *testing.T) {
	t.Parallel()
	cfg := emulator.DefaultConfig()
	cfg.Workspaces = map[string]emulator.Workspace{"WS_A": {Key: "key-a"}, "WS_B": {Key: "key-b"}}
	emu, err := emulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	keys := map[string]string{"WS_A": "key-a", "WS_B": "key-b"}
	m := metrics.New(nil)
	c, err := sink.New(sink.Config{
		Targets: func(ws string) (sink.Target, error) {
			k, ok := keys[ws]
			if !ok {
				return sink.Target{}, sink.ErrUnknownWorkspace
			}
			return sink.Target{ID: ws, BaseURL: srv.URL, Key: func() (string, error) { return k, nil }}, nil
		},
		AuthRetryInterval: time.Minute,
		InitialInterval:   time.Millisecond,
		Metrics:           m,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	ctx := t.Context()
	a, b := wsRequest("WS_A", "c1", event.Add, 2), wsRequest("WS_B", "c1", event.Add, 3)
	b.UIDs = []string{"b0", "b1", "b2"}
	for _, ws := range []string{"WS_A", "WS_B"} { // u0 into each workspace's c1
		if _, err := c.Send(ctx, wsRequest(ws, "c1", event.Add, 1)); err != nil {
			t.Fatalf("%s: %v", ws, err)
		}
	}
	if err := emu.RevokeKey("WS_A"); err != nil {
		t.Fatal(err)
	}
	resA := make(chan error, 1)
	go func() { _, err := c.Send(ctx, a); resA <- err }()
	if _, err := c.Send(ctx, b); err != nil {
		t.Fatalf("WS_B while WS_A's key is revoked: %v", err)
	}
	// A's 401 stops its Send (a probe pause begins); B's acceptance may
	// have cleared the client-wide auth flag since, so the pause is counted.
	probes := m.LineStoppedProbes.WithLabelValues("auth")
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(probes) < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if testutil.ToFloat64(probes) < 1 {
		t.Fatal("WS_A's revoked key did not stop its Send")
	}
	if err := emu.RestoreKey("WS_A"); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	c.TargetsChanged()
	select {
	case err := <-resA:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WS_A's batch not delivered 5s after TargetsChanged (the stop pause is a minute)")
	}
	if d := time.Since(restored); d > time.Second {
		t.Fatalf("WS_A delivered %v after TargetsChanged, want within 1s", d)
	}
	for ws, want := range map[string][]string{"WS_A": {"u0", "u1"}, "WS_B": {"b0", "b1", "b2", "u0"}} {
		if got := emu.Members(ws, a.Partner, "c1"); !slices.Equal(got, want) {
			t.Errorf("%s's c1 holds %v, want %v", ws, got, want)
		}
	}
}
