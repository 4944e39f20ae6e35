package app

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// testProbes are probes of a started worker whose line is stopped and whose
// dead letters fail: what readiness must not depend on.
func testProbes(loops *metrics.Loops, bound time.Duration) *probes {
	yes := func() bool { return true }
	pr := &probes{joined: yes, lineStopped: yes, dlqFailing: yes, loops: loops, liveBound: bound}
	pr.running.Store(true)
	return pr
}

func serveProbes(t *testing.T, pr *probes) string {
	t.Helper()
	addr := make(chan string, 1)
	srv, err := serveHTTP("127.0.0.1:0", prometheus.NewRegistry(), pr,
		slog.New(slog.NewTextHandler(io.Discard, nil)), func(a string) { addr <- a }, defaultHTTPTimeouts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + <-addr
}

func probe(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestProbesReadyDespiteStoppedLine: a stopped line and failing dead
// letters leave the pod ready (issue 19 §1); the body still says so.
func TestProbesReadyDespiteStoppedLine(t *testing.T) {
	pr := testProbes(nil, time.Minute)
	base := serveProbes(t, pr)
	code, body := probe(t, base+"/readyz")
	if code != http.StatusOK || !strings.Contains(body, "line_stopped: true") || !strings.Contains(body, "dead_letter_failing: true") {
		t.Fatalf("/readyz with a stopped line: %d %q, want 200 naming the stopped line", code, body)
	}
	pr.running.Store(false) // shutting down
	if code, _ := probe(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while shutting down: %d, want 503", code)
	}
}

// TestProbesLiveness: a loop busy past the bound fails /healthz; a loop
// that waits on the outside (a broker or API outage) for as long does not,
// nor one that stopped.
func TestProbesLiveness(t *testing.T) {
	loops := metrics.New(nil).Loops
	const bound = 200 * time.Millisecond
	base := serveProbes(t, testProbes(loops, bound))

	waiting := loops.Start("decode in/0") // waits for records from a broker that is down
	waiting.Busy()
	waiting.Idle()
	done := loops.Start("commit")
	done.Busy()
	done.Stop()
	time.Sleep(3 * bound)
	if code, body := probe(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz with loops waiting on the outside: %d %q, want 200", code, body)
	}

	wedged := loops.Start("batcher")
	wedged.Busy() // and never goes around again
	time.Sleep(3 * bound)
	code, body := probe(t, base+"/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "batcher busy for") {
		t.Fatalf("/healthz with a wedged loop: %d %q, want 503 naming the batcher", code, body)
	}
	wedged.Busy() // it went around: alive again
	if code, body := probe(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz after the loop went around: %d %q, want 200", code, body)
	}
}
