package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Targets: many workspaces, one Client (issue 21, the send side).
//
// Every request is for one workspace, its batch's (wire.Header.Workspace;
// "" is Config.WorkspaceID, the default workspace). The workspace names the
// request's credentials, not its body: the Basic-auth user and MOE-APPKEY
// are its ID, the password its Data API key, and the URL its data center's.
// Each attempt resolves them anew (destFor), so that a key rotated in the
// registry is used by the next attempt, and an answer is scrubbed of the
// key its own attempt sent.
//
// Without Config.Targets the Client serves Config.WorkspaceID only, as
// before; a batch for any other workspace stops its Send's line (config)
// until it returns. With Targets, a workspace Targets does not know, or
// whose key cannot be read, stops its Send's line (no_key): the Send
// probes again every stop pause, and at once when TargetsChanged says the
// registry changed; nothing is dropped or rejected. Other Sends, other
// workspaces', are not held.

// Target is where, and as whom, the requests of one workspace go.
type Target struct {
	// ID is the workspace ID: the Basic-auth user and the MOE-APPKEY header.
	ID string
	// BaseURL is the workspace's data center, as Config.BaseURL.
	BaseURL string
	// Key returns the workspace's Data API key. It is called before every
	// attempt, from any number of Sends at once: it must be cheap (an
	// atomic load, a map lookup; workspace.Registry.KeyFunc is) and safe
	// for concurrent use. Its errors must not hold the key.
	Key func() (string, error)
}

// ErrUnknownWorkspace is what Config.Targets returns (wrapped) for a
// workspace it does not know. Any error from Targets stops the Send's line
// the same way (LineStopNoKey); this one says why in the logs.
var ErrUnknownWorkspace = errors.New("sink: unknown workspace")

// dest is the resolved target of one attempt.
type dest struct {
	ws       string   // the workspace ID
	url      string   // BaseURL + Path
	hvAppKey []string // the MOE-APPKEY header value
	creds    *creds   // the key and the Authorization header
}

// workspaceOf returns the workspace a request for ws goes to: ws, or the
// default workspace for "".
func (c *Client) workspaceOf(ws string) string {
	if ws == "" {
		return c.cfg.WorkspaceID
	}
	return ws
}

// destFor resolves the target of an attempt for workspace ws, or returns
// why the line stops for it (LineStopConfig or LineStopNoKey) and an error
// that holds no key.
func (c *Client) destFor(ws string) (*dest, LineStopReason, error) {
	id := c.workspaceOf(ws)
	if c.cfg.Targets == nil {
		if id != c.cfg.WorkspaceID {
			return nil, stopConfig, fmt.Errorf("sink: workspace %q is not this client's (%q), and no Targets are configured", id, c.cfg.WorkspaceID)
		}
		return &dest{ws: id, url: c.url, hvAppKey: c.hvAppKey, creds: c.creds.Load()}, "", nil
	}
	if id == "" {
		return nil, stopNoKey, errors.New("sink: the batch names no workspace and there is no default one (WorkspaceID)")
	}
	t, err := c.cfg.Targets(id)
	if err != nil {
		return nil, stopNoKey, fmt.Errorf("sink: workspace %q: %w", id, err)
	}
	if err := validWorkspaceID(t.ID); err != nil {
		return nil, stopConfig, fmt.Errorf("sink: the target of workspace %q: %w", id, err)
	}
	if err := validBaseURL(t.BaseURL); err != nil {
		return nil, stopConfig, fmt.Errorf("sink: the target of workspace %q: %w", id, err)
	}
	if t.Key == nil {
		return nil, stopNoKey, fmt.Errorf("sink: workspace %q has no key function", id)
	}
	key, err := t.Key()
	switch {
	case err != nil:
		return nil, stopNoKey, fmt.Errorf("sink: workspace %q: reading its key: %w", id, err)
	case key == "":
		return nil, stopNoKey, fmt.Errorf("sink: workspace %q: its key is empty", id)
	case strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return nil, stopNoKey, fmt.Errorf("sink: workspace %q: its key contains control characters", id)
	}
	return &dest{ws: t.ID, url: strings.TrimRight(t.BaseURL, "/") + Path, hvAppKey: []string{t.ID},
		creds: newCreds(t.ID, key, nil)}, "", nil
}

// target returns the destination of req's next attempt. While it has none
// (destFor fails), the Send's line is stopped for that reason and probed
// again every stop pause, or at once after TargetsChanged.
func (s *sender) target(ctx context.Context, req wire.Request) (*dest, error) {
	for {
		wake := s.c.wakeChan() // before destFor: a change after it is not missed
		d, reason, err := s.c.destFor(req.Workspace)
		if err == nil {
			s.untarget(true)
			return d, nil
		}
		if err := s.stopTarget(ctx, req, reason, err, wake); err != nil {
			return nil, err
		}
	}
}

// stopTarget stops the Send's line for reason (cause: why req has no
// target) and waits a stop pause, or until wake is closed.
func (s *sender) stopTarget(ctx context.Context, req wire.Request, reason LineStopReason, cause error, wake <-chan struct{}) error {
	pause := s.stopPause(reason)
	if s.targetStop != reason {
		if s.targetStop != "" {
			s.c.line.addTarget(s.ws(), s.targetStop, -1)
		}
		s.targetStop = reason
		s.c.line.addTarget(s.ws(), reason, 1)
	} else {
		s.c.line.reprobe(s.ws(), reason)
	}
	if key := string(reason) + "|" + cause.Error(); key != s.lastKey {
		s.lastKey = key
		s.log().Error("no credentials for the batch's workspace: its line is stopped and retried slowly, "+
			"and at once when the workspaces change; nothing is dropped or committed",
			"err", cause, "reason", string(reason), "members", len(req.UIDs), "delay", pause)
	}
	if err := sleepWake(ctx, pause, wake); err != nil {
		return fmt.Errorf("%w (while the workspace had no credentials: %w)", err, cause)
	}
	s.since = time.Now() // a stopped line does not count toward MaxElapsed
	return nil
}

// untarget ends this Send's stop for a missing target, if any; resolved
// says the target was found (logged) rather than Send returning.
func (s *sender) untarget(resolved bool) {
	if s.targetStop == "" {
		return
	}
	s.c.line.addTarget(s.ws(), s.targetStop, -1)
	s.targetStop = ""
	if resolved {
		s.stopWait, s.lastKey = 0, ""
		s.log().Info("the batch's workspace has credentials again; sending resumed")
	}
}

// keyRotated reports whether the key of the workspace of the attempt that
// used d is no longer d's: after a 401/403 the new key is tried at once.
func (c *Client) keyRotated(d *dest, ws string) bool {
	if c.cfg.Targets == nil || d == nil {
		return false
	}
	now, _, err := c.destFor(ws)
	return err == nil && now.creds.key != d.creds.key
}

// waker wakes the Sends whose line is stopped (TargetsChanged).
type waker struct {
	mu sync.Mutex
	ch chan struct{} // closed and replaced by each wake
}

// TargetsChanged tells the Client that the workspaces changed (a key
// rotated, a workspace added or removed, a data center changed): every
// Send whose line is stopped for the credentials or a missing target
// (LineStopAuth, LineStopConfig, LineStopNoKey) tries again at once,
// instead of after its stop pause, and the workspaces blocked for those
// reasons are unblocked (Blocked): their resumed traffic probes them. The
// app calls it from the registry's OnChange. It never blocks.
func (c *Client) TargetsChanged() {
	c.line.targetsChanged()
	c.wake.mu.Lock()
	defer c.wake.mu.Unlock()
	if c.wake.ch != nil {
		close(c.wake.ch)
	}
	c.wake.ch = make(chan struct{})
}

// wakeChan returns the channel the next TargetsChanged closes.
func (c *Client) wakeChan() <-chan struct{} {
	c.wake.mu.Lock()
	defer c.wake.mu.Unlock()
	if c.wake.ch == nil {
		c.wake.ch = make(chan struct{})
	}
	return c.wake.ch
}

// sleepWake waits d, or until wake is closed (nil: never), or ctx ends.
func sleepWake(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-wake:
		return ctx.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}
