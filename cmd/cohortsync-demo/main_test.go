package main

import (
	"bytes"
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

// runDemo runs the embedded demo end to end on a small sample with args
// added and checks its report: the membership check passes and the poison
// was dead-lettered. run stops all it started: Kafka, the emulator and the
// worker.
func runDemo(t *testing.T, args ...string) string {
	t.Setenv("KAFKA_BROKERS", "")
	t.Setenv("MOENGAGE_BASE_URL", "")
	leaks := goleak.IgnoreCurrent()
	var out, errOut bytes.Buffer
	args = append([]string{"-events", "800", "-cohorts", "6", "-users", "100", "-poison", "3", "-error-rate", "0.2"}, args...)
	err := run(context.Background(), args, &out, &errOut)
	if err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	// The lag queries' pooled connections, and the test's own.
	kafka.DefaultTransport.(*kafka.Transport).CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	rig.NoLeaks(t, 10*time.Second, leaks)
	report := out.String()
	if !strings.Contains(report, "Every cohort's membership equals the fold of the event log.") {
		t.Errorf("no membership verdict:\n%s", report)
	}
	figures := map[string]string{}
	for _, line := range strings.Split(report, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "dead-lettered":
			figures[f[0]] = f[1]
		case len(f) >= 3:
			figures[f[0]+" "+f[1]] = f[2]
		}
	}
	// At least once each: a replan (a workspace parked) reads again what
	// was not yet committed, malformed records included.
	dl, _ := strconv.Atoi(figures["dead-lettered"])
	if consumed, _ := strconv.Atoi(figures["events consumed"]); consumed < 803 || dl < 3 {
		t.Errorf("consumed %q dead-lettered %q, want at least 803 and 3:\n%s", figures["events consumed"], figures["dead-lettered"], report)
	}
	if strings.Contains(report, "MISMATCH") {
		t.Fatalf("mismatch:\n%s", report)
	}
	return report
}

// TestDemo: three workspaces, ws-gamma's key revoked mid-run and restored.
// Each workspace's fold check passes; ws-gamma got 401s and no acceptance
// while revoked, and was accepted again after the restore.
func TestDemo(t *testing.T) {
	report := runDemo(t, "-revoke-for", "3s")
	for _, ws := range []string{"ws-alpha", "ws-beta", "ws-gamma"} {
		if !regexp.MustCompile(`(?m)^  ` + ws + ` +2 +\d+ +\d+ ok `).MatchString(report) {
			t.Errorf("no fold check passed for %s:\n%s", ws, report)
		}
	}
	stopped := regexp.MustCompile(`ws-gamma +stopped: ([1-9]\d*) requests answered 401 in all, 0 changes accepted meanwhile; first accepted [^ ]+ after the restore`)
	if !stopped.MatchString(report) {
		t.Errorf("ws-gamma's revocation not reported as stopped, then accepted after the restore:\n%s", report)
	}
	if n := strings.Count(report, "changes accepted meanwhile; the longest time without an acceptance"); n != 2 {
		t.Errorf("%d workspaces reported beside the revoked one, want 2:\n%s", n, report)
	}
	// Isolation: ws-gamma's changes were parked and the group committed
	// past them while it was revoked.
	m := regexp.MustCompile(`The group committed (\d+) source records meanwhile.*\n.*changes were parked \((\d+) records`).FindStringSubmatch(report)
	if m == nil || m[1] == "0" || m[2] == "0" {
		t.Errorf("no commits or nothing parked during the revocation (%q):\n%s", m, report)
	}
}

// TestDemoOneWorkspace: the single-workspace demo, its per-cohort table.
func TestDemoOneWorkspace(t *testing.T) {
	report := runDemo(t, "-workspaces", "1")
	if n := strings.Count(report, "cohort-0"); n != 6 {
		t.Errorf("%d cohort lines, want 6:\n%s", n, report)
	}
	if strings.Contains(report, "revoked") {
		t.Errorf("a revocation with one workspace:\n%s", report)
	}
	if !regexp.MustCompile(`(?m)^  dead-lettered +3 `).MatchString(report) {
		t.Errorf("one workspace, nothing replanned: want each malformed record dead-lettered once:\n%s", report)
	}
}
