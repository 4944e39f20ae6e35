package parking

import "time"

// Decision is what the main cursor of a parking partition does with a record.
type Decision int

const (
	// Deliver: send the record to the API; report Done when accepted, or
	// Hold when its workspace turned out blocked.
	Deliver Decision = iota
	// Pass: its workspace is held (blocked or resuming); the main cursor
	// passes over it without keeping it; report Done.
	Pass
)

// Partition is the state of one parking partition k for its owner: the main
// cursor's next offset (its watermark m: the caller reports outcomes in
// offset order), the first unsent offset o_V of every held workspace V, and
// the metadata bound.
//
// The skip rule (PARKING.md): a new owner's main cursor starts at the
// committed m, not at the committed offset, and each listed workspace's
// resume cursor at its o_V. Every record below m that is not a listed
// workspace's at or past its o_V is settled, so neither cursor reads it, and
// the m this owner commits never falls below the m it started from.
//
// A held workspace that is no longer blocked is resumed by a second cursor
// that starts at o_V, takes only V's records, and reports its position
// with Advance; when it reaches the main cursor, V is released and the main
// cursor delivers V's records again.
type Partition struct {
	next  int64
	held  map[string]int64
	bound int
}

// NewPartition starts an owner from k's committed state (ParseCommit): the
// main cursor at c.Mark, a resume cursor per listed workspace at its o_V.
func NewPartition(c Commit) *Partition {
	p := &Partition{next: c.Mark, held: map[string]int64{}, bound: MaxMetadata - Reserve}
	for w, o := range c.Held {
		p.held[w] = o
	}
	return p
}

// Next is the main cursor's next offset.
func (p *Partition) Next() int64 { return p.next }

// Classify decides on the record of workspace x read by the main cursor.
func (p *Partition) Classify(x string) Decision {
	if _, ok := p.held[x]; ok {
		return Pass
	}
	return Deliver
}

// Done reports that the main cursor is finished with the record at off.
func (p *Partition) Done(off int64) {
	if off != p.next {
		panic("parking: Done out of order")
	}
	p.next = off + 1
}

// Hold makes x held at off (its first unsent record), when x's record
// there could not be delivered because x is blocked. False: one more held
// workspace does not fit in the commit metadata; the main cursor stops
// there (the watermark stops advancing, memory stays bounded) and tries
// again later.
func (p *Partition) Hold(x string, off int64) bool {
	if _, ok := p.held[x]; ok {
		return true
	}
	if p.encodedBound()+entryBound(x) > p.bound {
		return false
	}
	p.held[x] = off
	return true
}

func (p *Partition) encodedBound() int {
	n := 2 + maxOffsetDigits + 3
	for w := range p.held {
		n += entryBound(w) + 1
	}
	return n
}

// Held returns x's first unsent offset, if x is held.
func (p *Partition) Held(x string) (int64, bool) {
	o, ok := p.held[x]
	return o, ok
}

// Advance moves x's resume cursor to pos: every record of x below pos is
// accepted. At the main cursor, x is released (true).
func (p *Partition) Advance(x string, pos int64) bool {
	o, ok := p.held[x]
	if !ok {
		return true
	}
	if pos < o {
		panic("parking: resume cursor moved back")
	}
	if pos >= p.next {
		delete(p.held, x)
		return true
	}
	p.held[x] = pos
	return false
}

// Commit is the state to commit: offset min(m, every o_V); hold is the
// longest unknown-outcome hold of this replica at this moment (see Commit).
func (p *Partition) Commit(hold time.Duration) Commit {
	c := Commit{Offset: p.next, Mark: p.next, Held: make(map[string]int64, len(p.held)), Hold: hold}
	for w, o := range p.held {
		c.Held[w] = o
		c.Offset = min(c.Offset, o)
	}
	return c
}

// Size is the number of offsets p holds: one per held workspace.
func (p *Partition) Size() int { return len(p.held) }
