package sink

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// LineStopped reports whether sending is stopped: the API rejects the
// credentials (401, 403) or the configuration (415, 404, 405, 3xx, a
// header), which any Send's next 2xx clears; or it answers some Send's batch
// with a 4xx that hits every part of it alike, which lasts until that batch
// goes through or its Send returns; or some Send's batch is for a workspace
// it has no credentials for (no_key; config without Targets), which lasts
// until that workspace has them or the Send returns. Stopped Sends retry
// every stop pause (AuthRetryInterval, doubling) and never drop nor reject
// anything meanwhile; TargetsChanged makes all but the invalid-batch ones
// try at once. The
// worker reports not-ready. Mirrored by the cohortsync_line_stopped{reason}
// gauge (and, for the credentials and the configuration, by
// cohortsync_auth_failing).
func (c *Client) LineStopped() bool { return c.line.stopped.Load() }

// stoppedLine is the client-wide stopped line, shared by every Send of a
// Client: stopped for the credentials or the configuration (until any
// acceptance), or by the Sends whose batch fails alike in every part (until
// each goes through or returns). Its gauges are written under the same lock
// as its state, so they never disagree with it.
type stoppedLine struct {
	mu       sync.Mutex // guards the fields below and orders the gauges with them
	auth     bool       // the API rejects the credentials; cleared by any acceptance
	config   bool       // the API rejects the endpoint or a header; cleared by any acceptance
	batches  int        // Sends stopped by a batch-wide 4xx
	noKey    int        // Sends whose workspace has no target or key (LineStopNoKey)
	unrouted int        // Sends whose workspace this Client cannot send to (LineStopConfig)
	stopped  atomic.Bool
	m        *metrics.Metrics
}

func newStoppedLine(m *metrics.Metrics) *stoppedLine { return &stoppedLine{m: m} }

// stop stops the line for reason (stopAuth or stopConfig). It reports
// whether the state changed.
func (l *stoppedLine) stop(reason LineStopReason) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	changed := false
	switch reason {
	case stopAuth:
		changed, l.auth = !l.auth, true
	case stopConfig:
		changed, l.config = !l.config, true
	}
	l.sync()
	return changed
}

// clear ends the stop for the credentials and the configuration, as an
// acceptance does. It reports whether the state changed.
func (l *stoppedLine) clear() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	changed := l.auth || l.config
	l.auth, l.config = false, false
	l.sync()
	return changed
}

// addBatch counts a Send in (+1) or out (-1) of the invalid-batch stop.
func (l *stoppedLine) addBatch(delta int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.batches += delta
	l.sync()
}

// addTarget counts a Send in (+1) or out (-1) of the stop for a missing
// target, for reason (LineStopNoKey or LineStopConfig).
func (l *stoppedLine) addTarget(reason LineStopReason, delta int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if reason == stopNoKey {
		l.noKey += delta
	} else {
		l.unrouted += delta
	}
	l.sync()
}

// sync updates the flag and the gauges; mu is held.
func (l *stoppedLine) sync() {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	config := l.config || l.unrouted > 0
	l.stopped.Store(l.auth || config || l.batches > 0 || l.noKey > 0)
	l.m.AuthFailing.Set(b(l.auth || config))
	l.m.LineStopped.WithLabelValues(string(stopAuth)).Set(b(l.auth))
	l.m.LineStopped.WithLabelValues(string(stopConfig)).Set(b(config))
	l.m.LineStopped.WithLabelValues(string(stopInvalidBatch)).Set(b(l.batches > 0))
	l.m.LineStopped.WithLabelValues(string(stopNoKey)).Set(b(l.noKey > 0))
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
		c.line.addBatch(1)
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
	s.c.line.addBatch(-1)
	if resolved {
		s.log().Info("the stopped batch went through; sending resumed")
	}
}
