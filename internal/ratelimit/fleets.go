package ratelimit

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// A budget per workspace (issue 21 item 3)
//
// Each workspace has its own budget (its .rate_limit_rpm in the registry,
// default RATE_LIMIT_RPM), kept fleet-wide in every 60-second window. Fleets
// keeps one Fleet, with its own Limiter, per workspace: every guarantee of
// fleet.go (the window proof, lending, the full share, the debt of a
// generation change) holds for each workspace separately, with the
// workspace's budget in place of RATE_LIMIT_RPM, since each workspace's
// Fleet runs the same code on its own state. The generation, the
// assignment and the partition total are the replica's, the same for every
// workspace.
//
// One record per replica on the board: its generation, assignment and
// times once, and per workspace (Record.Workspaces) the share, demand,
// loans and pause of that workspace's Fleet. Each workspace's Fleet reads
// the board through a view that projects every record to that workspace
// (project), and publishes into the record this replica writes once per
// step (after every workspace's Fleet has lowered its own rate: nothing is
// lent before it is taken off). A record's lent rates hold until its Until,
// the earliest of its workspaces', and its At is the earliest of theirs.
//
// A workspace's entry is left out of the record while it has nothing to
// tell: no demand, no loan, no pause, and no peer busy in that workspace
// (an entry with demand at least its share). A missing entry reads as
// share 0 and demand 0: no spare, no need, no pause; which is what the
// entry would have told a peer that is not busy there (a spare only counts
// for a peer that needs it, and a replica at its full share is busy). So
// the record holds the active workspaces only (200 of 1,000: bench (h'')).
//
// States: a workspace's state is made when this replica first wants a
// permit for it (Limiter) or a peer is busy in it, and only for a
// workspace of the registry (BudgetOf). One that leaves the registry stops
// publishing at once and is dropped Lease + Margin later, when what it
// lent has ended (back in the registry by then, it is kept as it is: its
// loans still count). One whose budget changes is dropped the same way and
// made anew at the new budget: its share starts late (Rebalance), but a
// window across the change is bounded by neither budget alone (the API
// changes its count then too). A state made during a generation starts
// like a rebalance: two intervals late and the debt.
//
// Rolling upgrade: a record of the version before this one (no V) is one
// budget for all its replica's workspaces. It is read, for every
// workspace, as a peer that lends nothing and shows neither spare nor need
// (demand = share), whose pause holds every workspace (it paused all of
// its sends). This version's records keep, at the top, what that version
// reads: its generation and assignment (the debt), a share of
// RATE_LIMIT_RPM shown fully used (it lends to nobody and borrows from
// nobody of the old version), and the latest pause of any workspace (an
// old replica holds all its sends then, and may be sending to that
// workspace). The old version serves only workspaces whose budget is at
// least RATE_LIMIT_RPM (it refused the others), so its share is
// within each of their budgets' shares.

// quiet is the Logger of each workspace's Fleet: what it would log, Fleets
// logs once for all.
var quiet = slog.New(slog.DiscardHandler)

// RecordVersion is Record.V of the records Fleets writes.
const RecordVersion = 2

// WorkspaceEntry is one workspace's part of a replica's record.
type WorkspaceEntry struct {
	Share      float64            `json:"s"`           // its static share of the workspace's budget (rpm)
	Demand     float64            `json:"d"`           // the rate it could use now (rpm)
	Lent       map[string]float64 `json:"l,omitempty"` // rpm lent to each other replica, until the record's Until
	PauseUntil int64              `json:"p,omitempty"` // Unix ms: the workspace's window is spent until then
}

// FleetsConfig configures Fleets. Zero durations take the defaults.
type FleetsConfig struct {
	Replica string
	// Budget is RATE_LIMIT_RPM: the budget of a workspace BudgetOf does not
	// name otherwise, and the share old-version replicas read.
	Budget float64
	// BudgetOf returns a workspace's budget, and false for a workspace
	// outside the registry. nil: every workspace has Budget.
	BudgetOf func(ws string) (float64, bool)
	// Registry, when set, lists the workspaces of the registry: each gets
	// its state at every Rebalance, so that it starts with the generation
	// (a state made later starts as late as a rebalance would).
	Registry func() []string
	Board    Board // nil: no sharing, the static shares only
	Tick     time.Duration
	Lease    time.Duration
	Margin   time.Duration
	Logger   *slog.Logger
	Clock    func() time.Time
	// OnRate, when set, is called after each step of a workspace's Fleet
	// with its own rate and what it borrows.
	OnRate func(ws string, own, borrowed float64)
}

// Fleets keeps a Fleet per workspace (see above).
type Fleets struct {
	cfg    FleetsConfig
	wake   chan struct{}
	paused chan struct{} // every workspace Limiter's PauseUntil signal

	mu       sync.Mutex
	states   map[string]*wsState
	retired  []*wsState // left the registry or changed budget: dropped at gone + Lease + Margin
	joined   bool
	gen      int64
	assigned int
	total    int
	share    float64 // Share of Budget: the top of the record
	prev     Record  // the generation before: Generation, Assigned, Total

	pmu     sync.Mutex
	pending map[string]Record // what each workspace's Fleet published this step
}

type wsState struct {
	ws     string
	budget float64
	lim    *Limiter
	f      *Fleet
	gone   time.Time // when it left the registry (zero: in it)
}

// NewFleets returns Fleets.
func NewFleets(cfg FleetsConfig) *Fleets {
	boardDefaults(&cfg.Tick, &cfg.Lease, &cfg.Margin, &cfg.Logger)
	return &Fleets{cfg: cfg, wake: make(chan struct{}, 1), paused: make(chan struct{}, 1),
		states: map[string]*wsState{}}
}

// budgetOf returns ws's budget and whether it is in the registry.
func (m *Fleets) budgetOf(ws string) (float64, bool) {
	if m.cfg.BudgetOf == nil {
		return m.cfg.Budget, true
	}
	return m.cfg.BudgetOf(ws)
}

// Limiter returns the Limiter of workspace ws, making its state if needed.
// A workspace outside the registry gets a state too (a request resolved
// just before the workspace left): it is retired at once.
func (m *Fleets) Limiter(ws string) *Limiter {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stateLocked(ws, time.Now()).lim
}

// stateLocked returns ws's state, made (or brought back from retirement,
// loans and all, when it left the registry and is back at the same
// budget) as needed. Called with mu held.
func (m *Fleets) stateLocked(ws string, now time.Time) *wsState {
	budget, in := m.budgetOf(ws)
	if st, ok := m.states[ws]; ok {
		return st
	}
	for i, st := range m.retired {
		if st.ws == ws && st.budget == budget && in {
			m.retired = append(m.retired[:i], m.retired[i+1:]...)
			st.gone = time.Time{}
			m.states[ws] = st
			return st
		}
	}
	st := m.newState(ws, budget)
	if !in {
		st.gone = now
		m.retired = append(m.retired, st)
		return st
	}
	m.states[ws] = st
	return st
}

// newState makes ws's Limiter and Fleet, in the current generation if this
// replica has joined one. Called with mu held.
func (m *Fleets) newState(ws string, budget float64) *wsState {
	lim := NewLimiter(budget)
	lim.paused = m.paused
	if budget > 0 {
		lim.SetRPM(budget / 1e6) // nothing before the first Rebalance: a token rate
	}
	fc := FleetConfig{Replica: m.cfg.Replica, Budget: budget, Limiter: lim, Tick: m.cfg.Tick, Lease: m.cfg.Lease,
		Margin: m.cfg.Margin, Logger: quiet, Clock: m.cfg.Clock} // Rebalance logs an unknown total once, not once a workspace
	if m.cfg.Board != nil {
		fc.Board = wsBoard{m: m, ws: ws}
	}
	if on := m.cfg.OnRate; on != nil {
		fc.OnRate = func(own, borrowed float64) { on(ws, own, borrowed) }
	}
	st := &wsState{ws: ws, budget: budget, lim: lim, f: NewFleet(fc)}
	if m.joined {
		st.f.Rebalance(m.gen, m.assigned, m.total)
	}
	return st
}

// Rebalance starts generation gen for every workspace (Fleet.Rebalance) and
// returns the Share of Budget (for the logs and the metrics).
func (m *Fleets) Rebalance(gen int64, assigned, total int) float64 {
	m.mu.Lock()
	if m.joined {
		m.prev = Record{Generation: m.gen, Assigned: m.assigned, Total: m.total}
	}
	if m.cfg.Registry != nil {
		m.joined = false // the states made here are rebalanced below, with the others
		now := time.Now()
		for _, ws := range m.cfg.Registry() {
			if _, in := m.budgetOf(ws); in {
				m.stateLocked(ws, now)
			}
		}
	}
	m.joined, m.gen, m.assigned, m.total = true, gen, assigned, total
	m.share = Share(m.cfg.Budget, assigned, total)
	states := m.live()
	share := m.share
	m.mu.Unlock()
	for _, st := range states {
		st.f.Rebalance(gen, assigned, total)
	}
	if !(total > 0 && total >= assigned) {
		m.cfg.Logger.Warn("the partition total is unknown: in every workspace this replica keeps the share of the last known total, or the smallest, and lends nothing this generation",
			"assigned", assigned, "workspaces", len(states))
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return share
}

// Sync applies a registry change: a workspace that left it (or whose budget
// changed) is retired (see above). The app calls it from the registry's
// OnChange.
func (m *Fleets) Sync() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for ws, st := range m.states {
		if budget, in := m.budgetOf(ws); !in || budget != st.budget {
			st.gone = now
			st.lim.SetRPM(st.budget / 1e6) // a request that still holds it is not sent at the old rate
			m.retired = append(m.retired, st)
			delete(m.states, ws)
		}
	}
}

// Workspaces returns the workspaces that have a state (retired ones too).
func (m *Fleets) Workspaces() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.states)+len(m.retired))
	for ws := range m.states {
		out = append(out, ws)
	}
	for _, st := range m.retired {
		out = append(out, st.ws)
	}
	return out
}

// live returns the states in the registry. Called with mu held.
func (m *Fleets) live() []*wsState {
	out := make([]*wsState, 0, len(m.states))
	for _, st := range m.states {
		out = append(out, st)
	}
	return out
}

// Run publishes this replica's record every Tick, and at once after a
// Rebalance or a new pause of any workspace, until ctx ends. Without a
// Board it returns at once.
func (m *Fleets) Run(ctx context.Context) {
	if m.cfg.Board == nil {
		return
	}
	t := time.NewTicker(m.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.wake:
		case <-m.paused:
		}
		m.step(ctx, time.Now())
	}
}
