package sink

import (
	"context"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// LineStopped reports whether sending is stopped, for readiness. Each
// workspace has its own stopped line (stoppedLine): the API rejects its
// credentials (401, 403) or the configuration (415, 404, 405, 3xx, a
// header), which the workspace's next 2xx clears; or it answers some Send's
// batch of the workspace with a 4xx that hits every part of it alike, which
// lasts until that batch goes through or its Send returns; or some Send's
// batch is for a workspace it has no credentials for (no_key; config
// without Targets), which lasts until that workspace has them or the Send
// returns. Stopped Sends retry every stop pause (AuthRetryInterval,
// doubling) and never drop nor reject anything meanwhile; TargetsChanged
// makes all but the invalid-batch ones try at once.
//
// Without Config.Targets (one workspace) it is true while any line is
// stopped, as before workspaces existed. With Targets it is true while the
// default workspace's line (Config.WorkspaceID) is stopped, or while at
// least one line is stopped and no workspace this Client has sent for
// since it started has a line that is not: one workspace's trouble does not
// make the worker not-ready while others flow. Mirrored per reason by the
// cohortsync_line_stopped{reason} gauge (1 while the line of any workspace
// is stopped for that reason; for the credentials and the configuration
// also cohortsync_auth_failing) and per workspace by
// cohortsync_workspace_stopped{workspace,reason}.
func (c *Client) LineStopped() bool { return c.line.stopped.Load() }

// stop stops ws's line for reason (stopAuth or stopConfig) and holds ws
// (Blocked). It reports whether the state changed.
func (l *stoppedLine) stop(ws string, reason LineStopReason) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.get(ws)
	changed := false
	switch reason {
	case stopAuth:
		changed, w.auth = !w.auth, true
	case stopConfig:
		changed, w.config = !w.config, true
	}
	l.bad(ws, w, string(reason))
	if changed {
		l.sync()
	}
	return changed
}

// accept records a 2xx for ws at now: it ends ws's stop for the credentials
// and the configuration, its failures and its hold (Blocked), and may show
// that another workspace fails alone (blockedAfter). It reports whether
// the stop for the credentials or the configuration ended.
func (l *stoppedLine) accept(ws string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.get(ws)
	changed := w.auth || w.config
	w.auth, w.config = false, false
	if w.okSince.IsZero() {
		w.okSince = now
	}
	w.lastOK = now
	w.failingSince, w.failedAt = time.Time{}, time.Time{}
	delete(l.failing, ws)
	w.pause = 0
	l.unhold(ws, w, "accepted")
	if changed || l.added {
		l.sync()
	}
	l.othersFailAlone(ws, w)
	return changed
}

// addBatch counts a Send of ws in (+1) or out (-1) of the invalid-batch
// stop; +1 also holds ws.
func (l *stoppedLine) addBatch(ws string, delta int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.get(ws)
	w.batches += delta
	if delta > 0 {
		l.bad(ws, w, string(stopInvalidBatch))
	}
	l.sync()
}

// addTarget counts a Send of ws in (+1) or out (-1) of the stop for a
// missing target, for reason (LineStopNoKey or LineStopConfig); +1 also
// holds ws.
func (l *stoppedLine) addTarget(ws string, reason LineStopReason, delta int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.get(ws)
	if reason == stopNoKey {
		w.noKey += delta
	} else {
		w.unrouted += delta
	}
	if delta > 0 {
		l.bad(ws, w, string(reason))
	}
	l.sync()
}

// reprobe holds ws again for reason after a stopped Send's probe failed
// (the hold may have ended by its time limit meanwhile).
func (l *stoppedLine) reprobe(ws string, reason LineStopReason) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bad(ws, l.get(ws), string(reason))
}

// sync updates the line's flag and every gauge (publish); mu is held.
func (l *stoppedLine) sync() {
	l.added = false
	var any, free, defStopped bool
	for id, x := range l.ws {
		st := x.stopped()
		any, free = any || st, free || !st
		if id == l.def && st {
			defStopped = true
		}
	}
	l.stopped.Store(any && (l.single || defStopped || !free))
	l.publish()
}

func b2f(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// stopPause returns the pause before the next probe of a stopped line
// (reason), counts the probe, and doubles the pause after it, up to
// AuthRetryMaxInterval.
func (s *sender) stopPause(reason LineStopReason) time.Duration {
	d := s.stopWait
	if d == 0 {
		d = s.c.cfg.AuthRetryInterval
	}
	s.stopWait = min(2*d, s.c.cfg.AuthRetryMaxInterval)
	s.c.m.LineStoppedProbes.WithLabelValues(string(reason)).Inc()
	return d
}

// stopBatch stops the line for req, whose every part failed alike (serr the
// last answer), and waits (stopPause) before it is sent again.
func (s *sender) stopBatch(ctx context.Context, req wire.Request, serr *StatusError) error {
	c := s.c
	pause := s.stopPause(stopInvalidBatch)
	if !s.batchStopped {
		s.batchStopped = true
		c.line.addBatch(s.ws(), 1)
	} else {
		c.line.reprobe(s.ws(), stopInvalidBatch)
	}
	if key := "invalid_batch|" + serr.dedupeKey(); key != s.lastKey {
		s.lastKey = key
		s.log().Error("the API rejects every part of the batch alike, with no evidence against any member: "+
			"the batch is stopped and retried slowly; nothing is dropped or committed",
			"err", serr, "status", serr.Code, "members", len(req.UIDs), "delay", pause)
	}
	if err := sleep(ctx, pause); err != nil {
		return s.stopped(req, -1, err, serr)
	}
	s.since = time.Now() // a stopped line does not count toward MaxElapsed
	return nil
}

// unstop ends this Send's invalid-batch stop, if any; resolved says the
// batch went through (logged) rather than Send returning.
func (s *sender) unstop(resolved bool) {
	if !s.batchStopped {
		return
	}
	s.batchStopped = false
	s.c.line.addBatch(s.ws(), -1)
	if resolved {
		s.log().Info("the stopped batch went through; sending resumed")
	}
}
