package ratelimit_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

// TestFleetGenerationChangeWorstCase: the window across a generation change
// where shares grow at once (issue 18 item 9, invariant 5). N replicas, one
// partition each, all busy, with aligned phases: a fleet-wide hold ends and
// each gives the permit it accrued at the same instant, at the start of the
// window. Right after, N−1 leave (fenced at once, as the group's lease
// does) and the survivor starts the next generation with every partition
// as soon as the protocol allows: its grown share fills the rest of the
// window on top of the N permits. Every permit may arrive up to ArrivalSlack late
// (adversarially), so no closed 60-second window of arrivals may hold the
// permits of a span of 60s+ArrivalSlack beyond the budget. With full
// shares (a board) and with reserves (no board: the static shares).
func TestFleetGenerationChangeWorstCase(t *testing.T) {
	for _, c := range []struct {
		replicas int
		budget   float64
		board    bool
	}{
		{20, 300, true},
		{20, 300, false},
		{50, 300, false},
		{10, 120, true},
	} {
		t.Run(fmt.Sprintf("%d-replicas-%v-board-%v", c.replicas, c.budget, c.board), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				got := runGenerationChange(t, c.replicas, c.budget, c.board)
				t.Logf("%d → 1 replicas at %v/min: busiest window of arrivals %d", c.replicas, c.budget, got)
				if float64(got) > c.budget {
					t.Errorf("%d arrivals in one closed 60-second window across the change, budget %v", got, c.budget)
				}
			})
		})
	}
}

// instantBoard shows every record to every replica at once.
type instantBoard struct {
	mu   sync.Mutex
	recs map[string]ratelimit.Record
}

func (b *instantBoard) Publish(_ context.Context, r ratelimit.Record) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.recs[r.Replica] = r
	return nil
}

func (b *instantBoard) Records() ([]ratelimit.Record, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []ratelimit.Record
	for _, r := range b.recs {
		out = append(out, r)
	}
	return out, time.Now()
}

// boardFor returns what replica self reads from b.
type boardFor struct {
	b    *instantBoard
	self string
}

func (v boardFor) Publish(ctx context.Context, r ratelimit.Record) error { return v.b.Publish(ctx, r) }

func (v boardFor) Records() ([]ratelimit.Record, time.Time) {
	recs, fresh := v.b.Records()
	return slices.DeleteFunc(recs, func(r ratelimit.Record) bool { return r.Replica == v.self }), fresh
}

// genReplica is one busy replica of runGenerationChange.
type genReplica struct {
	lim     *ratelimit.Limiter
	fleet   *ratelimit.Fleet
	fenced  atomic.Bool
	cancel  context.CancelFunc
	done    sync.WaitGroup
	mu      sync.Mutex
	permits []time.Time
}

func startGenReplica(name string, budget float64, board ratelimit.Board) *genReplica {
	r := &genReplica{lim: ratelimit.NewLimiter(budget / 1e6)}
	r.fleet = ratelimit.NewFleet(ratelimit.FleetConfig{Replica: name, Budget: budget, Limiter: r.lim,
		Board: board, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done.Add(2)
	go func() { defer r.done.Done(); r.fleet.Run(ctx) }()
	go func() {
		defer r.done.Done()
		for r.lim.Wait(ctx) == nil {
			if !r.fenced.Load() {
				r.mu.Lock()
				r.permits = append(r.permits, time.Now())
				r.mu.Unlock()
			}
		}
	}()
	return r
}

func (r *genReplica) stop() {
	r.cancel()
	r.done.Wait()
}

func (r *genReplica) last() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.permits[len(r.permits)-1]
}

// runGenerationChange runs the worst case of TestFleetGenerationChangeWorstCase
// and returns the busiest closed 60-second window of arrivals.
func runGenerationChange(t *testing.T, n int, budget float64, withBoard bool) int {
	shared := &instantBoard{recs: map[string]ratelimit.Record{}}
	var rs []*genReplica
	for i := range n {
		var board ratelimit.Board
		if withBoard {
			board = boardFor{shared, fmt.Sprint("r", i)}
		}
		rs = append(rs, startGenReplica(fmt.Sprint("r", i), budget, board))
	}
	defer func() {
		for _, r := range rs {
			r.stop()
		}
	}()
	for _, r := range rs { // at the same instant: aligned phases
		r.fleet.Rebalance(1, 1, n)
	}
	time.Sleep(3 * time.Minute) // the full shares, with a board
	rate := rs[0].lim.RPM()
	if want := ratelimit.FullShare(budget, 1, n); withBoard && rate != want {
		t.Fatalf("not at the full share: %v, want %v", rate, want)
	}
	// Align the phases: a hold read from the board (a pause of the fleet)
	// ends, and every replica gives the permit it accrued at once.
	end := time.Now().Add(5 * time.Second)
	for _, r := range rs {
		r.lim.HoldUntil(end)
	}
	time.Sleep(time.Until(end.Add(time.Millisecond)))
	for _, r := range rs {
		if !r.last().Equal(end) {
			t.Fatalf("phases not aligned: a permit at %v, the hold ended at %v", r.last(), end)
		}
		r.fenced.Store(true)
	}
	for _, r := range rs[1:] {
		r.stop()
	}
	rs[0].fleet.Rebalance(2, n, n)
	rs[0].fenced.Store(false)
	time.Sleep(2 * time.Minute)
	rs[0].stop()
	var all []time.Time
	for _, r := range rs {
		all = append(all, r.permits...)
	}
	slices.SortFunc(all, time.Time.Compare)
	return busiestAdversarial(all)
}

// busiestAdversarial returns the most arrivals a closed 60-second window
// [t, t+60s] can hold when each request arrives anywhere less than
// ArrivalSlack after its permit: the permits in a span [p, p+60s+slack).
func busiestAdversarial(permits []time.Time) int {
	most := 0
	for i, j := 0, 0; i < len(permits); i++ {
		for j < len(permits) && permits[j].Sub(permits[i]) < time.Minute+ratelimit.ArrivalSlack {
			j++
		}
		most = max(most, j-i)
	}
	return most
}

// TestFleetDebtCountsTheLastGeneration: the debt of a generation change is
// one permit (61 s/budget) for each replica that may have sent in the
// generation before, counted from the board: one that left (its record of
// that generation) and one that already published its new generation (its
// record's previous generation: a had 20 of the 30 partitions) count, so 3
// replicas over 30 partitions owe 3 permits, not 30 (nor 22). Without a board, every partition of the last
// generation that is not this replica's counts as a replica.
func TestFleetDebtCountsTheLastGeneration(t *testing.T) {
	const budget = 300.0
	debt := func(n int) time.Duration { // n permits of the budget, spread over 60s+ArrivalSlack
		return time.Duration(float64(n) * float64(time.Minute+ratelimit.ArrivalSlack) / budget)
	}
	// firstPermit rebalances r to generation 2 with 15 of 30 partitions and
	// returns how long its first permit took.
	firstPermit := func(r *genReplica) time.Duration {
		from := time.Now()
		r.fleet.Rebalance(2, 15, 30)
		r.fenced.Store(false)
		for time.Sleep(10 * time.Millisecond); r.last().Before(from); {
			time.Sleep(time.Millisecond)
		}
		return r.last().Sub(from)
	}
	late := 2 * ratelimit.Spacing(ratelimit.Share(budget, 15, 30))
	t.Run("board", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			shared := &instantBoard{recs: map[string]ratelimit.Record{}}
			var rs []*genReplica
			for _, name := range []string{"a", "b", "c"} {
				r := startGenReplica(name, budget, boardFor{shared, name})
				r.fleet.Rebalance(1, 10, 30)
				rs = append(rs, r)
			}
			time.Sleep(10 * time.Second) // generation 1 starts late too: the debt of 30 partitions
			for _, r := range rs {
				r.fenced.Store(true)
			}
			rs[2].stop() // c leaves
			firstPermit(rs[0])
			time.Sleep(2 * time.Second) // a's record is of generation 2 now
			if got, want := firstPermit(rs[1]), late+debt(3); got != want {
				t.Errorf("b's first permit of generation 2 after %v, want %v (3 replicas' debt)", got, want)
			}
			rs[0].stop()
			rs[1].stop()
		})
	})
	t.Run("no-board", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := startGenReplica("alone", budget, nil)
			defer r.stop()
			r.fleet.Rebalance(1, 10, 30)
			time.Sleep(10 * time.Second) // generation 1 starts late too: the debt of 30 partitions
			r.fenced.Store(true)
			if got, want := firstPermit(r), late+debt(21); got != want {
				t.Errorf("first permit of generation 2 without a board after %v, want %v (itself and 20 partitions)", got, want)
			}
		})
	})
}
