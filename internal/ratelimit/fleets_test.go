package ratelimit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

// A fleet of replicas serving several workspaces, each replica with its
// Fleets over one simBoard, and a sender per (replica, workspace) taking
// that workspace's permits while busy.
type wsSim struct {
	t        *testing.T
	board    *simBoard
	rng      *rand.Rand
	budget   float64 // RATE_LIMIT_RPM
	mu       sync.Mutex
	budgets  map[string]float64 // the registry
	permits  map[string][]time.Time
	replicas []*wsReplica
	gen      int64
}

type wsReplica struct {
	name   string
	fleets *ratelimit.Fleets
	busy   map[string]*atomic.Bool
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func newWSSim(t *testing.T, budget float64, budgets map[string]float64, seed uint64) *wsSim {
	return &wsSim{t: t, board: &simBoard{}, rng: rand.New(rand.NewPCG(seed, 3)), budget: budget,
		budgets: budgets, permits: map[string][]time.Time{}}
}

func (s *wsSim) budgetOf(ws string) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.budgets[ws]
	return b, ok
}

// start runs a replica busy in every workspace of the registry.
func (s *wsSim) start(name string) *wsReplica {
	r := &wsReplica{name: name, busy: map[string]*atomic.Bool{}}
	view := &boardView{b: s.board, self: name, rng: rand.New(rand.NewPCG(s.rng.Uint64(), 1)), maxLag: 800 * time.Millisecond}
	r.fleets = ratelimit.NewFleets(ratelimit.FleetsConfig{Replica: name, Budget: s.budget, BudgetOf: s.budgetOf,
		Board: view, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done.Go(func() { r.fleets.Run(ctx) })
	s.mu.Lock()
	for ws := range s.budgets {
		b := &atomic.Bool{}
		b.Store(true)
		r.busy[ws] = b
		r.done.Go(func() { s.send(ctx, r, ws, b) })
	}
	s.replicas = append(s.replicas, r)
	s.mu.Unlock()
	return r
}

// send takes ws's permits on r while b says it is busy.
func (s *wsSim) send(ctx context.Context, r *wsReplica, ws string, b *atomic.Bool) {
	for ctx.Err() == nil {
		if !b.Load() {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if r.fleets.Limiter(ws).Wait(ctx) != nil {
			return
		}
		s.mu.Lock()
		s.permits[ws] = append(s.permits[ws], time.Now())
		s.mu.Unlock()
	}
}

// rebalance starts the next generation over partitions, spread evenly.
func (s *wsSim) rebalance(partitions int) {
	s.gen++
	for i, r := range s.replicas {
		r.fleets.Rebalance(s.gen, assigned(i, len(s.replicas), partitions), partitions)
	}
}

func (s *wsSim) close() {
	for _, r := range s.replicas {
		r.cancel()
		r.done.Wait()
	}
}

// arrivals returns ws's permits as arrivals (see simFleet.arrivals).
func (s *wsSim) arrivals(ws string) []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Duration
	ps := s.permits[ws]
	for _, p := range ps {
		d := time.Duration(s.rng.Int64N(int64(ratelimit.ArrivalSlack)))
		if s.rng.IntN(2) == 0 {
			d = time.Duration(s.rng.IntN(2)) * (ratelimit.ArrivalSlack - 1)
		}
		out = append(out, p.Sub(ps[0])+d)
	}
	slices.Sort(out)
	return out
}

func (s *wsSim) count(ws string, from, to time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.permits[ws] {
		if !p.Before(from) && p.Before(to) {
			n++
		}
	}
	return n
}

// TestFleetsBudgetPerWorkspace: two workspaces with budgets 60 and 300
// (RATE_LIMIT_RPM 300), 1 and 3 replicas, all busy, then one replica idle
// in one workspace for a while (it lends there) and a rebalance: each
// workspace's arrivals stay within its own budget in every closed
// 60-second window, and once settled each sends at least 90% of its budget
// a minute.
func TestFleetsBudgetPerWorkspace(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		for seed := range uint64(2) {
			t.Run(fmt.Sprintf("%d-replicas-seed-%d", replicas, seed), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) { runBudgetPerWorkspace(t, replicas, seed) })
			})
		}
	}
}

func runBudgetPerWorkspace(t *testing.T, replicas int, seed uint64) {
	budgets := map[string]float64{"A": 60, "B": 300}
	s := newWSSim(t, 300, budgets, seed)
	defer s.close()
	for i := range replicas {
		s.start(fmt.Sprint("r", i))
	}
	s.rebalance(6)
	time.Sleep(40 * time.Second)
	idle := s.replicas[len(s.replicas)-1]
	idle.busy["B"].Store(false) // it lends its share of B to the others
	time.Sleep(50 * time.Second)
	idle.busy["B"].Store(true)
	time.Sleep(20 * time.Second)
	s.rebalance(6)
	time.Sleep(2 * time.Minute)
	from := time.Now()
	time.Sleep(3 * time.Minute)
	for ws, budget := range budgets {
		perMin := float64(s.count(ws, from, time.Now())) / 3
		got := busiestClosed(s.arrivals(ws))
		t.Logf("%s (budget %v): %.1f a minute (%.3f), busiest closed 60-second window %d", ws, budget, perMin, perMin/budget, got)
		if float64(got) > budget {
			t.Errorf("workspace %s: %d arrivals in one closed 60-second window, its budget %v", ws, got, budget)
		}
		if perMin < 0.9*budget {
			t.Errorf("workspace %s: %.1f a minute, want >= 0.9 of its budget %v", ws, perMin, budget)
		}
	}
}

// TestFleetsPauseOneWorkspaceOnly: a 429 for A (its Limiter paused) holds
// A on every replica (the pause goes over the board) and does not slow B.
func TestFleetsPauseOneWorkspaceOnly(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d-replicas", replicas), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newWSSim(t, 300, map[string]float64{"A": 300, "B": 300}, 1)
				defer s.close()
				for i := range replicas {
					s.start(fmt.Sprint("r", i))
				}
				s.rebalance(6)
				time.Sleep(2 * time.Minute)
				before := s.count("B", time.Now().Add(-30*time.Second), time.Now())
				s.replicas[0].fleets.Limiter("A").PauseUntil(time.Now().Add(30 * time.Second))
				time.Sleep(2 * time.Second) // the board carries the pause to the others
				from := time.Now()
				time.Sleep(28 * time.Second)
				a, b := s.count("A", from, time.Now()), s.count("B", from, time.Now())
				t.Logf("in the 28 s of A's pause: A %d, B %d (B in the 30 s before: %d)", a, b, before)
				if a != 0 {
					t.Errorf("A got %d permits while paused", a)
				}
				if float64(b) < 0.9*float64(before)*28/30 {
					t.Errorf("B got %d permits during A's pause, %d in the 30 s before: slowed", b, before)
				}
			})
		})
	}
}

// TestFleetsWorkspaceRemovedReleasesItsState: a workspace that leaves the
// registry stops being published and its state is dropped once its loans
// have ended (Lease + Margin); one back in the registry in time keeps it.
func TestFleetsWorkspaceRemovedReleasesItsState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newWSSim(t, 300, map[string]float64{"A": 60, "B": 300, "C": 120}, 1)
		defer s.close()
		r0, _ := s.start("r0"), s.start("r1")
		s.rebalance(4)
		time.Sleep(10 * time.Second)
		if got := sortedWS(r0.fleets); !slices.Equal(got, []string{"A", "B", "C"}) {
			t.Fatalf("states %v, want A B C", got)
		}
		s.mu.Lock()
		delete(s.budgets, "C")
		s.mu.Unlock()
		r0.busy["C"].Store(false)
		r0.fleets.Sync()
		time.Sleep(6 * time.Second) // Lease + Margin, and a Tick
		if got := sortedWS(r0.fleets); !slices.Equal(got, []string{"A", "B"}) {
			t.Errorf("states %v after C left the registry, want A B", got)
		}
		recs, _ := (&boardView{b: s.board, self: "r1", rng: rand.New(rand.NewPCG(1, 1))}).Records()
		for _, r := range recs {
			if _, ok := r.Workspaces["C"]; ok && r.Replica == "r0" {
				t.Errorf("r0 still publishes C: %+v", r.Workspaces)
			}
		}
	})
}

func sortedWS(m *ratelimit.Fleets) []string {
	ws := m.Workspaces()
	slices.Sort(ws)
	return ws
}

// TestFleetsRollingUpgrade: beside a replica of the version before (a
// record with no V: one budget for all its workspaces), a replica of this
// one takes nothing from its loans, holds every workspace on its pause,
// and publishes at the top of its record what the old version reads: its
// share fully used (no spare, no need), no loans, and its workspaces'
// latest pause.
func TestFleetsRollingUpgrade(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &scriptBoard{}
		m := ratelimit.NewFleets(ratelimit.FleetsConfig{Replica: "new", Budget: 300, Board: b,
			Logger: slog.New(slog.DiscardHandler)})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go m.Run(ctx)
		la, lb := m.Limiter("A"), m.Limiter("B")
		m.Rebalance(1, 1, 2)
		time.Sleep(10 * time.Second)
		old := ratelimit.Record{Replica: "old", Generation: 1, Share: 146.5, Demand: 0, Assigned: 1, Total: 2,
			Lent: map[string]float64{"new": 140}, Until: time.Now().Add(4 * time.Second).UnixMilli()}
		b.set(old)
		time.Sleep(3 * time.Second)
		if r := la.Rate(); r > 147 {
			t.Errorf("A's rate %.1f: a loan of the old version was taken", r)
		}
		la.PauseUntil(time.Now().Add(20 * time.Second))
		time.Sleep(2 * time.Second)
		b.mu.Lock()
		last := b.published[len(b.published)-1]
		b.mu.Unlock()
		if last.V != ratelimit.RecordVersion || last.Demand != last.Share || len(last.Lent) > 0 || last.PauseUntil == 0 {
			t.Errorf("the top of the record as the old version reads it: %+v", last)
		}
		old.PauseUntil = time.Now().Add(30 * time.Second).UnixMilli()
		b.set(old)
		time.Sleep(2 * time.Second)
		start := time.Now()
		if err := lb.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 25*time.Second {
			t.Errorf("B waited %v: the old version's pause must hold every workspace", d)
		}
	})
}

// TestFleetsRecordHoldsTheActiveWorkspaces: with 1,000 workspaces in the
// registry and 200 busy, a replica's record has an entry for the 200 only,
// and stays small (bench (h″); the board reads messages of up to 1 MiB).
func TestFleetsRecordHoldsTheActiveWorkspaces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := make([]string, 1000)
		for i := range ids {
			ids[i] = fmt.Sprintf("WS%022d", i) // 24 characters, like a MoEngage ID
		}
		b := &scriptBoard{}
		m := ratelimit.NewFleets(ratelimit.FleetsConfig{Replica: "host-1-0123456789abcdef", Budget: 300, Board: b,
			Registry: func() []string { return ids }, Logger: slog.New(slog.DiscardHandler)})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		wg.Go(func() { m.Run(ctx) })
		m.Rebalance(1, 2, 6)
		for _, ws := range ids[:200] {
			wg.Go(func() {
				for m.Limiter(ws).Wait(ctx) == nil {
				}
			})
		}
		time.Sleep(30 * time.Second)
		b.mu.Lock()
		last := b.published[len(b.published)-1]
		b.mu.Unlock()
		raw, err := json.Marshal(last)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d states, %d entries, %d bytes", len(m.Workspaces()), len(last.Workspaces), len(raw))
		if len(last.Workspaces) != 200 || len(raw) > 32<<10 {
			t.Errorf("the record has %d entries in %d bytes, want the 200 busy workspaces in at most 32 KiB", len(last.Workspaces), len(raw))
		}
	})
}
