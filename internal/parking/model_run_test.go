package parking_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// step does one random thing: produce, read, toggle a block, commit, or
// hand a partition over (clean: committed first; else a crash).
func (m *model) step() {
	m.now += m.r.Int64N(m.dt)
	m.applyLate()
	switch p := m.r.IntN(100); {
	case p < 30:
		m.produce()
	case p < 55:
		m.srcStep(m.r.IntN(len(m.src)))
	case p < 80:
		k := m.r.IntN(len(m.park))
		if m.r.IntN(3) == 0 {
			m.parkResume(k, m.ws[m.r.IntN(len(m.ws))])
		} else {
			m.parkMain(k)
		}
	case p < 86:
		w := m.ws[m.r.IntN(len(m.ws))]
		m.blocked[w] = !m.blocked[w]
	case p < 91:
		m.commitSrc(m.r.IntN(len(m.src)))
	case p < 96:
		m.commitPark(m.r.IntN(len(m.park)))
	case p < 98:
		m.srcTakeover(m.r.IntN(len(m.src)), m.r.IntN(2) == 0)
	default:
		m.parkTakeover(m.r.IntN(len(m.park)), m.r.IntN(2) == 0)
	}
	m.checkMemory()
}

// quiesce runs every owner until none can move and no hold or late copy
// is left, committing each round; time moves on while all wait.
func (m *model) quiesce() {
	for range 10000 {
		m.applyLate()
		moved := false
		for s := range m.src {
			for m.srcStep(s) {
				moved = true
			}
			m.commitSrc(s)
		}
		for k := range m.park {
			for m.parkMain(k) || m.anyResume(k) {
				moved = true
			}
			m.commitPark(k)
		}
		m.checkMemory()
		if !moved {
			if len(m.late) == 0 && len(m.lateWrites) == 0 && !m.waiting() {
				return
			}
			m.now += 1000
		}
	}
	m.failf("no quiescence")
}

func (m *model) waiting() bool {
	for _, o := range m.so {
		if o.maxHold(m.now) > 0 {
			return true
		}
		for _, d := range o.direct {
			if d > m.now {
				return true
			}
		}
	}
	for _, o := range m.po {
		if o.maxHold(m.now) > 0 {
			return true
		}
	}
	return false
}

// checkIsolation is assertion (3): with a workspace still blocked, every
// source partition's commit reached its log end.
func (m *model) checkIsolation() {
	for s := range m.src {
		if c, end := m.srcCommit[s].off, int64(len(m.src[s])); c != end {
			m.failf("(3) source %d committed %d of %d with %v blocked", s, c, end, m.blockedList())
		}
	}
}

func (m *model) blockedList() []string {
	var out []string
	for _, w := range m.ws {
		if m.blocked[w] {
			out = append(out, w)
		}
	}
	return out
}

// checkFinal is assertions (1) and (2), once everything is unblocked and
// drained: per key, the last change the API saw is the latest it ever saw
// (a re-read may repeat a suffix, but an earlier change never has the last
// word), and the membership is the fold of the source logs.
func (m *model) checkFinal() {
	for k, seq := range m.seen {
		if last, top := seq[len(seq)-1], slices.Max(seq); last != top {
			m.failf("(1) %v: saw %s last after %s", k, offs(last), offs(top))
		}
	}
	for k, need := range m.need {
		m.failf("(1) %v: a repeat ended before %s", k, offs(need))
	}
	fold := map[key]bool{}
	for _, log := range m.src {
		for _, r := range log {
			fold[key{r.w, r.cohort, r.uid}] = r.add
		}
	}
	for k, v := range fold {
		if m.api[k] != v {
			m.failf("(2) %v: API has member=%v, log says %v (seen %s)", k, m.api[k], v, offs(m.seen[k]...))
		}
	}
}

func offs(o ...int64) string {
	var b []string
	for _, x := range o {
		b = append(b, fmt.Sprintf("s%d@%d", x>>32, x&(1<<32-1)))
	}
	return strings.Join(b, ",")
}

// run is one seeded scenario: random steps, a quiet phase with ws0 blocked
// (isolation), then everything unblocked and drained (order and fold).
func run(seed uint64, mut mutation, steps int) []string {
	m := newModel(seed, mut)
	for range steps {
		m.step()
	}
	m.blocked[m.ws[0]] = true
	m.quiesce()
	m.checkIsolation()
	clear(m.blocked)
	m.quiesce()
	m.checkFinal()
	slices.Sort(m.fails)
	return m.fails
}

func seeds(t *testing.T, def int) int {
	if v := os.Getenv("PARKING_MODEL_SEEDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("PARKING_MODEL_SEEDS=%q: %v", v, err)
		}
		return n
	}
	return def
}

// TestModel: the protocol holds order, fold, isolation and bounded memory
// over random blocks, unblocks, crashes and hand-overs. More seeds:
// PARKING_MODEL_SEEDS=20000.
func TestModel(t *testing.T) {
	n := seeds(t, 500)
	for seed := range uint64(n) {
		if fails := run(seed, none, 400); len(fails) > 0 {
			t.Fatalf("seed %d: %d failures, first: %s", seed, len(fails), fails[0])
		}
	}
}

// TestModelCatchesBrokenRules breaks one rule at a time and expects the
// model to fail with the named assertion within the seeds.
func TestModelCatchesBrokenRules(t *testing.T) {
	want := map[mutation]string{
		undetourEarly:  "(1)|(2)",
		skipOffByOne:   "(2)",
		commitPastHeld: "(2)",
		noWriteAhead:   "(1)|(2)",
		staleEnds:      "(1)|(2)",
		noDetour:       "(3)",
		holdInMemory:   "(4)",
		markFromOffset: "(1)|(2)",
		noNotBefore:    "(1)",
		noUndetourWait: "(1)",
		noGenFilter:    "(1)",
		noMarker:       "(1)",
	}
	n := seeds(t, 2000)
	for mut := none + 1; mut <= noMarker; mut++ {
		tags := want[mut]
		t.Run(mutationNames[mut], func(t *testing.T) {
			for seed := range uint64(n) {
				for _, f := range run(seed, mut, 400) {
					for tag := range strings.SplitSeq(tags, "|") {
						if strings.HasPrefix(f, tag) {
							t.Logf("seed %d: %s", seed, f)
							return
						}
					}
				}
			}
			t.Errorf("no seed of %d failed with %s", n, tags)
		})
	}
}
