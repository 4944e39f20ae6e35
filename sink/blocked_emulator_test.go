package sink_test

import (
	"context"
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

// TestBlockedProbeAgainstEmulator: the probe of a blocked workspace (the
// body {}) against the emulator: while WS_A's key is revoked it is answered
// 401 and the hold is renewed; once the key is restored (and nothing tells
// the Client) the next probe is answered 400 and ends the hold. This is
// the premise of the probe: the answer to {} tells a refused key (401) from
// an accepted one (400) on the emulator, which authenticates first.
func TestBlockedProbeAgainstEmulator(t *testing.T) {
	t.Parallel()
	cfg := emulator.DefaultConfig()
	cfg.Workspaces = map[string]emulator.Workspace{"WS_A": {Key: "key-a"}, "WS_B": {Key: "key-b"}}
	emu, err := emulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	m := metrics.New(nil)
	c, err := sink.New(sink.Config{
		Targets: func(ws string) (sink.Target, error) {
			k := map[string]string{"WS_A": "key-a", "WS_B": "key-b"}[ws]
			return sink.Target{ID: ws, BaseURL: srv.URL, Key: func() (string, error) { return k, nil }}, nil
		},
		AuthRetryInterval:    20 * time.Millisecond,
		AuthRetryMaxInterval: 40 * time.Millisecond,
		Metrics:              m,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	if err := emu.RevokeKey("WS_A"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	changed := c.BlockedChanged()
	res := make(chan error, 1)
	go func() { _, err := c.Send(ctx, wsRequest("WS_A", "c1", event.Add, 1)); res <- err }()
	<-changed
	cancel() // parked: only the probes ask the API about WS_A now
	<-res
	probes401 := func() float64 { return testutil.ToFloat64(m.WorkspaceRequests.WithLabelValues("WS_A", "401")) }
	base := probes401()
	deadline := time.Now().Add(5 * time.Second)
	for probes401() < base+3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if probes401() < base+3 || !c.Blocked("WS_A") {
		t.Fatalf("%v probes answered 401, Blocked(WS_A) %v; want 3 or more, and blocked", probes401()-base, c.Blocked("WS_A"))
	}
	changed = c.BlockedChanged()
	if err := emu.RestoreKey("WS_A"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("WS_A still blocked 5s after its key was restored")
	}
	if c.Blocked("WS_A") {
		t.Fatal("BlockedChanged closed but WS_A is blocked")
	}
	if got := testutil.ToFloat64(m.WorkspaceRequests.WithLabelValues("WS_A", "400")); got < 1 {
		t.Fatalf("no probe answered 400 (%v)", got)
	}
	var empty int
	for _, r := range emu.Requests() {
		if r.Workspace == "WS_A" && r.Applied {
			empty++
		}
	}
	if empty != 0 {
		t.Fatalf("%d requests of WS_A changed a segment", empty)
	}
}

// TestBlockedProbeAfterAQuietSpell: the worker's case of
// TestBlockedProbeAgainstEmulator. WS_A is parked, nothing else is sent for
// longer than a lease, and the lease is renewed meanwhile (as the
// consumer's heartbeats renew it): the fence's last deadline is the one of
// the last request, long past. The probe must wait for the lease (and move
// the fence) like any request; refused at the socket by the stale fence,
// it would never be answered and WS_A would stay blocked for ever.
func TestBlockedProbeAfterAQuietSpell(t *testing.T) {
	t.Parallel()
	cfg := emulator.DefaultConfig()
	cfg.Workspaces = map[string]emulator.Workspace{"WS_A": {Key: "key-a"}, "WS_B": {Key: "key-b"}}
	emu, err := emulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	const term = 50 * time.Millisecond // each Wait grants a lease this long
	lease := &fakeLease{next: func(int) time.Time { return time.Now().Add(term) }}
	m := metrics.New(nil)
	c, err := sink.New(sink.Config{
		Targets: func(ws string) (sink.Target, error) {
			k := map[string]string{"WS_A": "key-a", "WS_B": "key-b"}[ws]
			return sink.Target{ID: ws, BaseURL: srv.URL, Key: func() (string, error) { return k, nil }}, nil
		},
		Lease:                lease,
		AuthRetryInterval:    300 * time.Millisecond,
		AuthRetryMaxInterval: 300 * time.Millisecond,
		Metrics:              m,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	if err := emu.RevokeKey("WS_A"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	changed := c.BlockedChanged()
	res := make(chan error, 1)
	go func() { _, err := c.Send(ctx, wsRequest("WS_A", "c1", event.Add, 1)); res <- err }()
	<-changed
	cancel() // parked: only the probes ask the API about WS_A now
	<-res
	if err := emu.RestoreKey("WS_A"); err != nil {
		t.Fatal(err)
	}
	changed = c.BlockedChanged()
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatalf("WS_A still blocked 5s after its key was restored (probes answered 400: %v, unanswered: %v)",
			testutil.ToFloat64(m.WorkspaceRequests.WithLabelValues("WS_A", "400")),
			testutil.ToFloat64(m.WorkspaceRequests.WithLabelValues("WS_A", "0")))
	}
	if c.Blocked("WS_A") {
		t.Fatal("BlockedChanged closed but WS_A is blocked")
	}
}
