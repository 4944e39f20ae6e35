package parking_test

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"

	"github.com/cohortsync/cohortsync-worker/internal/parking"
)

// The model: source partitions and K parking partitions as in-memory logs,
// one owner per partition driving a parking.Source or parking.Partition, an
// API that accepts only unblocked workspaces, and commits (offset +
// metadata) that are the only thing a new owner starts from. Sends are
// synchronous: an accepted record is settled at once, so a watermark is the
// owner's read position. Not modelled: unknown outcomes (the not-before
// header, notbefore_test.go) and late writes of an expelled owner.

// mutation breaks one rule on purpose, to show that the checks catch it.
type mutation int

const (
	none           mutation = iota
	undetourEarly           // un-detour as soon as the workspace is unblocked
	skipOffByOne            // a new owner's resume cursor starts past o_X
	commitPastHeld          // a parking commit at the watermark, no o_V
	noWriteAhead            // no commit of the detour set before parking
	staleEnds               // a new source owner trusts the positions of the last commit
	noDetour                // a blocked workspace's records wait in the source
	holdInMemory            // the parking owner keeps the records it passes over
	markFromOffset          // a new parking owner reads from the committed offset, its m starting there
)

var mutationNames = map[mutation]string{
	none: "none", undetourEarly: "undetourEarly", skipOffByOne: "skipOffByOne",
	commitPastHeld: "commitPastHeld", noWriteAhead: "noWriteAhead", staleEnds: "staleEnds",
	noDetour: "noDetour", holdInMemory: "holdInMemory", markFromOffset: "markFromOffset",
}

type rec struct {
	w, cohort, uid string
	add            bool
	src            int
	srcOff         int64
}

type key struct{ w, cohort, uid string }

type commitRec struct {
	off  int64
	meta string
	ends []int64 // parking log ends at the commit (for staleEnds)
}

type srcOwner struct {
	st  *parking.Source
	pos int64
}

type parkOwner struct {
	p     *parking.Partition
	mem   int
	start *parking.Commit // markFromOffset: the commit it started from // records kept in memory (holdInMemory)
}

type model struct {
	r          *rand.Rand
	mut        mutation
	ws         []string
	blocked    map[string]bool
	src, park  [][]rec
	srcCommit  []commitRec
	parkCommit []commitRec
	so         []*srcOwner
	po         []*parkOwner
	api        map[key]bool
	seen       map[key][]int64
	fails      []string
	trace      []string
}

func (m *model) tracef(format string, args ...any) {
	if m.trace != nil {
		m.trace = append(m.trace, fmt.Sprintf(format, args...))
	}
}

func newModel(seed uint64, mut mutation) *model {
	r := rand.New(rand.NewPCG(seed, 0x9a4c))
	nw, ns, nk := 2+r.IntN(3), 2*(1+r.IntN(2)), 1+r.IntN(3)
	m := &model{r: r, mut: mut, blocked: map[string]bool{}, api: map[key]bool{}, seen: map[key][]int64{}}
	for i := range nw {
		m.ws = append(m.ws, fmt.Sprintf("ws%d", i))
	}
	m.src, m.park = make([][]rec, ns), make([][]rec, nk)
	m.srcCommit, m.parkCommit = make([]commitRec, ns), make([]commitRec, nk)
	m.so, m.po = make([]*srcOwner, ns), make([]*parkOwner, nk)
	for i := range ns {
		m.srcTakeover(i, false)
	}
	for k := range nk {
		m.parkTakeover(k, false)
	}
	return m
}

func (m *model) failf(format string, args ...any) {
	m.fails = append(m.fails, fmt.Sprintf(format, args...))
}

func hash(parts ...string) int {
	h := fnv.New32a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return int(h.Sum32() >> 1)
}

// srcPartition: half of the source partitions are a topic keyed by cohort,
// half one keyed by uid; each (workspace, cohort) uses one of the topics.
func (m *model) srcPartition(w, c, u string) int {
	half := len(m.src) / 2
	if hash(w, c)%2 == 0 {
		return hash(c) % half
	}
	return half + hash(w, u)%half
}

func (m *model) produce() {
	w := m.ws[m.r.IntN(len(m.ws))]
	c, u := fmt.Sprintf("c%d", m.r.IntN(3)), fmt.Sprintf("u%d", m.r.IntN(4))
	s := m.srcPartition(w, c, u)
	m.src[s] = append(m.src[s], rec{w: w, cohort: c, uid: u, add: m.r.IntN(2) == 0, src: s, srcOff: int64(len(m.src[s]))})
}

// deliver is the API: it takes a change only for an unblocked workspace.
func (m *model) deliver(r rec) bool {
	if m.blocked[r.w] {
		return false
	}
	k := key{r.w, r.cohort, r.uid}
	m.tracef("deliver %v s%d@%d add=%v", k, r.src, r.srcOff, r.add)
	m.seen[k] = append(m.seen[k], int64(r.src)<<32|r.srcOff)
	m.api[k] = r.add
	return true
}

func (m *model) ends() []int64 {
	out := make([]int64, len(m.park))
	for k := range m.park {
		out[k] = int64(len(m.park[k]))
	}
	return out
}

func (m *model) parkCommitOf(k int) parking.Commit {
	c, err := parking.ParseCommit(m.parkCommit[k].off, m.parkCommit[k].meta)
	if err != nil {
		m.failf("parse parking commit %d: %v", k, err)
	}
	return c
}

func (m *model) srcTakeover(s int, clean bool) {
	if clean {
		m.commitSrc(s)
	}
	c := m.srcCommit[s]
	ends := m.ends()
	if m.mut == staleEnds && c.ends != nil {
		ends = c.ends
	}
	st, err := parking.NewSource(c.meta, ends)
	if err != nil {
		m.failf("source %d: %v", s, err)
		return
	}
	m.so[s] = &srcOwner{st: st, pos: c.off}
	m.tracef("src %d takeover clean=%v commit %+v", s, clean, c)
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
	m.po[k] = &parkOwner{p: parking.NewPartition(c)}
	if m.mut == markFromOffset {
		m.po[k] = &parkOwner{p: parking.NewPartition(parking.Commit{Offset: c.Offset, Mark: c.Offset, Held: c.Held}), start: &c}
	}
	if m.mut == skipOffByOne {
		for w, o := range c.Held {
			m.po[k].p.Advance(w, o+1)
		}
	}
	m.tracef("park %d takeover clean=%v commit %+v", k, clean, c)
}

func (m *model) commitPark(k int) {
	c := m.po[k].p.Commit()
	if m.mut == commitPastHeld {
		c = parking.Commit{Offset: c.Mark, Mark: c.Mark}
	}
	m.parkCommit[k] = commitRec{off: c.Offset, meta: c.Encode()}
	m.tracef("park %d commit %+v", k, c)
}

// srcStep lets source partition s's owner handle its next record.
func (m *model) srcStep(s int) bool {
	o := m.so[s]
	if o.pos >= int64(len(m.src[s])) {
		return false
	}
	r := m.src[s][o.pos]
	if o.st.Detoured(r.w) {
		ok := o.st.CanUndetour(r.w, m.blocked[r.w], m.parkCommitOf)
		if m.mut == undetourEarly {
			ok = !m.blocked[r.w]
		}
		if ok {
			m.tracef("src %d undetour %s at %d", s, r.w, o.pos)
			o.st.Undetour(r.w)
		}
	}
	if !o.st.Detoured(r.w) {
		if m.deliver(r) {
			o.pos++
			return true
		}
		if m.mut == noDetour {
			return false
		}
		m.tracef("src %d detour %s at %d", s, r.w, o.pos)
		meta, err := o.st.StartDetour(r.w)
		if err != nil {
			return false
		}
		if m.mut != noWriteAhead {
			m.srcCommit[s] = commitRec{off: o.pos, meta: meta, ends: m.ends()}
		}
	}
	k := parking.PartitionFor(r.w, r.cohort, len(m.park))
	m.park[k] = append(m.park[k], r)
	m.tracef("src %d park %s s%d@%d -> k%d@%d", s, r.w, r.src, r.srcOff, k, len(m.park[k])-1)
	o.st.Parked(r.w, k, int64(len(m.park[k])-1))
	o.pos++
	return true
}

// parkMain lets parking partition k's main cursor handle its next record.
func (m *model) parkMain(k int) bool {
	o := m.po[k]
	off := o.p.Next()
	if off >= int64(len(m.park[k])) {
		return false
	}
	r := m.park[k][off]
	if o.start != nil && o.start.Settled(r.w, off) {
		o.p.Done(off) // the design's skip rule, read from the committed offset
		return true
	}
	switch d := o.p.Classify(r.w); d {
	case parking.Pass:
		if m.mut == holdInMemory {
			o.mem++
		}
	case parking.Deliver:
		if !m.deliver(r) && !o.p.Hold(r.w, off) {
			return false
		}
	}
	o.p.Done(off)
	return true
}

// parkResume moves w's resume cursor in parking partition k by one record.
func (m *model) parkResume(k int, w string) bool {
	o := m.po[k]
	pos, ok := o.p.Held(w)
	if !ok || m.blocked[w] {
		return false
	}
	m.tracef("park %d resume %s at %d", k, w, pos)
	if pos >= o.p.Next() {
		o.p.Advance(w, pos)
		return true
	}
	if r := m.park[k][pos]; r.w == w && !m.deliver(r) {
		return false
	}
	o.p.Advance(w, pos+1)
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

// checkMemory is assertion (4): no owner holds more than one offset per
// workspace (and parking partition), nothing per record.
func (m *model) checkMemory() {
	for s, o := range m.so {
		if o.st.Size() > len(m.ws)*len(m.park) {
			m.failf("(4) source %d holds %d offsets", s, o.st.Size())
		}
	}
	for k, o := range m.po {
		if n := o.p.Size() + o.mem; n > len(m.ws) {
			m.failf("(4) parking %d holds %d entries for %d workspaces", k, n, len(m.ws))
		}
	}
}
