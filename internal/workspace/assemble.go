package workspace

import (
	"cmp"
	"fmt"
	"slices"
)

// files is one workspace's three files, as the scanner has them.
type files struct {
	key, dc, rpm *entry
}

// assemble builds the workspaces from the scanner's files. A workspace
// exists while its key file does. A file that is present but unusable keeps
// the previous value of its workspace (prev), or keeps a new workspace out;
// either way it is a Problem, and no other workspace is touched.
func assemble(prev map[string]Workspace, entries map[string]*entry, o *Options) (map[string]Workspace, []Problem) {
	byID := map[string]*files{}
	var probs []Problem
	for name, e := range entries {
		if e.kind == kindOther {
			if e.res.err != nil {
				probs = append(probs, Problem{File: name, Err: fmt.Errorf("workspace: %s: %w", name, e.res.err)})
			}
			continue
		}
		f := byID[e.id]
		if f == nil {
			f = &files{}
			byID[e.id] = f
		}
		switch e.kind {
		case kindKey:
			f.key = e
		case kindDC:
			f.dc = e
		case kindRPM:
			f.rpm = e
		}
	}
	next := make(map[string]Workspace, len(byID))
	for id, f := range byID {
		if f.key == nil || !f.key.res.present {
			continue // no key: no workspace (its other files wait for one)
		}
		w, ps := build(id, f, prev, o)
		probs = append(probs, ps...)
		if w != nil {
			next[id] = *w
		}
	}
	return next, probs
}

// build makes workspace id from its files; nil when a file it has no
// previous value for is unusable.
func build(id string, f *files, prev map[string]Workspace, o *Options) (*Workspace, []Problem) {
	p, had := prev[id]
	w := &Workspace{ID: id, DC: o.DefaultDC, RateLimitRPM: o.DefaultRPM}
	var probs []Problem
	ok := true
	bad := func(suffix string, err error) {
		name := id + suffix
		what := "keeping the workspace's last good value"
		if !had {
			what, ok = "the workspace is left out until it is fixed", false
		}
		probs = append(probs, Problem{File: name, ID: id, Err: fmt.Errorf("workspace: %s: %w; %s", name, err, what)})
	}
	if key, err := value(f.key, parseKey); err != nil {
		bad(suffixKey, err)
		w.key = p.key
	} else {
		w.key = key
	}
	if f.dc != nil && f.dc.res.present {
		dc, err := value(f.dc, func(s string) (string, error) { return parseDC(s, o.ValidDC) })
		if err != nil {
			bad(suffixDC, err)
			dc = p.DC
		}
		w.DC = dc
	}
	if f.rpm != nil && f.rpm.res.present {
		rpm, err := value(f.rpm, parseRPM)
		if err != nil {
			bad(suffixRPM, err)
			rpm = p.RateLimitRPM
		}
		w.RateLimitRPM = rpm
	}
	if !ok {
		return nil, probs
	}
	return w, probs
}

// value parses a present file's content, or returns its read error.
func value[T any](e *entry, parse func(string) (T, error)) (T, error) {
	if e.res.err != nil {
		var zero T
		return zero, e.res.err
	}
	return parse(e.res.val)
}

// diff lists what changed from prev to next, in ID order.
func diff(prev, next map[string]Workspace) []Change {
	var cs []Change
	for id, n := range next {
		p, ok := prev[id]
		if !ok {
			cs = append(cs, Change{ID: id, What: Added})
			continue
		}
		var w What
		if p.key != n.key {
			w |= KeyRotated
		}
		if p.DC != n.DC {
			w |= DCChanged
		}
		if p.RateLimitRPM != n.RateLimitRPM {
			w |= LimitsChanged
		}
		if w != 0 {
			cs = append(cs, Change{ID: id, What: w})
		}
	}
	for id := range prev {
		if _, ok := next[id]; !ok {
			cs = append(cs, Change{ID: id, What: Removed})
		}
	}
	slices.SortFunc(cs, func(a, b Change) int { return cmp.Compare(a.ID, b.ID) })
	return cs
}
