package parking_test

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/parking"
)

// The model: source partitions and K parking partitions as in-memory logs,
// one owner per partition driving a parking.Source or parking.Partition, an
// API that accepts only unblocked workspaces, and commits (offset +
// metadata) that are the only thing a new owner starts from (with the
// parking logs' ends). Time is an explicit clock in milliseconds. A request
// may have an unknown outcome: its sender retries it at once, holds the
// cohort for the bound (Non-obvious 11; the model holds both actions, the
// sink only the other one), and a late copy lands at a random moment within
// the bound, also for a workspace blocked meanwhile. A new owner waits the
// bound before it reads (a hand-over without proof). Sends are otherwise
// synchronous, so a watermark is an owner's read position.

const bound = 30_000 // MOENGAGE_MAX_PROCESSING_TIME, ms

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
	noNotBefore             // parked records carry no hold
	noUndetourWait          // direct sends after an un-detour ignore the parking replica's hold
	noGenFilter             // parked records carry no writer generation: late writes are not dropped
	noMarker                // a new source owner reads the parking ends without writing its marker first
)

var mutationNames = map[mutation]string{
	none: "none", undetourEarly: "undetourEarly", skipOffByOne: "skipOffByOne",
	commitPastHeld: "commitPastHeld", noWriteAhead: "noWriteAhead", staleEnds: "staleEnds",
	noDetour: "noDetour", holdInMemory: "holdInMemory", markFromOffset: "markFromOffset",
	noNotBefore: "noNotBefore", noUndetourWait: "noUndetourWait", noGenFilter: "noGenFilter", noMarker: "noMarker",
}

type rec struct {
	w, cohort, uid string
	add            bool
	src            int
	srcOff         int64
	notBefore      string // header of a parked record
	gen            int64  // header of a parked record: its writer's generation
	marker         bool   // a generation marker, no change
}

type key struct{ w, cohort, uid string }

func (r rec) cohortKey() string { return r.w + "/" + r.cohort }

type commitRec struct {
	off  int64
	meta string
	ends []int64 // parking log ends at the commit (for staleEnds)
}

// owner is what both kinds of owners share: the replica's holds per
// cohort, and the hand-over wait.
type owner struct {
	holds     map[string]int64 // cohort key → end of its hold
	waitUntil int64
}

type srcOwner struct {
	owner
	gen    int64
	last   *lateWrite // the last record it parked
	st     *parking.Source
	pos    int64
	direct map[string]int64 // workspace → no direct send before (un-detour wait)
}

type parkOwner struct {
	owner
	p     *parking.Partition
	mem   int             // records kept in memory (holdInMemory)
	start *parking.Commit // markFromOffset: the commit it started from
	armed map[int64]bool  // records whose header this owner applied
}

// lateWrite is a parking write of an expelled owner that the brokers
// append late (a copy of one it made: a superset of the real case, where
// the write was not acknowledged and the successor re-parks the record).
type lateWrite struct {
	at int64
	k  int
	r  rec
}

type lateCopy struct {
	at     int64
	r      rec
	replay bool // sent after a later change of its key (a re-read's repeat)
}

type model struct {
	r          *rand.Rand
	mut        mutation
	now        int64
	ws         []string
	nc, nu     int   // cohorts, uids per cohort
	unknown    int   // one attempt in unknown has an unknown outcome
	dt         int64 // a step's time is up to dt ms
	blocked    map[string]bool
	src, park  [][]rec
	srcCommit  []commitRec
	parkCommit []commitRec
	so         []*srcOwner
	po         []*parkOwner
	late       []lateCopy
	lateWrites []lateWrite
	gen        int64 // the group's generation: one more at every takeover
	api        map[key]bool
	seen       map[key][]int64
	need       map[key]int64 // a repeat under way: the next change it must show
	fails      []string
	trace      []string // nil: off
}

func (m *model) tracef(format string, args ...any) {
	if m.trace != nil {
		m.trace = append(m.trace, fmt.Sprintf("%7d ", m.now)+fmt.Sprintf(format, args...))
	}
}

func newModel(seed uint64, mut mutation) *model {
	r := rand.New(rand.NewPCG(seed, 0x9a4c))
	nw, ns, nk := 2+r.IntN(3), 2*(1+r.IntN(2)), 1+r.IntN(3)
	m := &model{r: r, mut: mut, nc: 3, nu: 4, unknown: 20, dt: 3000, blocked: map[string]bool{}, api: map[key]bool{}, seen: map[key][]int64{}, need: map[key]int64{}}
	if r.IntN(3) == 0 { // hot: few keys, many unknown outcomes
		m.nc, m.nu, m.unknown, m.dt = 1, 2, 4, 300
	}
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
	c, u := fmt.Sprintf("c%d", m.r.IntN(m.nc)), fmt.Sprintf("u%d", m.r.IntN(m.nu))
	s := m.srcPartition(w, c, u)
	m.src[s] = append(m.src[s], rec{w: w, cohort: c, uid: u, add: m.r.IntN(2) == 0, src: s, srcOff: int64(len(m.src[s]))})
}

// apply is the API processing r. Assertion (1), as it happens: a change
// the API sees for the first time, or a late copy of a request sent in
// order, never comes after a later change of its key; a change seen again
// after a later one (a re-read's repeat) is followed by its key's next
// change in the log, and so on until the repeat is past the latest seen:
// a repeat replays the log, it does not skip back and forth.
func (m *model) apply(r rec, late bool) {
	k := key{r.w, r.cohort, r.uid}
	o := int64(r.src)<<32 | r.srcOff
	if need, ok := m.need[k]; ok {
		if o > need {
			m.failf("(1) %v: %s after a repeat that stopped before %s", k, offs(o), offs(need))
		}
		delete(m.need, k)
	}
	if seq := m.seen[k]; len(seq) > 0 && slices.Max(seq) > o {
		if late {
			m.failf("(1) %v: a late copy of %s landed after %s", k, offs(o), offs(slices.Max(seq)))
		} else if !slices.Contains(seq, o) {
			m.failf("(1) %v: %s seen first after %s", k, offs(o), offs(slices.Max(seq)))
		}
		m.need[k] = m.nextOf(r)
	}
	m.tracef("apply %v %s late=%v", k, offs(o), late)
	m.seen[k] = append(m.seen[k], o)
	m.api[k] = r.add
}

// nextOf is the offset of the next change of r's key in its source log.
func (m *model) nextOf(r rec) int64 {
	for _, x := range m.src[r.src][r.srcOff+1:] {
		if x.w == r.w && x.cohort == r.cohort && x.uid == r.uid {
			return int64(x.src)<<32 | x.srcOff
		}
	}
	panic("no later change of a key seen later")
}

// deliver is a Send of r by owner o: the API takes it only for an
// unblocked workspace; one attempt in m.unknown has an unknown outcome.
func (m *model) deliver(o *owner, r rec) bool {
	if m.r.IntN(m.unknown) == 0 {
		seq := m.seen[key{r.w, r.cohort, r.uid}]
		replay := len(seq) > 0 && slices.Max(seq) > int64(r.src)<<32|r.srcOff
		m.late = append(m.late, lateCopy{at: m.now + 1 + m.r.Int64N(bound), r: r, replay: replay})
		m.tracef("unknown %s s%d@%d until %d, copy at %d", r.cohortKey(), r.src, r.srcOff, m.now+bound, m.late[len(m.late)-1].at)
		o.holds[r.cohortKey()] = max(o.holds[r.cohortKey()], m.now+bound)
	}
	if m.blocked[r.w] {
		return false
	}
	m.apply(r, false)
	return true
}

// applyLate lets the late copies due by now land, in their order.
func (m *model) applyLate() {
	slices.SortStableFunc(m.late, func(a, b lateCopy) int { return int(a.at - b.at) })
	i := 0
	for ; i < len(m.late) && m.late[i].at <= m.now; i++ {
		m.apply(m.late[i].r, !m.late[i].replay)
	}
	m.late = m.late[i:]
	keep := m.lateWrites[:0]
	for _, w := range m.lateWrites {
		if w.at <= m.now {
			m.park[w.k] = append(m.park[w.k], w.r)
		} else {
			keep = append(keep, w)
		}
	}
	m.lateWrites = keep
}

func (o *owner) free(ck string, now int64) bool { return now >= o.holds[ck] && now >= o.waitUntil }

// maxHold is the longest hold left in o, the hand-over wait included.
func (o *owner) maxHold(now int64) time.Duration {
	end := o.waitUntil
	for _, e := range o.holds {
		end = max(end, e)
	}
	return time.Duration(max(0, end-now)) * time.Millisecond
}

func (m *model) newOwner() owner {
	return owner{holds: map[string]int64{}, waitUntil: m.now + bound}
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
		if len(o.armed) > len(m.ws)+1 {
			m.failf("(4) parking %d armed %d records", k, len(o.armed))
		}
	}
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms) }
