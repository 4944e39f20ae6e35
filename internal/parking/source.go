package parking

import (
	"fmt"
	"hash/fnv"
	"time"
)

// PartitionFor is the parking partition of a change of workspace w and
// cohort: hash(workspace, cohort) mod k, so that all parked changes of one
// (workspace, cohort) are in one partition.
func PartitionFor(w, cohort string, k int) int {
	h := fnv.New32a()
	h.Write([]byte(w))
	h.Write([]byte{0})
	h.Write([]byte(cohort))
	return int(h.Sum32() % uint32(k))
}

// Source is the parking state of one source partition s for its owner: per
// detoured workspace W, the last parking offset that may hold a record of W
// from s, per parking partition (−1: none).
//
// The owner asks Detoured for every record it reads: a detoured workspace's
// record is written to PartitionFor and reported with Parked once the
// brokers acknowledged it (it is then settled for s's watermark). A record
// of a workspace that is blocked and not detoured needs StartDetour first,
// whose metadata must be committed before the first parked write
// (write-ahead, PARKING.md). Undetour is allowed only when CanUndetour.
type Source struct {
	k      int
	detour map[string][]int64
	bound  int
}

// NewSource rebuilds s's parking state from its committed metadata and the
// parking partitions' end offsets read at the takeover (ends[i] is the next
// offset of parking partition i), after this owner's generation marker was
// acknowledged in every one of them (PARKING.md 6). A workspace listed as detoured may have
// records from s anywhere below those ends, written by a predecessor after
// its last commit: all of them count as written by this owner.
func NewSource(meta string, ends []int64) (*Source, error) {
	if len(ends) == 0 {
		return nil, fmt.Errorf("parking: no parking partitions")
	}
	ws, err := ParseDetoured(meta)
	if err != nil {
		return nil, err
	}
	s := &Source{k: len(ends), detour: map[string][]int64{}, bound: MaxMetadata - Reserve}
	for _, w := range ws {
		pos := make([]int64, len(ends))
		for i, e := range ends {
			pos[i] = e - 1
		}
		s.detour[w] = pos
	}
	return s, nil
}

// Detoured reports whether w's records from s go to the parking topic.
func (s *Source) Detoured(w string) bool {
	_, ok := s.detour[w]
	return ok
}

// StartDetour detours w and returns the metadata the owner must commit
// (with s's current watermark) before it writes w's first parked record.
// ErrFull: w does not fit in the metadata; it is not detoured, and its
// records wait in s as without parking.
func (s *Source) StartDetour(w string) (string, error) {
	if s.Detoured(w) {
		return s.Metadata(), nil
	}
	n := len(encodeSet(s.detour)) + len(esc(w)) + 3
	if n > s.bound {
		return "", ErrFull
	}
	pos := make([]int64, s.k)
	for i := range pos {
		pos[i] = -1
	}
	s.detour[w] = pos
	return s.Metadata(), nil
}

// Parked records that w's record from s was written to parking partition k
// at offset off (acknowledged).
func (s *Source) Parked(w string, k int, off int64) {
	pos, ok := s.detour[w]
	if !ok {
		panic("parking: Parked for a workspace not detoured: " + w)
	}
	if off > pos[k] {
		pos[k] = off
	}
}

// CanUndetour reports whether w's records from s may be sent directly
// again: w is not blocked and every parking partition's committed state
// (commit(k), read with OffsetFetch) settles the last record that s may have
// parked there for w. When it may, wait is the longest Hold of those
// commits: the owner sends none of w's records from s before wait has
// passed since it read them (a late copy of a parking replica's abandoned
// request could otherwise land after them).
func (s *Source) CanUndetour(w string, blocked bool, commit func(k int) Commit) (ok bool, wait time.Duration) {
	pos, detoured := s.detour[w]
	if !detoured {
		return true, 0
	}
	if blocked {
		return false, 0
	}
	for k, p := range pos {
		if p < 0 {
			continue
		}
		c := commit(k)
		if !c.Settled(w, p) {
			return false, 0
		}
		wait = max(wait, c.Hold)
	}
	return true, wait
}

// Workspaces lists the detoured workspaces, sorted.
func (s *Source) Workspaces() []string { return sortedKeys(s.detour) }

// Undetour sends w's records directly again; the caller checked
// CanUndetour. The next commit's metadata drops w.
func (s *Source) Undetour(w string) { delete(s.detour, w) }

// Metadata is the d= token for s's commits (empty when nothing is
// detoured); the caller joins it to the hand-off mark with ';'.
func (s *Source) Metadata() string { return encodeSet(s.detour) }

// Size is the number of offsets s holds (detoured workspaces × parking
// partitions): what its memory grows with.
func (s *Source) Size() int { return len(s.detour) * s.k }
