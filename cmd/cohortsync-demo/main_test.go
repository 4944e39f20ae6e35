package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"

	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

// TestDemo runs the embedded demo end to end on a small sample and checks
// its report: the membership check passes and the poison was dead-lettered.
// run stops all it started: Kafka, the emulator and the worker.
func TestDemo(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "")
	t.Setenv("MOENGAGE_BASE_URL", "")
	leaks := goleak.IgnoreCurrent()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"-events", "800", "-cohorts", "5", "-users", "100", "-poison", "3", "-error-rate", "0.2"}, &out, &errOut)
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
	if figures["events consumed"] != "803" || figures["dead-lettered"] != "3" {
		t.Errorf("consumed %q dead-lettered %q, want 803 and 3:\n%s", figures["events consumed"], figures["dead-lettered"], report)
	}
	if strings.Contains(report, "MISMATCH") {
		t.Fatalf("mismatch:\n%s", report)
	}
}
