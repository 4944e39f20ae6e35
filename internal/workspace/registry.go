package workspace

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often Run polls the directory by default: a change
// takes effect within two polls (a plain directory's file must settle for
// one poll) plus one reload, well within the 5 s the design promises.
const DefaultInterval = time.Second

// Options configures a Registry.
type Options struct {
	// Dir is the directory (MOENGAGE_WORKSPACES_DIR). Required.
	Dir string
	// DefaultDC is the data center of a workspace without a <id>.dc file
	// (MOENGAGE_DC; "" when MOENGAGE_BASE_URL overrides every data center).
	// It is not validated here.
	DefaultDC string
	// DefaultRPM is the budget of a workspace without a <id>.rate_limit_rpm
	// file (RATE_LIMIT_RPM). It is not validated here.
	DefaultRPM float64
	// ValidDC validates a <id>.dc file's content (OneOf(config.DataCenters)).
	// Required.
	ValidDC func(dc string) error
	// Interval is Run's polling interval; 0: DefaultInterval.
	Interval time.Duration
	// Logger logs changes and problems; nil: slog.Default().
	Logger *slog.Logger
	// OnChange, when set, is called with each new generation after it is
	// published, from Open (the first) and then from Run's goroutine, in
	// generation order and never concurrently. It delays the next poll
	// while it runs.
	OnChange func(Update)
	// OnProblem, when set, is called (like OnChange) with each problem when
	// it appears or its reason changes; Problems lists those outstanding.
	OnProblem func(Problem)
}

// Registry is the set of workspaces in a directory, kept up to date by Run.
// Its accessors read an immutable Snapshot through an atomic pointer, and
// are safe for concurrent use and cheap enough for every request.
type Registry struct {
	opts Options
	log  *slog.Logger
	snap atomic.Pointer[Snapshot]

	pollMu sync.Mutex // held by a poll: owns sc and probs' writes
	sc     scanner
	dirErr error // the directory's problem at the last poll

	probMu sync.Mutex
	probs  map[string]Problem // by file name ("" for the directory)
}

// Open reads the directory once and returns the Registry. It fails if the
// directory cannot be listed (missing, not a directory, unreadable) or
// opts are invalid; a file it cannot use is a Problem, not an error, so that
// one workspace's bad file never stops the others.
func Open(opts Options) (*Registry, error) {
	switch {
	case opts.Dir == "":
		return nil, errors.New("workspace: Options.Dir is required")
	case opts.ValidDC == nil:
		return nil, errors.New("workspace: Options.ValidDC is required")
	case opts.Interval < 0:
		return nil, fmt.Errorf("workspace: Options.Interval %s is negative", opts.Interval)
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &Registry{opts: opts, log: log.With("component", "workspaces", "dir", opts.Dir),
		sc: scanner{dir: opts.Dir, files: map[string]*entry{}}, probs: map[string]Problem{}}
	r.snap.Store(&Snapshot{ws: map[string]Workspace{}})
	r.pollMu.Lock()
	defer r.pollMu.Unlock()
	if _, err := r.sc.poll(true); err != nil {
		return nil, fmt.Errorf("workspace: read the registry %s: %w", opts.Dir, err)
	}
	r.reload()
	return r, nil
}

// Run polls the directory every Options.Interval until ctx ends; it
// returns nil then.
func (r *Registry) Run(ctx context.Context) error {
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.poll()
		}
	}
}

// poll is one turn of Run.
func (r *Registry) poll() {
	r.pollMu.Lock()
	defer r.pollMu.Unlock()
	changed, err := r.sc.poll(false)
	if err != nil {
		// Keep every workspace: an unmounted or unreadable directory says
		// nothing about any of them.
		r.dirErr = fmt.Errorf("workspace: read the registry %s (keeping the last good workspaces): %w", r.opts.Dir, err)
		r.setProblems(r.problemsWith(r.current()))
		return
	}
	if r.dirErr != nil {
		r.dirErr, changed = nil, true
	}
	if changed {
		r.reload()
	}
}

// reload builds the workspaces from the scanner's files and publishes them
// (a new generation) if they changed.
func (r *Registry) reload() {
	prev := r.snap.Load()
	next, probs := assemble(prev.ws, r.sc.files, &r.opts)
	r.setProblems(r.problemsWith(probs))
	changes := diff(prev.ws, next)
	if len(changes) == 0 && prev.gen != 0 {
		return
	}
	s := &Snapshot{gen: prev.gen + 1, ws: next, ids: slices.Sorted(maps.Keys(next))}
	r.snap.Store(s)
	r.logChanges(s, changes)
	if r.opts.OnChange != nil {
		r.opts.OnChange(Update{Generation: s.gen, Changes: changes})
	}
}

func (r *Registry) logChanges(s *Snapshot, changes []Change) {
	if s.gen == 1 || len(changes) > 20 {
		r.log.Info("workspace registry loaded", "generation", s.gen, "workspaces", len(s.ids), "changes", len(changes))
		return
	}
	for _, c := range changes {
		r.log.Info("workspace changed", "workspace", c.ID, "change", c.What.String(), "generation", s.gen)
	}
}

// current returns the file problems now outstanding (the directory's
// excluded).
func (r *Registry) current() []Problem {
	r.probMu.Lock()
	defer r.probMu.Unlock()
	var ps []Problem
	for f, p := range r.probs {
		if f != "" {
			ps = append(ps, p)
		}
	}
	return ps
}

// problemsWith adds the directory's problem, if any, to ps.
func (r *Registry) problemsWith(ps []Problem) []Problem {
	if r.dirErr != nil {
		ps = append(ps, Problem{Err: r.dirErr})
	}
	return ps
}

// setProblems replaces the outstanding problems, reporting the new ones
// (and those whose reason changed) and logging those resolved.
func (r *Registry) setProblems(ps []Problem) {
	next := make(map[string]Problem, len(ps))
	var fresh []Problem
	r.probMu.Lock()
	for _, p := range ps {
		next[p.File] = p
		if old, ok := r.probs[p.File]; !ok || old.Err.Error() != p.Err.Error() {
			fresh = append(fresh, p)
		}
	}
	for f := range r.probs {
		if _, ok := next[f]; !ok {
			r.log.Info("workspace file problem resolved", "file", f)
		}
	}
	r.probs = next
	r.probMu.Unlock()
	slices.SortFunc(fresh, func(a, b Problem) int { return cmp.Compare(a.File, b.File) })
	for _, p := range fresh {
		r.log.Error("workspace file problem", "file", p.File, "workspace", p.ID, "err", p.Err)
		if r.opts.OnProblem != nil {
			r.opts.OnProblem(p)
		}
	}
}

// Problems returns the problems outstanding, by file name.
func (r *Registry) Problems() []Problem {
	r.probMu.Lock()
	defer r.probMu.Unlock()
	ps := slices.Collect(maps.Values(r.probs))
	slices.SortFunc(ps, func(a, b Problem) int { return cmp.Compare(a.File, b.File) })
	return ps
}

// Snapshot returns the current workspaces, for several lookups that must
// agree with each other.
func (r *Registry) Snapshot() *Snapshot { return r.snap.Load() }

// Lookup returns the workspace id, if the registry has it now.
func (r *Registry) Lookup(id string) (Workspace, bool) { return r.snap.Load().Lookup(id) }

// IDs returns the IDs of the workspaces, sorted.
func (r *Registry) IDs() []string { return r.snap.Load().IDs() }

// Generation returns the current generation: 1 after Open, one more at
// each change.
func (r *Registry) Generation() uint64 { return r.snap.Load().gen }

// KeyFunc returns a function that returns workspace id's key as the
// registry has it now, for sink.Config.APIKeyFunc: a rotated key is
// returned as soon as the registry has read it. It fails (without a key)
// while id is not in the registry. It is safe for concurrent use and costs
// an atomic load and a map lookup.
func (r *Registry) KeyFunc(id string) func() (string, error) {
	return func() (string, error) {
		w, ok := r.Lookup(id)
		if !ok {
			return "", fmt.Errorf("workspace: %s is not in the registry %s", id, r.opts.Dir)
		}
		return w.key, nil
	}
}

// Snapshot is one generation of the registry. It is immutable.
type Snapshot struct {
	gen uint64
	ws  map[string]Workspace
	ids []string
}

// Generation returns the snapshot's generation.
func (s *Snapshot) Generation() uint64 { return s.gen }

// Len returns the number of workspaces.
func (s *Snapshot) Len() int { return len(s.ids) }

// Lookup returns the workspace id.
func (s *Snapshot) Lookup(id string) (Workspace, bool) {
	w, ok := s.ws[id]
	return w, ok
}

// IDs returns the IDs of the workspaces, sorted (a copy).
func (s *Snapshot) IDs() []string { return slices.Clone(s.ids) }
