package consumer

import (
	"context"

	"github.com/cohortsync/cohortsync-worker/internal/parking"
)

// Un-detour (protocol 5): while an owned source partition has a detoured
// workspace that is not blocked, the supervisor reads the parking
// partitions' commits every UndetourInterval (undetourDue); once every
// record the partition may have parked for it is settled there
// (Source.CanUndetour), it asks for a replan, which un-detours it with the
// loops stopped (a record boundary), commits the metadata without it, and
// waits the longest hold= of those commits before any direct send.

// undetourCandidates reports whether an owned source partition has a
// detoured workspace that is not blocked.
func (pl *plumb) undetourCandidates(blocked map[string]bool) bool {
	for _, p := range pl.parts {
		if p.src == nil {
			continue
		}
		p.src.mu.Lock()
		ws := p.src.src.Workspaces()
		p.src.mu.Unlock()
		for _, w := range ws {
			if !blocked[w] {
				return true
			}
		}
	}
	return false
}

// undetourDue reports whether a detour of an owned source partition may
// end now.
func (pl *plumb) undetourDue(ctx context.Context) bool {
	_, blocked := pl.workspaces()
	if !pl.undetourCandidates(blocked) {
		return false
	}
	commits, err := pl.io.committed(ctx)
	if err != nil {
		pl.log.Warn("reading the parking partitions' commits failed", "err", err)
		return false
	}
	commit := func(k int) parking.Commit { return commits[k] }
	for _, p := range pl.parts {
		if p.src == nil {
			continue
		}
		p.src.mu.Lock()
		for _, w := range p.src.src.Workspaces() {
			if ok, _ := p.src.src.CanUndetour(w, blocked[w], commit); ok {
				p.src.mu.Unlock()
				return true
			}
		}
		p.src.mu.Unlock()
	}
	return false
}
