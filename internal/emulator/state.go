package emulator

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"time"
)

// Segment is a snapshot of one custom segment created through the emulated
// endpoint.
type Segment struct {
	Workspace string `json:"workspace"`
	Partner   string `json:"partner"`
	CohortID  string `json:"cohort_id"`
	// Name is the cohort_name of the latest accepted request.
	Name string `json:"cohort_name"`
	// Description is the latest cohort_description sent; requests without
	// one leave it unchanged.
	Description string `json:"cohort_description"`
	// Members are the member uids, sorted.
	Members []string `json:"members"`
	// Requests is the number of accepted requests applied to the segment.
	Requests  int       `json:"requests"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// segmentKey identifies a segment: contract §5 [INFER].
type segmentKey struct {
	workspace, partner, cohortID string
}

// segment is the mutable state behind a Segment; guarded by Emulator.mu.
type segment struct {
	name, description    string
	members              map[string]struct{}
	requests             int
	createdAt, updatedAt time.Time
}

func (s *segment) snapshot(k segmentKey) Segment {
	members := slices.Sorted(maps.Keys(s.members))
	if members == nil {
		members = []string{}
	}
	return Segment{
		Workspace:   k.workspace,
		Partner:     k.partner,
		CohortID:    k.cohortID,
		Name:        s.name,
		Description: s.description,
		Members:     members,
		Requests:    s.requests,
		CreatedAt:   s.createdAt,
		UpdatedAt:   s.updatedAt,
	}
}

// applyLocked applies an accepted request and returns how many uids of an
// add_members were dropped as unknown. e.mu must be held.
func (e *Emulator) applyLocked(workspace string, req *cohortRequest, now time.Time) (dropped int) {
	k := segmentKey{workspace, req.Partner, req.CohortID}
	s := e.segments[k]
	if s == nil {
		s = &segment{members: make(map[string]struct{}), createdAt: now}
		e.segments[k] = s
	}
	s.name = req.CohortName
	if req.HasDescription {
		s.description = req.Description
	}
	s.requests++
	s.updatedAt = now
	switch req.Action {
	case ActionAdd:
		known := e.users[workspace]
		for _, uid := range req.Members {
			if e.users != nil {
				if _, ok := known[uid]; !ok {
					dropped++
					continue
				}
			}
			if e.cfg.DiscardMembers {
				continue
			}
			// The uids of a request share memory (see parseFast): a new
			// member gets its own copy, so that the members kept do not pin
			// the uids of the requests that added them.
			if _, ok := s.members[uid]; !ok {
				s.members[strings.Clone(uid)] = struct{}{}
			}
		}
	case ActionRemove:
		if e.cfg.DiscardMembers {
			break
		}
		for _, uid := range req.Members {
			delete(s.members, uid)
		}
	}
	return dropped
}

// Segments returns a snapshot of every segment, sorted by workspace, partner
// and cohort ID.
func (e *Emulator) Segments() []Segment {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Segment, 0, len(e.segments))
	for k, s := range e.segments {
		out = append(out, s.snapshot(k))
	}
	slices.SortFunc(out, func(a, b Segment) int {
		return cmp.Or(cmp.Compare(a.Workspace, b.Workspace), cmp.Compare(a.Partner, b.Partner),
			cmp.Compare(a.CohortID, b.CohortID))
	})
	return out
}

// Segment returns a snapshot of one segment and whether it exists.
func (e *Emulator) Segment(workspace, partner, cohortID string) (Segment, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := segmentKey{workspace, partner, cohortID}
	s, ok := e.segments[k]
	if !ok {
		return Segment{}, false
	}
	return s.snapshot(k), true
}

// Members returns the sorted member uids of a segment: empty (non-nil) for
// an existing empty segment, nil for a segment that does not exist.
func (e *Emulator) Members(workspace, partner, cohortID string) []string {
	s, ok := e.Segment(workspace, partner, cohortID)
	if !ok {
		return nil
	}
	return s.Members
}

// SeedUsers adds uids to the user store of workspace, or replaces that
// workspace's uids when replace is true, and enables the store if it was
// disabled. While the store is enabled, add_members adds only known uids.
func (e *Emulator) SeedUsers(workspace string, uids []string, replace bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.users == nil {
		e.users = make(map[string]map[string]struct{})
	}
	set := e.users[workspace]
	if set == nil || replace {
		set = make(map[string]struct{}, len(uids))
		e.users[workspace] = set
	}
	for _, u := range uids {
		set[u] = struct{}{}
	}
}

// DisableUserStore disables the user store, so every uid exists again.
func (e *Emulator) DisableUserStore() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.users = nil
}

// Users returns the user store (workspace ID -> sorted uids), or nil when
// it is disabled.
func (e *Emulator) Users() map[string][]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.users == nil {
		return nil
	}
	out := make(map[string][]string, len(e.users))
	for ws, set := range e.users {
		out[ws] = append([]string{}, slices.Sorted(maps.Keys(set))...)
	}
	return out
}

// newUserStore builds the internal store from Config.Users.
func newUserStore(users map[string][]string) map[string]map[string]struct{} {
	if users == nil {
		return nil
	}
	out := make(map[string]map[string]struct{}, len(users))
	for ws, uids := range users {
		set := make(map[string]struct{}, len(uids))
		for _, u := range uids {
			set[u] = struct{}{}
		}
		out[ws] = set
	}
	return out
}
