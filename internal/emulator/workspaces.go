package emulator

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Workspace is one workspace the emulator serves: its Data API key and its
// own settings. See "Workspaces" in the package doc.
type Workspace struct {
	// Key is the Data API key, the Basic-auth password. Required.
	Key string `json:"key"`
	// RateLimit is the workspace's requests per window. 0 means
	// Config.RateLimit; negative means unlimited (no x-ratelimit-* headers).
	RateLimit int `json:"rate_limit,omitempty"`
	// Faults, when not nil, replace the emulator-wide faults for requests
	// that name this workspace (see [Emulator.SetWorkspaceFaults]).
	Faults *Faults `json:"faults,omitempty"`
}

// WorkspaceInfo describes a workspace the emulator serves; its key is never
// reported.
type WorkspaceInfo struct {
	ID string `json:"workspace_id"`
	// RateLimit is the limit in force: requests per window, 0 = unlimited.
	RateLimit int `json:"rate_limit"`
	// Revoked is true while the key is revoked ([Emulator.RevokeKey]).
	Revoked bool `json:"revoked"`
	// Faults are the workspace's own faults, nil when the emulator-wide
	// faults apply.
	Faults *Faults `json:"faults,omitempty"`
}

// ErrUnknownWorkspace is returned for a workspace the emulator does not serve.
var ErrUnknownWorkspace = errors.New("emulator: unknown workspace")

// wsState is the run-time state of one workspace; guarded by Emulator.mu.
type wsState struct {
	key         string
	rateLimit   int // in force: 0 = unlimited
	revoked     bool
	faults      *Faults // nil: the emulator-wide faults
	faultsSetAt time.Time
}

// validateWorkspace checks one workspace ID and its settings.
func validateWorkspace(id string, w Workspace) error {
	if id == "" {
		return errors.New("emulator: config: empty workspace ID")
	}
	if strings.Contains(id, ":") {
		return fmt.Errorf("emulator: config: workspace ID %q contains ':' and could never authenticate", id)
	}
	if w.Key == "" {
		return fmt.Errorf("emulator: config: empty API key for workspace %q", id)
	}
	if w.Faults != nil {
		if err := w.Faults.Validate(); err != nil {
			return fmt.Errorf("emulator: config: workspace %q: %w", id, err)
		}
	}
	return nil
}

// allWorkspaces merges Credentials and Workspaces; Validate has checked that
// an ID in both has the same key.
func (c Config) allWorkspaces() map[string]Workspace {
	out := make(map[string]Workspace, len(c.Credentials)+len(c.Workspaces))
	for id, key := range c.Credentials {
		out[id] = Workspace{Key: key}
	}
	for id, w := range c.Workspaces {
		out[id] = w
	}
	return out
}

// newWorkspaceState builds the run-time state of w at now.
func (e *Emulator) newWorkspaceState(w Workspace, now time.Time) *wsState {
	s := &wsState{key: w.Key, rateLimit: e.cfg.RateLimit, faultsSetAt: now}
	switch {
	case w.RateLimit < 0:
		s.rateLimit = 0
	case w.RateLimit > 0:
		s.rateLimit = w.RateLimit
	}
	if w.Faults != nil {
		f := w.Faults.clone()
		s.faults = &f
	}
	return s
}

// resetWorkspacesLocked rebuilds the workspaces from Config. e.mu must be
// held (or e not yet shared).
func (e *Emulator) resetWorkspacesLocked(now time.Time) {
	e.workspaces = make(map[string]*wsState)
	for id, w := range e.cfg.allWorkspaces() {
		e.workspaces[id] = e.newWorkspaceState(w, now)
	}
}

// faultsLocked returns the faults in force for requests naming workspace
// ws, and when they were set. e.mu must be held.
func (e *Emulator) faultsLocked(ws string) (*Faults, time.Time) {
	if s := e.workspaces[ws]; s != nil && s.faults != nil {
		return s.faults, s.faultsSetAt
	}
	return &e.faults, e.faultsSetAt
}

// rateLimitLocked returns the rate limit of ws (0 = unlimited). e.mu must
// be held.
func (e *Emulator) rateLimitLocked(ws string) int {
	if s := e.workspaces[ws]; s != nil {
		return s.rateLimit
	}
	return e.cfg.RateLimit
}

// AddWorkspace starts serving workspace id with w, or, when id is already
// served, replaces its key (a rotation: the old key is refused at once),
// rate limit and faults and lifts a revocation. The workspace's segments,
// user store and current rate window are kept.
func (e *Emulator) AddWorkspace(id string, w Workspace) error {
	if err := validateWorkspace(id, w); err != nil {
		return err
	}
	e.mu.Lock()
	_, existed := e.workspaces[id]
	e.workspaces[id] = e.newWorkspaceState(w, e.now())
	e.mu.Unlock()
	e.log.Info("workspace set", "workspace", id, "replaced", existed, "rate_limit", w.RateLimit,
		"own_faults", w.Faults != nil)
	return nil
}

// RemoveWorkspace stops serving workspace id: its requests get 401 "App
// Secret key mismatch" as for an unknown workspace. Its segments are kept.
// It reports whether id was served.
func (e *Emulator) RemoveWorkspace(id string) bool {
	e.mu.Lock()
	_, ok := e.workspaces[id]
	delete(e.workspaces, id)
	e.mu.Unlock()
	if ok {
		e.log.Info("workspace removed", "workspace", id)
	}
	return ok
}

// RevokeKey revokes the key of workspace id: its requests get 401 "App
// Secret key mismatch", as MoEngage answers a revoked key, until
// [Emulator.RestoreKey] or [Emulator.AddWorkspace]. Everything else about
// the workspace is kept.
func (e *Emulator) RevokeKey(id string) error { return e.setRevoked(id, true) }

// RestoreKey restores a key revoked with [Emulator.RevokeKey].
func (e *Emulator) RestoreKey(id string) error { return e.setRevoked(id, false) }

func (e *Emulator) setRevoked(id string, revoked bool) error {
	e.mu.Lock()
	s := e.workspaces[id]
	if s != nil {
		s.revoked = revoked
	}
	e.mu.Unlock()
	if s == nil {
		return fmt.Errorf("%w %q", ErrUnknownWorkspace, id)
	}
	e.log.Info("workspace key", "workspace", id, "revoked", revoked)
	return nil
}

// SetWorkspaceFaults gives workspace id its own faults, which replace the
// emulator-wide faults for the requests that name it (every step, including
// the outage and latency checked before authentication, which go by the
// Basic-auth username). Script steps are timed from this call. nil removes
// them: the emulator-wide faults apply again.
func (e *Emulator) SetWorkspaceFaults(id string, f *Faults) error {
	var own *Faults
	if f != nil {
		if err := f.Validate(); err != nil {
			return err
		}
		c := f.clone()
		own = &c
	}
	e.mu.Lock()
	s := e.workspaces[id]
	if s != nil {
		s.faults, s.faultsSetAt = own, e.now()
	}
	e.mu.Unlock()
	if s == nil {
		return fmt.Errorf("%w %q", ErrUnknownWorkspace, id)
	}
	e.log.Info("workspace faults set", "workspace", id, "own_faults", own != nil)
	return nil
}

// WorkspaceFaults returns the faults in force for workspace id and whether
// they are its own (false: the emulator-wide faults, also for an unknown id).
func (e *Emulator) WorkspaceFaults(id string) (Faults, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f, _ := e.faultsLocked(id)
	return f.clone(), f != &e.faults
}

// Workspaces returns the workspaces served, sorted by ID.
func (e *Emulator) Workspaces() []WorkspaceInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]WorkspaceInfo, 0, len(e.workspaces))
	for id, s := range e.workspaces {
		info := WorkspaceInfo{ID: id, RateLimit: s.rateLimit, Revoked: s.revoked}
		if s.faults != nil {
			f := s.faults.clone()
			info.Faults = &f
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b WorkspaceInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// WorkspaceSegments returns the segments of one workspace, sorted by
// partner and cohort ID.
func (e *Emulator) WorkspaceSegments(workspace string) []Segment {
	var out []Segment
	for _, s := range e.Segments() {
		if s.Workspace == workspace {
			out = append(out, s)
		}
	}
	return out
}

// Suffixes of the files of a workspaces directory (LoadWorkspacesDir).
const (
	keySuffix       = ".key"
	rateLimitSuffix = ".rate_limit_rpm"
)

// LoadWorkspacesDir reads a workspaces directory in the layout of the
// worker's MOENGAGE_WORKSPACES_DIR: a flat directory, as Kubernetes mounts
// a Secret, where <workspace_id>.key holds the workspace's Data API key and
// the optional <workspace_id>.rate_limit_rpm its requests per window
// (Workspace.RateLimit). Surrounding white space is trimmed. Names starting
// with '.' (the kubelet's ..data and timestamped directories), directories,
// <workspace_id>.dc and other files are ignored, as is a rate limit without
// a key. Symbolic links are followed.
func LoadWorkspacesDir(dir string) (map[string]Workspace, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("emulator: workspaces dir: %w", err)
	}
	keys, limits := map[string]string{}, map[string]int{}
	for _, ent := range entries {
		name := ent.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		id, isKey := strings.CutSuffix(name, keySuffix)
		rid, isLimit := strings.CutSuffix(name, rateLimitSuffix)
		if (!isKey || id == "") && (!isLimit || rid == "") {
			continue
		}
		path := filepath.Join(dir, name)
		if st, err := os.Stat(path); err != nil || st.IsDir() {
			continue // a dangling link or a directory: not a file of the registry
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("emulator: workspaces dir: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if isKey {
			if v == "" {
				return nil, fmt.Errorf("emulator: workspaces dir: %s is empty", path)
			}
			keys[id] = v
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("emulator: workspaces dir: %s: %q is not a positive number of requests", path, v)
		}
		limits[rid] = n
	}
	out := make(map[string]Workspace, len(keys))
	for id, key := range keys {
		out[id] = Workspace{Key: key, RateLimit: limits[id]}
	}
	return out, nil
}
