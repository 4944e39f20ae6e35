package sink_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestBlockedAgainstEmulator: the emulator revokes WS_A's key. WS_A's 401
// blocks WS_A only (BlockedChanged is closed; workspace_stopped and
// workspace_blocked name it), WS_B's batches go through and do not clear
// WS_A's stop. Restoring the key and calling TargetsChanged unblocks WS_A
// at once, and its batch is delivered.
func TestBlockedAgainstEmulator(t *testing.T) {
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
	if err := emu.RevokeKey("WS_A"); err != nil {
		t.Fatal(err)
	}
	changed := c.BlockedChanged()
	resA := make(chan error, 1)
	go func() { _, err := c.Send(ctx, wsRequest("WS_A", "c1", event.Add, 2)); resA <- err }()
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("BlockedChanged not closed 5s after WS_A's key was revoked")
	}
	if !c.Blocked("WS_A") || c.Blocked("WS_B") {
		t.Fatalf("Blocked(WS_A) %v, Blocked(WS_B) %v; want true, false", c.Blocked("WS_A"), c.Blocked("WS_B"))
	}
	if _, err := c.Send(ctx, wsRequest("WS_B", "c1", event.Add, 3)); err != nil {
		t.Fatalf("WS_B while WS_A is blocked: %v", err)
	}
	for _, g := range []struct {
		name string
		v    float64
		want float64
	}{
		{"workspace_stopped{WS_A,auth}", testutil.ToFloat64(m.WorkspaceStopped.WithLabelValues("WS_A", "auth")), 1},
		{"workspace_stopped{WS_B,auth}", testutil.ToFloat64(m.WorkspaceStopped.WithLabelValues("WS_B", "auth")), 0},
		{"workspace_blocked{WS_A}", testutil.ToFloat64(m.WorkspaceBlocked.WithLabelValues("WS_A")), 1},
		{"workspace_blocked{WS_B}", testutil.ToFloat64(m.WorkspaceBlocked.WithLabelValues("WS_B")), 0},
		{"line_stopped{auth}", testutil.ToFloat64(m.LineStopped.WithLabelValues("auth")), 1},
	} {
		if g.v != g.want {
			t.Errorf("%s = %v after WS_B's 2xx, want %v", g.name, g.v, g.want)
		}
	}
	if c.Blocked("WS_B") || !c.Blocked("WS_A") {
		t.Fatal("WS_B's 2xx changed the blocked view")
	}
	if err := emu.RestoreKey("WS_A"); err != nil {
		t.Fatal(err)
	}
	c.TargetsChanged()
	if c.Blocked("WS_A") {
		t.Fatal("WS_A still blocked after TargetsChanged")
	}
	select {
	case err := <-resA:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WS_A's batch not delivered 5s after TargetsChanged")
	}
	if got := testutil.ToFloat64(m.WorkspaceStopped.WithLabelValues("WS_A", "auth")); got != 0 {
		t.Fatalf("workspace_stopped{WS_A,auth} = %v after WS_A's 2xx", got)
	}
}
