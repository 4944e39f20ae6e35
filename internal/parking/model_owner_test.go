package parking_test

import (
	"github.com/cohortsync/cohortsync-worker/internal/parking"
)

func (m *model) srcTakeover(s int, clean bool) {
	if clean {
		m.commitSrc(s)
	}
	c := m.srcCommit[s]
	m.newGeneration()
	if m.mut != noMarker {
		for k := range m.park {
			m.park[k] = append(m.park[k], rec{marker: true, gen: m.gen})
		}
	}
	ends := m.ends()
	if m.mut == staleEnds && c.ends != nil {
		ends = c.ends
	}
	st, err := parking.NewSource(c.meta, ends)
	if err != nil {
		m.failf("source %d: %v", s, err)
		return
	}
	m.tracef("src %d takeover %+v", s, c)
	if old := m.so[s]; old != nil && old.last != nil && !clean && m.r.IntN(2) == 0 {
		w := *old.last
		w.at = m.now + bound + m.r.Int64N(2*bound) // after the successor's wait: a paused writer
		m.lateWrites = append(m.lateWrites, w)
	}
	m.so[s] = &srcOwner{owner: m.newOwner(), gen: m.gen, st: st, pos: c.off, direct: map[string]int64{}}
}

// newGeneration is a rebalance: every owner that keeps its partition
// writes in the new generation from now on (its writes of the old one were
// acknowledged before: the fence awaits them).
func (m *model) newGeneration() {
	m.gen++
	for _, o := range m.so {
		if o != nil {
			o.gen = m.gen
		}
	}
}

func (m *model) commitSrc(s int) {
	o := m.so[s]
	m.srcCommit[s] = commitRec{off: o.pos, meta: o.st.Metadata(), ends: m.ends()}
}

func (m *model) parkTakeover(k int, clean bool) {
	if clean {
		m.commitPark(k)
	}
	c := m.parkCommitOf(k)
	m.newGeneration()
	o := &parkOwner{owner: m.newOwner(), p: parking.NewPartition(c), armed: map[int64]bool{}}
	switch m.mut {
	case markFromOffset:
		o.p = parking.NewPartition(parking.Commit{Offset: c.Offset, Mark: c.Offset, Gen: c.Gen, Held: c.Held, HeldGen: c.HeldGen})
		o.start = &c
	case skipOffByOne:
		for w, off := range c.Held {
			o.p.Advance(w, off, c.HeldGen[w])
		}
	}
	m.tracef("park %d takeover %+v", k, c)
	m.po[k] = o
}

func (m *model) commitPark(k int) {
	o := m.po[k]
	c := o.p.Commit(o.maxHold(m.now))
	if m.mut == commitPastHeld {
		c = parking.Commit{Offset: c.Mark, Mark: c.Mark, Gen: c.Gen, Hold: c.Hold}
	}
	m.parkCommit[k] = commitRec{off: c.Offset, meta: c.Encode()}
}

// srcStep lets source partition s's owner handle its next record.
func (m *model) srcStep(s int) bool {
	o := m.so[s]
	if o.pos >= int64(len(m.src[s])) || m.now < o.waitUntil {
		return false
	}
	r := m.src[s][o.pos]
	if o.st.Detoured(r.w) {
		m.tryUndetour(o, r.w)
	}
	if !o.st.Detoured(r.w) {
		if o.free(r.cohortKey(), m.now) && m.now >= o.direct[r.w] {
			if m.deliver(&o.owner, r) {
				o.pos++
				return true
			}
		} else if !m.blocked[r.w] {
			return false // held: a blocked workspace is detoured all the same
		}
		if m.mut == noDetour {
			return false
		}
		meta, err := o.st.StartDetour(r.w)
		if err != nil {
			return false
		}
		if m.mut != noWriteAhead {
			m.srcCommit[s] = commitRec{off: o.pos, meta: meta, ends: m.ends()}
		}
	}
	m.parkRecord(o, r)
	return true
}

func (m *model) tryUndetour(o *srcOwner, w string) {
	ok, wait := o.st.CanUndetour(w, m.blocked[w], m.parkCommitOf)
	if m.mut == undetourEarly {
		ok = !m.blocked[w]
	}
	if m.mut == noUndetourWait {
		wait = 0
	}
	if ok {
		m.tracef("undetour %s wait %v", w, wait)
		o.st.Undetour(w)
		o.direct[w] = m.now + wait.Milliseconds()
	}
}

// parkRecord writes r to its parking partition with the not-before header:
// the hold of its cohort in this replica (and an un-detour wait not over).
func (m *model) parkRecord(o *srcOwner, r rec) {
	end := max(o.holds[r.cohortKey()], o.direct[r.w])
	if m.mut == noNotBefore {
		end = 0
	}
	r.notBefore = parking.NotBefore(msTime(m.now), msTime(end))
	if m.mut != noGenFilter {
		r.gen = o.gen
	}
	k := parking.PartitionFor(r.w, r.cohort, len(m.park))
	m.park[k] = append(m.park[k], r)
	o.last = &lateWrite{k: k, r: r}
	o.st.Parked(r.w, k, int64(len(m.park[k])-1))
	m.tracef("park %s s%d@%d -> k%d@%d nb=%s", r.cohortKey(), r.src, r.srcOff, k, len(m.park[k])-1, r.notBefore)
	o.pos++
}

// ready applies a parked record's header once, when this owner first reads
// it, and says whether its cohort is free to send.
func (m *model) ready(o *parkOwner, off int64, r rec) bool {
	if !o.armed[off] {
		w, err := parking.Wait(r.notBefore)
		if err != nil {
			m.failf("header %q: %v", r.notBefore, err)
		}
		ck := r.cohortKey()
		o.holds[ck] = max(o.holds[ck], m.now+w.Milliseconds())
		o.armed[off] = true
	}
	return o.free(r.cohortKey(), m.now)
}

// parkMain lets parking partition k's main cursor handle its next record.
func (m *model) parkMain(k int) bool {
	o := m.po[k]
	off := o.p.Next()
	if off >= int64(len(m.park[k])) || m.now < o.waitUntil {
		return false
	}
	r := m.park[k][off]
	if o.start != nil && o.start.Settled(r.w, off) {
		o.p.Done(off, r.gen) // the design's first skip rule, read from the committed offset
		return true
	}
	switch o.p.Classify(r.w, r.gen) {
	case parking.Pass:
		if m.mut == holdInMemory {
			o.mem++
		}
	case parking.Deliver:
		// Not sent before its cohort is free; a blocked workspace is held
		// all the same (a request that overtook a late copy would break
		// order even if the API refused it: its outcome may be unknown).
		if r.marker {
			break
		}
		sent := m.ready(o, off, r) && m.deliver(&o.owner, r)
		if !sent && (!m.blocked[r.w] || !o.p.Hold(r.w, off)) {
			return false
		}
	}
	delete(o.armed, off)
	o.p.Done(off, r.gen)
	return true
}

// parkResume moves w's resume cursor in parking partition k by one record.
func (m *model) parkResume(k int, w string) bool {
	o := m.po[k]
	if _, held := o.p.Held(w); !held || m.blocked[w] || m.now < o.waitUntil {
		return false
	}
	pos, ok := o.p.Resume(w)
	if !ok {
		return true // released
	}
	r := m.park[k][pos]
	if o.p.ResumeClassify(w, r.w, r.gen) == parking.Deliver && !r.marker {
		if !m.ready(o, pos, r) || !m.deliver(&o.owner, r) {
			return false
		}
		delete(o.armed, pos)
	}
	o.p.Advance(w, pos, r.gen)
	return true
}

func (m *model) anyResume(k int) bool {
	for _, w := range m.ws {
		if m.parkResume(k, w) {
			return true
		}
	}
	return false
}
