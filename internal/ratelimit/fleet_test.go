package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

func TestAllocate(t *testing.T) {
	rec := func(name string, share, demand float64) ratelimit.Record {
		return ratelimit.Record{Replica: name, Share: share, Demand: demand}
	}
	for _, tc := range []struct {
		name          string
		share, demand float64
		peers         []ratelimit.Record
		want          map[string]float64
	}{
		{"no one needs more", 97, 1, []ratelimit.Record{rec("b", 97, 50), rec("c", 97, 1)}, nil},
		{"busy itself", 97, 300, []ratelimit.Record{rec("b", 97, 300)}, nil},
		{"one borrower, two idle lenders: half of the need each", 97, 1,
			[]ratelimit.Record{rec("b", 97, 300), rec("c", 97, 1)}, map[string]float64{"b": 96}},
		{"need smaller than the spares: met, not more", 97, 1,
			[]ratelimit.Record{rec("b", 97, 147), rec("c", 97, 1)}, map[string]float64{"b": 25}},
		{"two borrowers share in proportion", 97, 0,
			[]ratelimit.Record{rec("b", 97, 300), rec("c", 97, 200)}, map[string]float64{"b": 97 * 203 / 306.0, "c": 97 * 103 / 306.0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ratelimit.Allocate(tc.share, tc.demand, tc.peers)
			if len(got) != len(tc.want) {
				t.Fatalf("Allocate = %v, want %v", got, tc.want)
			}
			total := 0.0
			for k, v := range tc.want {
				if math.Abs(got[k]-v) > 0.002 {
					t.Fatalf("Allocate = %v, want %v", got, tc.want)
				}
				total += got[k]
			}
			if total > tc.share-min(tc.share, tc.demand) {
				t.Fatalf("lends %v of a spare of %v", total, tc.share-min(tc.share, tc.demand))
			}
		})
	}
}

// TestAllocateNeverLendsMoreThanSpare: for any views, what one lender lends
// adds up to at most its spare, and when all lenders share one view, each
// borrower gets no more than its need.
func TestAllocateNeverLendsMoreThanSpare(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		n := 1 + rng.IntN(6)
		recs := make([]ratelimit.Record, n)
		for i := range recs {
			share := float64(rng.IntN(100))
			recs[i] = ratelimit.Record{Replica: fmt.Sprint("r", i), Share: share, Demand: rng.Float64() * 300}
		}
		got := map[string]float64{}
		for i, r := range recs {
			peers := slices.Delete(slices.Clone(recs), i, i+1)
			lent := ratelimit.Allocate(r.Share, r.Demand, peers)
			total := 0.0
			for k, v := range lent {
				total += v
				got[k] += v
			}
			if spare := r.Share - min(r.Share, r.Demand); total > spare+1e-9 {
				t.Fatalf("%v lends %v of a spare of %v", r, total, spare)
			}
		}
		for _, r := range recs {
			if need := max(0, r.Demand-r.Share); got[r.Replica] > need+1e-6 {
				t.Fatalf("%s gets %v for a need of %v (%v)", r.Replica, got[r.Replica], need, recs)
			}
		}
	}
}

// simBoard is the board in memory: a log of records, which each replica
// reads with a delay of its own (never going back).
type simBoard struct {
	mu   sync.Mutex
	log  []simEntry
	down atomic.Bool // no replica can read or write
}

type simEntry struct {
	at  time.Time
	rec ratelimit.Record
}

type boardView struct {
	b      *simBoard
	self   string
	rng    *rand.Rand
	maxLag time.Duration
	seen   time.Time
	mu     sync.Mutex
}

func (v *boardView) Publish(_ context.Context, r ratelimit.Record) error {
	if v.b.down.Load() {
		return errors.New("board down")
	}
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	v.b.log = append(v.b.log, simEntry{time.Now(), r})
	return nil
}

func (v *boardView) Records() ([]ratelimit.Record, time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.b.down.Load() {
		cut := time.Now().Add(-time.Duration(v.rng.Int64N(int64(v.maxLag) + 1)))
		if cut.After(v.seen) {
			v.seen = cut
		}
	}
	v.b.mu.Lock()
	defer v.b.mu.Unlock()
	latest := map[string]ratelimit.Record{}
	for _, e := range v.b.log {
		if !e.at.After(v.seen) && e.rec.Replica != v.self {
			latest[e.rec.Replica] = e.rec
		}
	}
	out := make([]ratelimit.Record, 0, len(latest))
	for _, r := range latest {
		out = append(out, r)
	}
	return out, v.seen
}

// simReplica is one worker: its Limiter, its Fleet and a sender that takes
// permits while it is busy and not fenced.
type simReplica struct {
	name   string
	lim    *ratelimit.Limiter
	fleet  *ratelimit.Fleet
	busy   atomic.Bool
	fenced atomic.Bool
	offset atomic.Int64 // its wall clock's step from the bubble's time (ns)
	cancel context.CancelFunc
	done   sync.WaitGroup
}

type simFleet struct {
	t        *testing.T
	budget   float64
	board    *simBoard
	rng      *rand.Rand
	mu       sync.Mutex
	permits  map[string][]time.Time
	replicas []*simReplica
	gen      int64
	shares   map[string]float64 // the shares of the current generation, dead replicas' too
	over     string             // the first time the rates added up to more than the shares
	metaFail float64            // how often a member other than the leader cannot read the partition total
	lastBad  time.Time          // when injectBadRecord last wrote
}

func newSimFleet(t *testing.T, budget float64, seed uint64) *simFleet {
	s := &simFleet{t: t, budget: budget, board: &simBoard{}, rng: rand.New(rand.NewPCG(seed, 7)),
		permits: map[string][]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.watchRates(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if s.over != "" {
			t.Error(s.over)
		}
	})
	return s
}

// watchRates checks, every 50 ms of the bubble's time, the invariant the budget rests on: the
// rates of the replicas that may send (not fenced) add up to at most the
// shares of the generation and their reserves (lent by replicas drained
// at the floor rate, which is counted too).
func (s *simFleet) watchRates(ctx context.Context) {
	for ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		synctest.Wait() // every other goroutine is blocked: the rates are one instant's
		s.mu.Lock()
		total, rates := 0.0, 0.0
		for _, v := range s.shares {
			total += v + ratelimit.Reserve(v) + s.budget/1e6
		}
		var who []string
		for _, r := range s.replicas {
			if !r.fenced.Load() {
				rates += r.lim.Rate()
				who = append(who, fmt.Sprintf("%s=%.3f", r.name, r.lim.Rate()))
			}
		}
		if rates > total+1e-6 && s.over == "" {
			s.over = fmt.Sprintf("at %v the rates add up to %.3f (%v), over the shares' %.3f", time.Now(), rates, who, total)
		}
		s.mu.Unlock()
	}
}

func (s *simFleet) start(name string) *simReplica {
	r := &simReplica{name: name, lim: ratelimit.NewLimiter(s.budget / 1e6)}
	r.fenced.Store(true)
	view := &boardView{b: s.board, self: name, rng: rand.New(rand.NewPCG(s.rng.Uint64(), 1)), maxLag: 800 * time.Millisecond}
	r.fleet = ratelimit.NewFleet(ratelimit.FleetConfig{Replica: name, Budget: s.budget, Limiter: r.lim, Board: view,
		Logger: slog.New(slog.DiscardHandler),
		Clock:  func() time.Time { return time.Now().Add(time.Duration(r.offset.Load())).Round(0) }})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done.Add(2)
	go func() { defer r.done.Done(); r.fleet.Run(ctx) }()
	go func() {
		defer r.done.Done()
		for ctx.Err() == nil {
			if !r.busy.Load() || r.fenced.Load() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			if r.lim.Wait(ctx) != nil {
				return
			}
			if r.fenced.Load() { // the lease ended while it waited: nothing is sent
				continue
			}
			s.mu.Lock()
			s.permits[name] = append(s.permits[name], time.Now())
			s.mu.Unlock()
		}
	}()
	s.mu.Lock()
	s.replicas = append(s.replicas, r)
	s.mu.Unlock()
	return r
}

func (s *simFleet) stop(r *simReplica) {
	r.cancel()
	r.done.Wait()
	s.mu.Lock()
	s.replicas = slices.DeleteFunc(s.replicas, func(x *simReplica) bool { return x == r })
	s.mu.Unlock()
}

// rebalance fences every replica (at once, as the group's lease does:
// nobody sends while a rebalance is under way), then starts the next
// generation with the partitions spread evenly, each replica a little
// apart from the others.
func (s *simFleet) rebalance(partitions int) {
	for _, r := range s.replicas {
		r.fenced.Store(true)
	}
	time.Sleep(time.Duration(s.rng.Int64N(int64(3 * time.Second))))
	s.mu.Lock()
	s.gen++
	members := slices.Clone(s.replicas)
	s.shares = map[string]float64{}
	for i, r := range members {
		s.shares[r.name] = ratelimit.Share(s.budget, assigned(i, len(members), partitions), partitions)
	}
	s.mu.Unlock()
	for i, r := range members {
		time.Sleep(time.Duration(s.rng.Int64N(int64(300 * time.Millisecond))))
		total := partitions
		if i > 0 && s.rng.Float64() < s.metaFail {
			total = 0 // its metadata request failed: the total is unknown
		}
		r.fleet.Rebalance(s.gen, assigned(i, len(members), partitions), total)
		r.fenced.Store(false)
	}
}

// assigned is the number of partitions member i of n gets.
func assigned(i, n, partitions int) int {
	a := partitions / n
	if i < partitions%n {
		a++
	}
	return a
}

// arrivals returns every permit, each delayed by up to the arrival slack
// (the extremes half of the time: the adversarial case), in order.
func (s *simFleet) arrivals() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Duration
	base := time.Time{}
	for _, ps := range s.permits {
		for _, p := range ps {
			if base.IsZero() || p.Before(base) {
				base = p
			}
		}
	}
	for _, ps := range s.permits {
		for _, p := range ps {
			d := time.Duration(s.rng.Int64N(int64(ratelimit.ArrivalSlack)))
			if s.rng.IntN(2) == 0 {
				d = time.Duration(s.rng.IntN(2)) * (ratelimit.ArrivalSlack - 1)
			}
			out = append(out, p.Sub(base)+d)
		}
	}
	slices.Sort(out)
	return out
}

// busiest returns the most arrivals in any 60-second window.
func busiest(arrivals []time.Duration) int {
	most := 0
	for i, j := 0, 0; i < len(arrivals); i++ {
		for j < len(arrivals) && arrivals[j]-arrivals[i] < time.Minute {
			j++
		}
		most = max(most, j-i)
	}
	return most
}

func (s *simFleet) count(name string, from, to time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.permits[name] {
		if !p.Before(from) && p.Before(to) {
			n++
		}
	}
	return n
}

func (s *simFleet) close() {
	for len(s.replicas) > 0 {
		s.stop(s.replicas[0])
	}
	s.mu.Lock()
	s.shares = nil
	s.mu.Unlock()
}

// oneBusyOfThree starts replicas a (busy), b and c (idle) in a generation
// of 6 partitions.
func oneBusyOfThree(t *testing.T, budget float64, seed uint64) (*simFleet, *simReplica, *simReplica) {
	s := newSimFleet(t, budget, seed)
	a, b, _ := s.start("a"), s.start("b"), s.start("c")
	a.busy.Store(true)
	s.rebalance(6)
	return s, a, b
}

// TestFleetLendsIdleShareAndGivesItBack: 3 replicas, 6 partitions, one
// busy: within seconds it sends at ≥ 90% of the budget; when another turns
// busy, that one has its share back within Lease + Margin + a Tick or two;
// no 60-second window of arrivals holds more than the budget.
func TestFleetLendsIdleShareAndGivesItBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget = 300
		s, _, b := oneBusyOfThree(t, budget, 1)
		defer s.close()
		time.Sleep(10 * time.Second)
		from := time.Now()
		time.Sleep(time.Minute)
		if n := s.count("a", from, time.Now()); n < 0.9*budget {
			t.Fatalf("the busy replica sent %d in a minute with the others idle, want >= %d", n, int(0.9*budget))
		}
		b.busy.Store(true)
		time.Sleep(8 * time.Second)
		from = time.Now()
		time.Sleep(30 * time.Second)
		share := ratelimit.Share(budget, 2, 6)
		if n := s.count("b", from, time.Now()); float64(n) < share/2*0.95 {
			t.Fatalf("the lender turned busy sent %d in 30 s, want about its share's %v", n, share/2)
		}
		if got := busiest(s.arrivals()); got > budget {
			t.Fatalf("%d arrivals in one 60-second window, budget %d", got, budget)
		}
	})
}

// TestFleetModel drives a fleet through random demand, joins, leaves
// (killed replicas), pauses, board outages, rebalances, members that cannot
// read the partition total, clock steps (small ones, within the Margin the
// protocol assumes, and steps of hours) and bad records on the board (a
// far-future pause, loans beyond the writer's share or from a clock hours
// ahead), and checks that the rates never add up to more than the shares,
// that no 60-second window of arrivals holds more than the budget, and
// that no record parks the fleet.
func TestFleetModel(t *testing.T) {
	for seed := range uint64(16) {
		t.Run(fmt.Sprint("seed-", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runFleetModel(t, seed) })
		})
	}
}

func runFleetModel(t *testing.T, seed uint64) {
	const budget, partitions = 300, 6
	s := newSimFleet(t, budget, seed)
	defer s.close()
	s.metaFail = 0.25
	rng := rand.New(rand.NewPCG(seed, 99))
	next := 0
	for range 3 {
		s.start(fmt.Sprint("r", next)).busy.Store(rng.IntN(2) == 0)
		next++
	}
	s.rebalance(partitions)
	for step := range 60 {
		time.Sleep(time.Duration(1+rng.IntN(20)) * time.Second)
		switch op := rng.IntN(12); {
		case op == 10: // a replica's clock steps
			stepClock(rng, s.replicas[rng.IntN(len(s.replicas))])
		case op == 11: // a bad record appears on the board, and stays
			s.injectBadRecord(rng)
		case op < 5: // demand changes
			r := s.replicas[rng.IntN(len(s.replicas))]
			r.busy.Store(!r.busy.Load())
		case op == 5 && len(s.replicas) < 6: // a replica joins
			s.start(fmt.Sprint("r", next)).busy.Store(rng.IntN(2) == 0)
			next++
			s.rebalance(partitions)
		case op == 6 && len(s.replicas) > 1: // a replica is killed; the group notices later
			s.stop(s.replicas[rng.IntN(len(s.replicas))])
			time.Sleep(10 * time.Second)
			s.rebalance(partitions)
		case op == 7: // the board is down for a while
			s.board.down.Store(true)
			time.Sleep(time.Duration(1+rng.IntN(15)) * time.Second)
			s.board.down.Store(false)
		case op == 8: // a pause shorter than the lease: it resumes in its generation
			r := s.replicas[rng.IntN(len(s.replicas))]
			r.fenced.Store(true)
			time.Sleep(time.Duration(rng.Int64N(int64(5 * time.Second))))
			r.fenced.Store(false)
		default: // a rebalance with the same members
			s.rebalance(partitions)
		}
		_ = step
	}
	// No record parks the fleet: with everyone busy, it sends, at the latest
	// once the longest pause a record can ask for has passed since the last
	// bad one (a replica whose clock was stepped by hours may agree with
	// the bad writer's clock to within minutes).
	if d := time.Until(s.lastBad.Add(15*time.Minute + 5*time.Second)); d > 0 {
		time.Sleep(d)
	}
	from := time.Now()
	for _, r := range s.replicas {
		r.busy.Store(true)
	}
	time.Sleep(30 * time.Second)
	sent := 0
	for _, r := range s.replicas {
		sent += s.count(r.name, from, time.Now())
	}
	if sent == 0 {
		t.Fatal("the fleet sent nothing in 30 s with every replica busy: parked")
	}
	arr := s.arrivals()
	if got := busiest(arr); got > budget {
		t.Fatalf("%d arrivals in one 60-second window, budget %d", got, budget)
	}
	if len(arr) == 0 {
		t.Fatal("nothing was sent")
	}
}

// stepClock steps r's wall clock: either within the protocol's Margin
// (clocks under NTP) or by hours.
func stepClock(rng *rand.Rand, r *simReplica) {
	if rng.IntN(2) == 0 {
		r.offset.Store(rng.Int64N(int64(1800*time.Millisecond)) - int64(900*time.Millisecond))
		return
	}
	h := time.Duration(10+rng.IntN(110)) * time.Minute
	if rng.IntN(2) == 0 {
		h = -h
	}
	r.offset.Store(int64(h))
}

// injectBadRecord writes a record no replica of the fleet wrote, in the
// current generation: a pause of a day from a clock an hour ahead or from
// a record 20 minutes old, loans beyond the writer's share, or loans from a
// clock an hour ahead. (Half a minute more than whole minutes: no replica's
// clock, stepped by whole minutes, agrees with the writer's.)
func (s *simFleet) injectBadRecord(rng *rand.Rand) {
	now := time.Now()
	ahead, behind := now.Add(time.Hour+30*time.Second), now.Add(-20*time.Minute-30*time.Second)
	s.mu.Lock()
	rec := ratelimit.Record{Replica: fmt.Sprint("bad-", rng.IntN(1000)), Generation: s.gen, Share: 10,
		Demand: 0, Until: now.Add(4 * time.Second).UnixMilli(), At: now.UnixMilli(), Lent: map[string]float64{}}
	for _, r := range s.replicas {
		rec.Lent[r.name] = s.budget
	}
	s.mu.Unlock()
	switch rng.IntN(4) {
	case 0:
		rec.Lent, rec.At = nil, ahead.UnixMilli()
		rec.PauseUntil = now.Add(24 * time.Hour).UnixMilli()
	case 1:
		rec.Lent, rec.At = nil, behind.UnixMilli()
		rec.PauseUntil = now.Add(24 * time.Hour).UnixMilli()
	case 2: // lends far more than its share, for an hour
		rec.Until = now.Add(time.Hour).UnixMilli()
	default: // within its share, but from a clock an hour ahead
		rec.At, rec.Until = ahead.UnixMilli(), ahead.Add(4*time.Second).UnixMilli()
		for k := range rec.Lent {
			rec.Lent[k] = rec.Share / float64(len(rec.Lent))
		}
	}
	s.board.mu.Lock()
	s.board.log = append(s.board.log, simEntry{now, rec})
	s.board.mu.Unlock()
	s.lastBad = now
}

// TestFleetPauseIsFleetWide: a pause one replica takes (a 429) reaches the
// others through the board; none of them sends before it ends.
func TestFleetPauseIsFleetWide(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSimFleet(t, 300, 3)
		defer s.close()
		a, b, c := s.start("a"), s.start("b"), s.start("c")
		for _, r := range []*simReplica{a, b, c} {
			r.busy.Store(true)
		}
		s.rebalance(6)
		time.Sleep(5 * time.Second)
		end := time.Now().Add(30 * time.Second)
		a.lim.PauseUntil(end)
		time.Sleep(3 * time.Second) // a Tick and the board's lag
		from := time.Now()
		time.Sleep(end.Sub(from))
		for _, r := range []*simReplica{a, b, c} {
			if n := s.count(r.name, from, end); n != 0 {
				t.Fatalf("%s sent %d during the fleet-wide pause", r.name, n)
			}
		}
		time.Sleep(10 * time.Second)
		if n := s.count("b", end, time.Now()); n == 0 {
			t.Fatal("b sent nothing after the pause")
		}
	})
}

// TestFleetBoardLostFallsBackToShare: with the board gone, what was lent
// and borrowed ends, and each replica is back at no more than its share.
func TestFleetBoardLostFallsBackToShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget = 300
		s, a, _ := oneBusyOfThree(t, budget, 4)
		defer s.close()
		time.Sleep(20 * time.Second)
		if r := a.lim.Rate(); r < 0.9*budget {
			t.Fatalf("the busy replica's rate is %v with the board up, want >= %v", r, 0.9*budget)
		}
		s.board.down.Store(true)
		time.Sleep(4*time.Second + time.Second + 2*time.Second) // Lease + Margin + a Tick or two
		share := ratelimit.Share(budget, 2, 6)
		if r := a.lim.Rate(); r > share {
			t.Fatalf("without the board the busy replica's rate is %v, over its share %v", r, share)
		}
		if got := busiest(s.arrivals()); got > budget {
			t.Fatalf("%d arrivals in one 60-second window, budget %d", got, budget)
		}
	})
}

// scriptBoard serves scripted peer records and keeps what is published.
type scriptBoard struct {
	mu        sync.Mutex
	peers     []ratelimit.Record
	published []ratelimit.Record
}

func (b *scriptBoard) Publish(_ context.Context, r ratelimit.Record) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.published = append(b.published, r)
	return nil
}

func (b *scriptBoard) Records() ([]ratelimit.Record, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.peers), time.Now()
}

func (b *scriptBoard) set(peers ...ratelimit.Record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range peers {
		peers[i].At = time.Now().UnixMilli()
	}
	b.peers = peers
}

// TestFleetLoansNeverExceedTheShare: when the borrower changes from one
// tick to the next, the new borrower gets only what the records still
// honoured leave: at every instant, summed over the borrowers, the most
// any honoured record lends each stays within the lender's spare, and the
// lender's own rate is its share less that.
func TestFleetLoansNeverExceedTheShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		board := &scriptBoard{}
		lim := ratelimit.NewLimiter(0)
		f := ratelimit.NewFleet(ratelimit.FleetConfig{Replica: "a", Budget: 300, Limiter: lim, Board: board})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); f.Run(ctx) }()
		share := f.Rebalance(1, 2, 6)
		peer := func(name string, demand float64) ratelimit.Record {
			return ratelimit.Record{Replica: name, Generation: 1, Share: share, Demand: demand}
		}
		for i := range 20 {
			if i%2 == 0 {
				board.set(peer("b", 300), peer("c", 1))
			} else {
				board.set(peer("b", 1), peer("c", 300))
			}
			time.Sleep(time.Second)
			synctest.Wait()
			board.mu.Lock()
			now := time.Now()
			most := map[string]float64{}
			for _, r := range board.published {
				if time.UnixMilli(r.Until).Add(time.Second).After(now) { // honoured until Until + Margin
					for p, v := range r.Lent {
						most[p] = max(most[p], v)
					}
				}
			}
			board.mu.Unlock()
			total := most["b"] + most["c"]
			if total > share {
				t.Fatalf("tick %d: honoured loans add up to %v, over the share %v (%v)", i, total, share, most)
			}
			if own := lim.RPM(); own+total > share+1e-9 {
				t.Fatalf("tick %d: own rate %v + loans %v > share %v", i, own, total, share)
			}
		}
		cancel()
		<-done
	})
}

// TestFleetIdleReplicaDoesNotStopTheFleet: a replica with no partition
// (more replicas than partitions) has a token share whose late start lasts
// years; that start is not a pause, so it reaches no other replica, and
// the busy one still gets the budget. A pause read from the board is not
// taken as the reader's own.
func TestFleetIdleReplicaDoesNotStopTheFleet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget = 300
		s := newSimFleet(t, budget, 5)
		defer s.close()
		names := []string{"a", "b", "c", "d", "e", "f", "g"}
		for _, n := range names {
			s.start(n)
		}
		s.replicas[0].busy.Store(true)
		s.rebalance(6) // g gets no partition
		time.Sleep(10 * time.Second)
		from := time.Now()
		time.Sleep(time.Minute)
		if n := s.count("a", from, time.Now()); n < 0.9*budget {
			t.Fatalf("the busy replica sent %d in a minute beside an idle one without partitions, want >= %d", n, int(0.9*budget))
		}
		// A pause published by another replica holds this one but does not
		// become its own (it would republish it; TestFleetBoardPauseBounded
		// checks the bound).
		s.replicas[6].lim.PauseUntil(time.Now().Add(24 * time.Hour))
		time.Sleep(3 * time.Second)
		if p, _ := s.replicas[0].lim.Paused(); !p.IsZero() {
			t.Fatalf("a pause read from the board became the replica's own, until %v", p)
		}
	})
}
