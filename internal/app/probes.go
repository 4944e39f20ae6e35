package app

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// probes are /healthz (liveness) and /readyz (readiness). Both look only at
// this process, never at what is outside it (DESIGN.md "Probes"; README
// "Health and readiness"):
//
//   - /readyz: this pod can do its work: it has started (built, serving),
//     its consumer-group loop runs (joined, or joining: a rebalance or a
//     broker outage is the group's weather, not this pod's fault), and it is
//     not shutting down. A stopped line (a rejected key, one batch the API
//     refuses), failing dead-letter writes or an unreachable broker do not
//     make it unready: they are outside the pod, would hit every replica
//     alike, and an unready fleet turns them into a stalled rollout, a PDB
//     that blocks drains and a drain that evicts every pod. They show in the
//     body, and as metrics and alerts (cohortsync_line_stopped,
//     cohortsync_auth_failing, cohortsync_dead_letter_failing).
//   - /healthz: none of the process's own loops is wedged (metrics.Loops: a
//     loop busy, not waiting on the outside, for longer than liveBound). A
//     broker or API outage makes loops wait, never busy: it never fails
//     liveness, so the kubelet does not restart healthy pods into it.
type probes struct {
	// running is true while the consumer-group loop runs, until shutdown
	// begins.
	running atomic.Bool
	// joined reports a consumer-group generation; lineStopped and
	// dlqFailing are shown, not judged.
	joined, lineStopped, dlqFailing func() bool
	loops                           *metrics.Loops
	liveBound                       time.Duration
}

// ready reports readiness.
func (p *probes) ready() bool { return p != nil && p.running.Load() }

// status is the body of /readyz: the verdict, then what it does not depend
// on.
func (p *probes) status() string {
	var b strings.Builder
	if p.ready() {
		b.WriteString("ready\n")
	} else {
		b.WriteString("not ready: starting or shutting down\n")
	}
	group := "joining"
	if p.joined() {
		group = "joined"
	}
	fmt.Fprintf(&b, "group: %s\n", group)
	fmt.Fprintf(&b, "line_stopped: %v (not a readiness condition: see cohortsync_line_stopped)\n", p.lineStopped())
	fmt.Fprintf(&b, "dead_letter_failing: %v (not a readiness condition: see cohortsync_dead_letter_failing)\n", p.dlqFailing())
	return b.String()
}

// register adds /healthz and /readyz to mux.
func (p *probes) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if wedged := p.loops.Wedged(p.liveBound); len(wedged) > 0 {
			http.Error(w, fmt.Sprintf("wedged (busy for over %s): %s", p.liveBound, strings.Join(wedged, "; ")),
				http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		body := p.status()
		if !p.ready() {
			http.Error(w, body, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(body))
	})
}
