package parking

import "time"

// HeaderGeneration is the header of a parked record (and of a marker, a
// record with no change) that carries its writer's group generation.
const HeaderGeneration = "cohortsync-writer-generation"

// Decision is what a cursor of a parking partition does with a record.
type Decision int

const (
	// Deliver: send the record to the API; report Done (main cursor) or
	// Advance (resume cursor) when accepted, or Hold when its workspace
	// turned out blocked.
	Deliver Decision = iota
	// Pass: not for this cursor (main: its workspace is held, blocked or
	// resuming; resume: another workspace's record); the cursor passes over
	// it without keeping it.
	Pass
	// Stale: written by an owner of its source partition in an older
	// generation than a record before it in this partition: a late write of
	// an expelled owner, re-read and re-parked by its successor. Dropped.
	Stale
)

// cursor is a held workspace's resume position: its first unsent offset
// o_V and the highest writer generation of the records before it.
type cursor struct{ off, gen int64 }

// Partition is the state of one parking partition k for its owner: the main
// cursor's next offset (its watermark m: the caller reports outcomes in
// offset order) and the highest writer generation it has read, the resume
// cursor of every held workspace V (o_V, and its generation), and the
// metadata bound.
//
// The skip rule (PARKING.md): a new owner's main cursor starts at the
// committed m, not at the committed offset, and each listed workspace's
// resume cursor at its o_V. Every record below m that is not a listed
// workspace's at or past its o_V is settled, so neither cursor reads it, and
// the m this owner commits never falls below the m it started from.
//
// A held workspace that is no longer blocked is resumed by a second cursor
// that starts at o_V (Resume), takes only V's records (ResumeClassify,
// Advance); when it reaches the main cursor, V is released and the main
// cursor delivers V's records again.
type Partition struct {
	next, gen int64
	held      map[string]cursor
	bound     int
}

// NewPartition starts an owner from k's committed state (ParseCommit): the
// main cursor at c.Mark, a resume cursor per listed workspace at its o_V.
func NewPartition(c Commit) *Partition {
	p := &Partition{next: c.Mark, gen: c.Gen, held: map[string]cursor{}, bound: MaxMetadata - Reserve}
	for w, o := range c.Held {
		p.held[w] = cursor{off: o, gen: c.HeldGen[w]}
	}
	return p
}

// Next is the main cursor's next offset.
func (p *Partition) Next() int64 { return p.next }

// Classify decides on the record of workspace x written in generation g,
// read by the main cursor.
func (p *Partition) Classify(x string, g int64) Decision {
	if g < p.gen {
		return Stale
	}
	if _, ok := p.held[x]; ok {
		return Pass
	}
	return Deliver
}

// Done reports that the main cursor is finished with the record at off,
// written in generation g.
func (p *Partition) Done(off, g int64) {
	if off != p.next {
		panic("parking: Done out of order")
	}
	p.next = off + 1
	p.gen = max(p.gen, g)
}

// Hold makes x held at off (its first unsent record), when x's record
// there could not be delivered because x is blocked; call it before Done.
// False: one more held workspace does not fit in the commit metadata; the
// main cursor stops there (the watermark stops advancing, memory stays
// bounded) and tries again later.
func (p *Partition) Hold(x string, off int64) bool {
	if _, ok := p.held[x]; ok {
		return true
	}
	if p.encodedBound()+entryBound(x) > p.bound {
		return false
	}
	p.held[x] = cursor{off: off, gen: p.gen}
	return true
}

func (p *Partition) encodedBound() int {
	n := len("m=;g=;hold=;h=") + 3*maxOffsetDigits
	for w := range p.held {
		n += entryBound(w) + 1
	}
	return n
}

// Resume returns the next offset x's resume cursor reads. False: x is not
// held, or its cursor reached the main cursor and x is released now.
func (p *Partition) Resume(x string) (int64, bool) {
	c, ok := p.held[x]
	if ok && c.off >= p.next {
		delete(p.held, x)
		return 0, false
	}
	return c.off, ok
}

// ResumeClassify decides on the record of workspace rx written in
// generation g, read by x's resume cursor.
func (p *Partition) ResumeClassify(x, rx string, g int64) Decision {
	switch {
	case g < p.held[x].gen:
		return Stale
	case rx != x:
		return Pass
	}
	return Deliver
}

// Advance reports that x's resume cursor is finished with the record at
// off, written in generation g (accepted, passed over, or stale).
func (p *Partition) Advance(x string, off, g int64) {
	c, ok := p.held[x]
	if !ok || off != c.off {
		panic("parking: Advance out of order")
	}
	p.held[x] = cursor{off: off + 1, gen: max(c.gen, g)}
}

// Held returns x's first unsent offset, if x is held.
func (p *Partition) Held(x string) (int64, bool) {
	c, ok := p.held[x]
	return c.off, ok
}

// Commit is the state to commit: offset min(m, every o_V); hold is the
// longest unknown-outcome hold of this replica at this moment (see Commit).
func (p *Partition) Commit(hold time.Duration) Commit {
	c := Commit{Offset: p.next, Mark: p.next, Gen: p.gen, Hold: hold,
		Held: make(map[string]int64, len(p.held)), HeldGen: make(map[string]int64, len(p.held))}
	for w, h := range p.held {
		c.Held[w], c.HeldGen[w] = h.off, h.gen
		c.Offset = min(c.Offset, h.off)
	}
	return c
}

// Size is the number of cursors p holds: one per held workspace.
func (p *Partition) Size() int { return len(p.held) }
