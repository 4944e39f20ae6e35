package sink

import (
	"cmp"
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// Blocked workspaces (issue 21, item 4: the view the consumer parks by).
//
// A workspace is blocked when it cannot take changes for its own reasons,
// so that the consumer can park its changes and let the others flow:
//
//   - its line stops (stoppedLine): the API rejects its credentials or the
//     configuration (401, 403, 404, 415, ...), a batch of it fails alike in
//     every part (invalid_batch), or it has no target or key (no_key);
//   - it fails alone ("unavailable"): its own requests have failed
//     retryably (5xx, 408, timeouts, connection errors, a 2xx "status":
//     "fail"; never a 429, which is a budget signal, nor a lapsed lease)
//     since failingSince, and an attempt of it that started BlockedAfter or
//     more after failingSince failed while another workspace was in a
//     healthy streak (a 2xx strictly before that attempt started and one
//     after, with no failure of its own between). When every workspace fails
//     alike, nobody has such a streak: nothing is blocked, and the changes
//     wait as before (a global outage parks nothing). An attempt that
//     started before another workspace recovered from a shared outage does
//     not count: the end of a global outage blocks nobody.
//
// A block is a hold with a time limit: once a workspace is parked it may
// have no request in flight at all, and no request proves it healthy
// without changing a cohort. So a hold ends:
//
//   - at any 2xx for the workspace;
//   - at TargetsChanged, for a hold for the credentials, the
//     configuration or a missing key (the registry may have fixed it);
//   - when its time limit passes: the workspace's stop pause,
//     AuthRetryInterval (30 s) at first, doubling at every hold that
//     follows without a 2xx between, up to AuthRetryMaxInterval (5 min),
//     unless a request of the workspace failed or stopped during the hold
//     (a Send still at work), or the probe says it is still refused or
//     failing: the hold is then renewed for AuthRetryInterval or 10 s
//     (blockedProbeEvery), whichever is shorter, so that a workspace fixed
//     on the API's side (a key restored, an outage over) is found within
//     that, at one {} per renewal. Only a hold
//     that comes back after a probe ended one (the API answered {} with a
//     400 but refuses the workspace's requests) doubles: that churn (an
//     un-detour, a replan) is what the doubling bounds.
//
// The probe (probeWorkspace) is `check`'s (preflight.APIProbe): the body
// {}, with the workspace's credentials and a rate-limit permit. It names no
// cohort, so nothing can change. A 401/403, a configuration answer, a 5xx,
// a 429 or no answer renews the hold; a 400 (the API answered and did not
// refuse the credentials; the contract does not say whether it checks them
// before the body) or a 2xx ends it, and the workspace's resumed traffic
// is the proof: its first request that fails the same way holds it again
// at once (a stop, or a failure while its failingSince is still
// BlockedAfter old and another workspace still flows), for twice as long
// as the hold before.
//
// Without Config.Targets (the single-workspace configuration) nothing is
// ever blocked: there is no other workspace to keep flowing, and the line
// stops as it always did.

// wsLine is the stopped line and the health of one workspace.
type wsLine struct {
	auth     bool // the API rejects the credentials; cleared by the workspace's 2xx
	config   bool // the API rejects the endpoint or a header; cleared by the workspace's 2xx
	batches  int  // Sends stopped by a batch-wide 4xx
	noKey    int  // Sends whose workspace has no target or key (LineStopNoKey)
	unrouted int  // Sends whose workspace this Client cannot send to (LineStopConfig)

	failingSince time.Time // the first retryable failure since the last 2xx; zero: none
	failedAt     time.Time // when the last failed attempt started
	okSince      time.Time // the start of the current healthy streak (a 2xx, no failure since); zero: none
	lastOK       time.Time // the last 2xx
	probedOK     time.Time // when a probe last ended a hold: failures before it hold nothing

	label  string        // the workspace label of its metrics (Client.workspaceLabel)
	held   string        // why the workspace is blocked ("": it is not)
	heldAt time.Time     // when the hold began, or was renewed
	badAt  time.Time     // the last failure or stop of the workspace
	pause  time.Duration // the time limit of its next hold; 0: AuthRetryInterval
	gen    uint64        // counts holds, so that the timer of an ended one does nothing
}

// stoppedFor reports whether w's line is stopped for reason.
func (w *wsLine) stoppedFor(r LineStopReason) bool {
	switch r {
	case stopAuth:
		return w.auth
	case stopConfig:
		return w.config || w.unrouted > 0
	case stopInvalidBatch:
		return w.batches > 0
	case stopNoKey:
		return w.noKey > 0
	}
	return false
}

// stopped reports whether w's line is stopped for any reason.
func (w *wsLine) stopped() bool {
	return w.auth || w.config || w.unrouted > 0 || w.batches > 0 || w.noKey > 0
}

// publish sets every gauge from the state: cohortsync_line_stopped and
// cohortsync_auth_failing (any workspace), cohortsync_workspace_stopped and
// cohortsync_workspace_blocked (per workspace label: "other" is set while
// any workspace under it is). A label no longer used is set to 0. It costs
// one pass over the workspaces, at a stop, a hold and their ends only; mu
// is held.
func (l *stoppedLine) publish() {
	var line [4]bool // in LineStopReasons order
	type state struct {
		stopped [4]bool
		blocked bool
	}
	by := make(map[string]*state, len(l.ws)+len(l.shown))
	for _, w := range l.ws {
		s := by[w.label]
		if s == nil {
			s = &state{}
			by[w.label] = s
		}
		for i, r := range LineStopReasons {
			st := w.stoppedFor(r)
			s.stopped[i] = s.stopped[i] || st
			line[i] = line[i] || st
		}
		s.blocked = s.blocked || w.held != ""
	}
	for label := range l.shown {
		if by[label] == nil {
			by[label] = &state{}
		}
	}
	l.shown = make(map[string]bool, len(by))
	for label, s := range by {
		for i, r := range LineStopReasons {
			l.m.WorkspaceStopped.WithLabelValues(label, string(r)).Set(b2f(s.stopped[i]))
		}
		l.m.WorkspaceBlocked.WithLabelValues(label).Set(b2f(s.blocked))
		l.shown[label] = true
	}
	l.m.AuthFailing.Set(b2f(line[0] || line[1]))
	for i, r := range LineStopReasons {
		l.m.LineStopped.WithLabelValues(string(r)).Set(b2f(line[i]))
	}
}

// blockUnavailable is the hold reason of a workspace that fails alone.
const blockUnavailable = "unavailable"

// stoppedLine is the stopped line of every workspace of a Client, shared
// by its Sends, and the blocked view made from it. Its gauges are written
// under the same lock as its state, so they never disagree with it.
type stoppedLine struct {
	mu      sync.Mutex         // guards the fields below and orders the gauges with them
	ws      map[string]*wsLine // by workspace ID; an entry per workspace a Send was for
	failing map[string]bool    // the workspaces whose failingSince is set
	changed chan struct{}      // closed and replaced at every change of a hold
	stopped atomic.Bool        // LineStopped
	added   bool               // an entry was added since the last sync

	def          string // the default workspace (Config.WorkspaceID)
	single       bool   // no Config.Targets: any stop stops the line, nothing is blocked
	blockedAfter time.Duration
	pause0, max  time.Duration          // the first and the longest hold
	renew        time.Duration          // a hold renewed (still refused or failing): blockedProbeEvery at most
	label        func(ws string) string // the workspace label (Client.workspaceLabel)
	probe        func(ws string) bool   // Client.probeWorkspace
	shown        map[string]bool        // the workspace labels publish has set
	log          func(msg string, args ...any)
	m            *metrics.Metrics
}

// get returns ws's entry, made on first use; mu is held.
func (l *stoppedLine) get(ws string) *wsLine {
	w := l.ws[ws]
	if w == nil {
		w = &wsLine{label: l.label(ws)}
		l.ws[ws] = w
		l.added = true // LineStopped counts it: sync
	}
	return w
}

// hold blocks ws (w) for why, unless it is held already or the Client has
// one workspace; the hold ends by itself after w.pause. mu is held.
func (l *stoppedLine) hold(ws string, w *wsLine, why string) {
	if l.single {
		return
	}
	if w.held != "" {
		w.held = why // the latest reason: TargetsChanged ends a hold for the credentials
		return
	}
	d := cmp.Or(w.pause, l.pause0)
	w.pause = min(2*d, l.max) // the next hold, unless a 2xx comes between
	w.held = why
	l.limit(ws, w, d)
	l.publish()
	l.log("workspace blocked: its changes may be parked while the other workspaces flow",
		"workspace", ws, "reason", why, "for", d)
	l.notify()
}

// limit starts w's hold's time limit d; mu is held.
func (l *stoppedLine) limit(ws string, w *wsLine, d time.Duration) {
	w.heldAt = time.Now()
	w.gen++
	gen := w.gen
	time.AfterFunc(d, func() { l.expire(ws, gen) })
}

// bad records a failure or a stop of ws (w) now, and holds ws for why
// ("": only recorded); mu is held.
func (l *stoppedLine) bad(ws string, w *wsLine, why string) {
	w.badAt, w.okSince = time.Now(), time.Time{}
	if why != "" {
		l.hold(ws, w, why)
	}
}

// unhold ends ws's hold, if any; mu is held.
func (l *stoppedLine) unhold(ws string, w *wsLine, why string) {
	if w.held == "" {
		return
	}
	l.log("workspace unblocked", "workspace", ws, "was", w.held, "because", why)
	w.held = ""
	l.publish()
	l.notify()
}

// expire ends hold gen of ws at its time limit, unless a request of ws
// failed or stopped during the hold (a Send still at work probed it), or
// the probe (probeWorkspace) shows ws still refused or failing: the hold is
// then renewed, for l.renew, without a change of Blocked. The probe
// is sent without the lock.
func (l *stoppedLine) expire(ws string, gen uint64) {
	l.mu.Lock()
	w := l.ws[ws]
	if w == nil || w.gen != gen || w.held == "" {
		l.mu.Unlock()
		return
	}
	if w.badAt.After(w.heldAt) {
		l.limit(ws, w, l.renew)
		l.mu.Unlock()
		return
	}
	why := w.held
	l.mu.Unlock()
	ok := l.probe(ws)
	l.mu.Lock()
	defer l.mu.Unlock()
	if slices.Contains(LineStopReasons, LineStopReason(why)) {
		l.m.LineStoppedProbes.WithLabelValues(why).Inc()
	}
	switch {
	case w.gen != gen || w.held == "": // ended meanwhile (a 2xx, TargetsChanged)
	case ok:
		w.probedOK = time.Now()
		l.unhold(ws, w, "its probe was answered without a refusal after its stop pause: its next request tells")
	default:
		l.limit(ws, w, l.renew)
	}
}

// notify closes the channel of BlockedChanged; mu is held.
func (l *stoppedLine) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// targetsChanged ends the holds for the credentials, the configuration or
// a missing key: the registry may have fixed them.
func (l *stoppedLine) targetsChanged() {
	l.mu.Lock()
	defer l.mu.Unlock()
	defer l.publish()
	for ws, w := range l.ws {
		w.label = l.label(ws) // the registry may have gained or lost ws
		switch w.held {
		case string(stopAuth), string(stopConfig), string(stopNoKey):
			l.unhold(ws, w, "the workspaces changed")
		}
	}
}

// failure records a retryable failure of ws's attempt that started at
// sent, and holds ws when it fails alone.
func (l *stoppedLine) failure(ws string, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.get(ws)
	if w.failingSince.IsZero() {
		w.failingSince = sent
		l.failing[ws] = true
	}
	w.failedAt = sent
	l.bad(ws, w, "")
	if l.added {
		l.sync() // LineStopped counts the new workspace
	}
	if !l.failsAlone(w) {
		return
	}
	for id, v := range l.ws {
		if id != ws && !v.okSince.IsZero() && v.okSince.Before(sent) && !v.lastOK.Before(sent) {
			l.hold(ws, w, blockUnavailable)
			return
		}
	}
}

// failsAlone reports whether w's last failed attempt started BlockedAfter
// or more into its failures; mu is held.
func (l *stoppedLine) failsAlone(w *wsLine) bool {
	return !w.failingSince.IsZero() && w.failedAt.Sub(w.failingSince) >= l.blockedAfter
}

// othersFailAlone holds, after ok's 2xx, the other failing workspaces whose
// last failed attempt started BlockedAfter into their failures and within
// ok's healthy streak; mu is held.
func (l *stoppedLine) othersFailAlone(ws string, ok *wsLine) {
	for id := range l.failing {
		w := l.ws[id]
		// A failure from before the probe that ended w's hold holds nothing:
		// w (parked) may send nothing for a while, and another workspace's
		// 2xx would hold it again at once, for ever.
		if id != ws && l.failsAlone(w) && ok.okSince.Before(w.failedAt) && w.failedAt.After(w.probedOK) {
			l.hold(id, w, blockUnavailable)
		}
	}
}

// Blocked reports whether workspace ws ("": the default one) cannot take
// changes for its own reasons: its line is stopped, or it fails alone (see
// the top of blocked.go for the rules and when a block ends). It is never
// true without Config.Targets. Mirrored by cohortsync_workspace_blocked.
// Cheap (a map lookup under a lock); safe for concurrent use.
func (c *Client) Blocked(ws string) bool {
	l := c.line
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.ws[c.workspaceOf(ws)]
	return w != nil && w.held != ""
}

// BlockedChanged returns a channel that is closed at the next change of
// Blocked for any workspace. Take it before reading Blocked, so that a
// change after the reading is not missed.
func (c *Client) BlockedChanged() <-chan struct{} {
	c.line.mu.Lock()
	defer c.line.mu.Unlock()
	return c.line.changed
}

// noteFailure tells the blocked view about a failed attempt of req that
// started at sent and is retried (d): only the failures that are the
// workspace's trouble count (not a 429, nor a lease lapse).
func (c *Client) noteFailure(ws string, d decision, sent time.Time) {
	if d.kind == retryBackoff {
		c.line.failure(c.workspaceOf(ws), sent)
	}
}

// blockedProbeEvery bounds how long a blocked workspace that is still
// refused or failing waits for its next probe: a key restored on the API's
// side is found within it. One {} per 10 s of a workspace's own budget,
// which it does not use while parked; a hold for 30 s found a restore up to
// 30 s late, half of the 60 s the issue gives a parked workspace to
// converge after its key is back.
const blockedProbeEvery = 10 * time.Second

// newStoppedLine makes the Client's stopped lines; c.cfg has its defaults.
func (c *Client) newStoppedLine() *stoppedLine {
	return &stoppedLine{
		ws: map[string]*wsLine{}, failing: map[string]bool{}, changed: make(chan struct{}),
		def: c.cfg.WorkspaceID, single: c.cfg.Targets == nil, blockedAfter: c.cfg.BlockedAfter,
		pause0: c.cfg.AuthRetryInterval, max: c.cfg.AuthRetryMaxInterval, renew: min(c.cfg.AuthRetryInterval, blockedProbeEvery),
		label: c.workspaceLabel, probe: c.probeWorkspace, log: c.log.Warn, m: c.m,
	}
}

// OtherWorkspace is the workspace label of the metrics of a workspace that
// is not the Client's (not in Config.Targets; not Config.WorkspaceID
// without Targets): the label stays bounded by the registry.
const OtherWorkspace = "other"

// workspaceLabel returns the workspace label of ws's metrics: ws when the
// Client knows it, else OtherWorkspace.
func (c *Client) workspaceLabel(ws string) string {
	if c.cfg.Targets == nil {
		if ws == c.cfg.WorkspaceID {
			return ws
		}
		return OtherWorkspace
	}
	if _, err := c.cfg.Targets(ws); err != nil {
		return OtherWorkspace
	}
	return ws
}

// probeBody is the body of the probe of a blocked workspace:
// preflight.APIProbe, a JSON object without any required field.
var probeBody = []byte("{}")

// probeWorkspace sends probeBody once for workspace ws, under the lease
// and after a rate-limit permit (waited for at most AttemptTimeout), and reports whether the
// answer lets ws take requests again: a 2xx with the API's body, or a 400.
// Anything else, or no target, no permit or no answer, is false. Counted
// in workspace_requests_total, not in requests_total (it carries no change).
func (c *Client) probeWorkspace(ws string) bool {
	d, _, err := c.destFor(ws)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.AttemptTimeout)
	defer cancel()
	if _, err := c.waitLease(ctx); err != nil {
		return false
	}
	lim := c.limiterFor(ws)
	if lim != nil {
		if err := lim.Wait(ctx); err != nil {
			return false
		}
	}
	if _, err := c.takeSlot(ctx, lim, time.Now(), func() (time.Time, error) {
		err := lim.Wait(ctx)
		return time.Now(), err
	}); err != nil {
		return false
	}
	defer c.slots.give()
	hreq, err := c.newRequest(ctx, d, probeBody)
	if err != nil {
		return false
	}
	resp, err := c.cfg.HTTPClient.Do(hreq)
	if err != nil {
		c.m.WorkspaceRequests.WithLabelValues(d.ws, "0").Inc()
		return false
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, readLimit))
	_, _ = io.CopyN(io.Discard, resp.Body, readLimit)
	resp.Body.Close()
	c.m.WorkspaceRequests.WithLabelValues(d.ws, metrics.Code(resp.StatusCode)).Inc()
	code := resp.StatusCode
	return code == http.StatusBadRequest || code >= 200 && code < 300 && successBody(raw) != notAPI
}
