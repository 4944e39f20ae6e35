package ratelimit

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Sharing the budget by demand
//
// Every replica owns its Share of RATE_LIMIT_RPM for the consumer-group
// generation it is in (partitions assigned ÷ all partitions; see Share). That
// part is static: it needs nothing but the assignment, and it is what a
// replica falls back to when it can see no other replica. On top of it,
// replicas lend the part of their share they do not use to the replicas
// that want more, over a Board (a small compacted Kafka topic, one record
// per replica):
//
//   - Every Tick, each replica publishes a Record: its generation, share and
//     demand (the rate it could use: everything, when its sends wait for
//     permits and it uses what it has; else what it used lately, with some
//     room), and the rates it lends to others, valid until Until (now +
//     Lease).
//   - A lender splits its spare (share − its own demand) among the replicas
//     of its generation that want more than their share, in proportion to
//     what they want beyond it, and so that, with every lender doing the
//     same from its own view, the needs are met as far as the spares go.
//   - A lender lowers its own rate by what it lends BEFORE it publishes, and
//     keeps it lowered for every record it published until that record's
//     Until + Margin (on its monotonic clock: Lease + Margin after it made
//     the record, so a step of its wall clock changes nothing), even if a
//     later record lends less (a borrower may not have seen the later one):
//     by the most any such record lends to each borrower, summed over the
//     borrowers. A borrower adds a lent rate only from a sound record of its
//     own generation (written no more than Margin ahead of its clock, and
//     not one that was when first read; lending in all no more than the
//     record's share, itself no more than the budget), and only until
//     min(Until, At + Lease) − Margin by its own clock, converted to its
//     monotonic clock when read; its Limiter ends the rate on its own then
//     (Lend), even if the replica was paused and nothing ran.
//   - A share must be verified to be lent: a replica that could not read
//     the partition total at a rebalance (total 0) takes the share of the
//     last total it was given, else Share's token rate, lends nothing for
//     the whole generation, and publishes its share as its demand (no
//     spare for the others to count, no need to lend to). The last total is the
//     group's unless partitions were added meanwhile; the consumer ends a
//     generation whose counts it could not read once it can read them.
//
// The reserve: each share is x − 1, x = RATE_LIMIT_RPM × assigned/total ×
// 60/61 (Share); the 1, its Reserve, pays for the permit its Limiter may
// hold at the start of a window (below). A replica that has lent its whole
// share (its own rate at most lowRate, nothing borrowed) drains its Limiter
// at every step (Drain: it holds no permit, and accrues at most a hundredth
// of one a minute between steps), and once it has stayed so for
// reserveAfter (61 s), with nothing to send, it lends its reserve too; as
// long as a loan it honours lends part of its reserve, it borrows nothing,
// so it stays drained at lowRate. So with one replica busy the fleet sends at x
// summed over the replicas, less one: 0.98 of the budget whatever the
// number of replicas.
//
// The full share (fleet_full.go): a replica needs its reserve only while
// it lends or borrows. One that has lent and borrowed nothing for
// reserveAfter (nor been rebalanced), uses its share, lends no part of its
// reserve and sees no peer with a spare of a request a minute or more runs
// at its FullShare, k × 60/61 with k = floor(RATE_LIMIT_RPM ×
// assigned/total), a whole number of requests per 61 s, and lends and
// borrows nothing; it leaves it at once when it would lend (its demand
// falls under its share) or a peer shows a spare, and then lends and
// borrows nothing for reserveAfter. So with every replica busy the fleet
// sends at Σk × 60/61: 0.98 of the budget when the partitions divide it
// (20 replicas at 300/min: 295/min, not 275), less the fractions of the k
// otherwise. A replica whose share is not verified never runs at full.
//
// Why the fleet stays within the budget (within a generation; changes of
// generation are the next paragraph): every rate a borrower adds was
// published by a lender who had already taken it off its own rate, and the
// lender takes it back only after the borrower stopped using it: the
// borrower stops at Until − Margin by its clock, the lender resumes at
// Until + Margin by its own, so with clocks less than 2·Margin apart the
// lent rate is counted once. So at every instant the rates of a generation
// add up to at most the sum of the x, less 1 for each replica that keeps
// its reserve (plus the token floor, Budget/1e6, of each replica that lent
// everything). The Limiter accrues permits like a one-token bucket: over a
// span from s, a replica's permits are at most τ(s), the token it held at
// s (at most 1), plus the integral of its rate (in permits). A request
// arrives less than ArrivalSlack after its permit, so a 60-second window of
// arrivals holds the permits of a span shorter than 61 seconds. Let K be
// the replicas whose τ(s) may exceed a hundredth; each keeps its reserve
// during the whole span (it lends it only after 61 s drained at lowRate,
// which it was not at s, and stays drained while it is lent), so the rates
// add up to at most Σx − |K| (+ the floors) all through it, and the window
// holds fewer than |K| + 0.01·replicas + (61/60)·(Σx − |K| + replicas·
// Budget/1e6) ≤ RATE_LIMIT_RPM − |K|/60 + 0.02·replicas arrivals (Σx ≤
// RATE_LIMIT_RPM·60/61; a budget up to 9,000/min): with fewer than 50
// replicas, less than RATE_LIMIT_RPM + 1, so at most RATE_LIMIT_RPM.
//
// With full shares, the same window is bounded replica by replica. The
// Limiter gives its permits so that between two consecutive ones its rate's
// integral is at least one permit, whatever the changes (Limiter;
// TestLimiterPermitsWithinTheRateIntegral): n permits in a span W shorter
// than 61 s (the permits of a window of arrivals, counted closed or
// half-open) number fewer than I + 1, I the integral of the rate over W
// (the rate, at least the floor, is positive on the part of W before the
// first). Let q = RATE_LIMIT_RPM × assigned/total (Σq = RATE_LIMIT_RPM),
// so x = q·60/61 and k = floor(q), and count rates per 61 s. (a) A replica
// that neither lends nor borrows at any instant of W runs at most at k
// (full) or at q − 61/60 (its share) all through it, so I < k and it gives
// at most k ≤ q permits in W (a share under two requests a minute, x/2,
// no reserve: up to one more, as before). (b) One that lends or borrows at some instant
// of W ran at full at no instant of W: it may lend or borrow only
// reserveAfter (61 s) after it last ran at full, and run at full only
// reserveAfter after its last loan ended. So the others, the set O, are the
// replicas of today's argument, the loans are among them, and each either
// keeps its reserve all through W (fewer than I + 1 permits, and its rate
// is at most its share plus what it borrows less what it lends) or was
// drained at W's start (at most τ + I, τ ≤ 0.01): O's permits number fewer
// than Σ_O q − |kept|/60 + 0.01·|O| + floors. Together: fewer than
// RATE_LIMIT_RPM + 1 with fewer than 50 replicas, so at most
// RATE_LIMIT_RPM. TestFleetAllBusy checks it, and its use, with every
// replica busy through rebalances, idle spells and a disappearance;
// TestFleetFullShareRules checks the two reserveAfter rules.
//
// Generations do not overlap: a replica sends only under a lease proven by
// the group (package lease), which ends before the group can form the next
// generation, and every replica starts a new generation at its new share,
// two intervals late and later still by the debt below, with nothing lent
// or borrowed (Rebalance), and at its full share reserveAfter later at the
// earliest. A record of another generation is never used for loans. A
// window across the change holds permits of the old generation, then of
// the new one. Every replica that may have sent in the old generation may
// have given one permit beyond its old rate's integral there (the token it
// held, or the fencepost), and nothing after pays for it when it left or
// its new share starts after the window: the old part may be one instant
// (a fleet-wide hold ends, N replicas with aligned phases each give the
// permit they accrued, then N−1 leave) and the survivor's grown share
// fills the rest of the window: 317 of 300 for 20 → 1 replicas at 300/min,
// with full shares or reserves alike, 347 for 50 → 1
// (TestFleetGenerationChangeWorstCase without the debt; the estimates this
// paragraph once gave, 303 and 318, missed that case). A replica of the new
// generation gives fewer permits than its new rate's integral from when
// the debt ends (its two late intervals pay its own fencepost), or none.
// The debt (fleet_debt.go): each replica's new share starts D × 61 s /
// RATE_LIMIT_RPM later still, D an upper bound on the replicas that may
// have sent in the previous generation (those with partitions, from the
// board's records of that generation, plus one for each of its partitions
// no record accounts for; without a board, about the partition total).
// Nobody sends from the old leases' end until the group formed the new
// generation and that time passed, and the rates of either generation add
// up to at most RATE_LIMIT_RPM per 61 s (the x, lent rates counted once,
// or the full shares' k), so the permits of a span W shorter than 61 s
// number fewer than RATE_LIMIT_RPM/61 s × (W − D × 61 s/RATE_LIMIT_RPM) +
// D < RATE_LIMIT_RPM. The cost is 61 s/RATE_LIMIT_RPM a replica of the old
// generation: 0.2 s at 300/min (0.6 s for bench (g)'s 3 replicas, 4 s for
// 20), once at each change; a fleet's first generation, with no record on
// the board, pays for its partition total. D is an upper bound only while
// a partition total is known: partitions added while no replica could read
// the total would be missed (the records of the old generation carry
// theirs, and partitions are never removed from a topic).
//
// When views disagree: a borrower that sees a grant late only sends less; a
// lender that sees a demand late only lends later; clocks more than
// 2·Margin apart could count a lent rate twice for the difference, which is
// why Margin is generous (a record from a clock more than Margin ahead of
// the reader's is refused, so a clock stepped by minutes or hours lends
// nothing: its records are from the future or already over). A replica
// that cannot read the board sees no need and lends nothing new; one whose
// last record could not be written lends nothing new until one is; what it
// lent or borrowed ends within Lease + Margin: it is back at no more than
// its share. A replica that dies or is paused stops renewing its grants,
// which end within Lease; its share comes back to the others at the next
// rebalance (the group's session timeout).
//
// Pauses: when the API says the window is spent (a 429, or
// x-ratelimit-remaining: 0), the replica that was told pauses its Limiter
// (PauseUntil) and publishes the pause with its next record, at once;
// every replica of the generation that reads it holds its Limiter
// (HoldUntil) until the same time, but no longer than the record's At +
// maxPause, and not at all for a record written more than Margin ahead of
// its clock or more than maxPause ago. A hold is never republished and
// never wakes the loop (only the API's pauses do). So no record parks the
// fleet for longer than maxPause after it was written, a dead replica's
// record stops counting at the next generation, and reading records never
// makes a replica publish more than once a Tick.

// maxPause bounds a pause read from the board (the sink bounds the delays
// servers ask for the same way).
const maxPause = 15 * time.Minute

// reserveAfter is how long a replica's rate must have been at most lowRate,
// drained, before it lends its Reserve: no span of permits that a window
// of arrivals covers (60s + ArrivalSlack) then holds both a permit it had
// accrued and the reserve in a borrower's hands.
const reserveAfter = time.Minute + ArrivalSlack

// lowRate is the own rate (per minute) at or under which a replica that
// borrows nothing counts as having lent its whole share: a minute at it
// accrues a hundredth of a permit.
const lowRate = 0.01

// idleUsage is the smoothed rate (per minute) under which a replica's
// demand is 0: it has sent nothing for several Ticks.
const idleUsage = 0.01

// Record is what a replica publishes on the board.
type Record struct {
	Replica    string             `json:"replica"`
	Generation int64              `json:"generation"`
	Share      float64            `json:"share"`                    // its static share (rpm)
	Demand     float64            `json:"demand"`                   // the rate it could use now (rpm)
	Lent       map[string]float64 `json:"lent,omitempty"`           // rpm lent to each other replica, until Until
	Until      int64              `json:"until_ms"`                 // Unix ms: the lent rates end then
	PauseUntil int64              `json:"pause_until_ms,omitempty"` // Unix ms: the API's window is spent until then
	At         int64              `json:"at_ms"`                    // Unix ms: when it was published
	// The assignment of its generation and of the one before it, for the
	// debt of a generation change (fleet_debt.go). Total is 0 when unknown.
	Assigned       int   `json:"assigned,omitempty"`
	Total          int   `json:"total,omitempty"`
	PrevGeneration int64 `json:"prev_generation,omitempty"`
	PrevAssigned   int   `json:"prev_assigned,omitempty"`
	PrevTotal      int   `json:"prev_total,omitempty"`
	// V is RecordVersion for a record of Fleets (a budget per workspace,
	// fleets.go), 0 for one of the version before. Workspaces holds its
	// entries; the fields above are then the replica's and what a replica
	// of the version before reads.
	V          int                       `json:"v,omitempty"`
	Workspaces map[string]WorkspaceEntry `json:"ws,omitempty"`
}

// Board is what the replicas coordinate over.
type Board interface {
	// Publish writes this replica's record and returns once the board
	// holds it, or an error.
	Publish(ctx context.Context, r Record) error
	// Records returns the latest record of every other replica read so
	// far, and when the board was last read up to its end (zero: never).
	Records() (recs []Record, fresh time.Time)
}

// FleetConfig configures a Fleet. Zero durations take the defaults.
type FleetConfig struct {
	Replica string        // this replica's name on the board; required
	Budget  float64       // RATE_LIMIT_RPM, for the whole fleet
	Limiter *Limiter      // this replica's; required
	Board   Board         // nil: no sharing, the static share only
	Tick    time.Duration // between records; default 1s
	Lease   time.Duration // how long a record's lent rates hold; default 4s
	Margin  time.Duration // clock difference tolerated (see above); default 1s
	Logger  *slog.Logger
	// Clock, when set, is the wall clock that records' times (At, Until,
	// PauseUntil) are read and written in (tests step it); default
	// time.Now. Everything this replica keeps (commitments, grants, holds)
	// is on the monotonic clock.
	Clock func() time.Time
	// OnRate, when set, is called after each step with this replica's
	// own rate and the rate it borrows (for the metrics).
	OnRate func(own, borrowed float64)
}

// Fleet shares the budget by demand among the replicas (see the top of
// this file). Rebalance is called at every assignment; Run publishes and
// reads the board until ctx ends.
type Fleet struct {
	cfg  FleetConfig
	wake chan struct{}

	mu         sync.Mutex
	gen        int64
	share      float64
	verified   bool             // the share comes from this generation's partition total
	assigned   int              // partitions of this generation
	total      int              // the partition total of this generation (0: unknown)
	prev       Record           // the generation before (Generation, Assigned, Total): for the debt
	lastTotal  int              // the last partition total this replica was given (0: none)
	ahead      map[string]int64 // per replica, the At of its latest record that came from the future
	unwritten  bool             // the last Publish failed: lend nothing new until one succeeds
	lowSince   time.Time        // since when its rate is at most lowRate, drained (zero: it is not)
	reserveOut bool             // a loan still honoured lends part of its reserve
	full       float64          // FullShare of this generation (0: none, or not verified)
	isFull     bool             // it runs at full (fleet_full.go)
	fullUntil  time.Time        // when it last ran at full (zero: never)
	involved   time.Time        // until when a loan it gave or took is in force (zero: never)
	joined     bool
	committed  []commitment // what this replica lent, and until when it honours it
	granted    uint64       // Limiter permits at the last step
	last       time.Time    // the last step
	usage      float64      // permits per minute lately (smoothed)
}

type commitment struct {
	lent  map[string]float64 // what one record lent each borrower
	until time.Time          // the lender honours it until this (Until + Margin), monotonic
}

// boardDefaults fills the board timing and the logger a Fleet and Fleets
// share: a record every second, honoured for 4 s, with a second's margin.
func boardDefaults(tick, lease, margin *time.Duration, log **slog.Logger) {
	if *tick <= 0 {
		*tick = time.Second
	}
	if *lease <= 0 {
		*lease = 4 * time.Second
	}
	if *margin <= 0 {
		*margin = time.Second
	}
	if *log == nil {
		*log = slog.Default()
	}
}

// NewFleet returns a Fleet.
func NewFleet(cfg FleetConfig) *Fleet {
	boardDefaults(&cfg.Tick, &cfg.Lease, &cfg.Margin, &cfg.Logger)
	return &Fleet{cfg: cfg, wake: make(chan struct{}, 1)}
}

// Rebalance starts generation gen with assigned of total partitions: this
// replica's rate becomes its Share, two intervals late (Limiter.Rebalance),
// with nothing lent or borrowed. It returns the share.
//
// total <= 0 (or below assigned) means the total is unknown (the partition
// counts could not be read): the share is then computed from the last total
// this replica was given, else it is the token rate of Share, and in either
// case it is not verified: the replica lends nothing from it for the whole
// generation and publishes it as fully used.
func (f *Fleet) Rebalance(gen int64, assigned, total int) float64 {
	var recs []Record
	if f.cfg.Board != nil {
		recs, _ = f.cfg.Board.Records()
	}
	f.mu.Lock()
	verified := total > 0 && total >= assigned
	known := 0 // the verified total
	if verified {
		known = total
	}
	debt := f.debtFor(recs, gen, known)
	if f.joined {
		f.prev = Record{Generation: f.gen, Assigned: f.assigned, Total: f.total}
	}
	f.assigned, f.total = assigned, known
	switch {
	case verified:
		f.lastTotal = total
	case f.lastTotal > 0 && f.lastTotal >= assigned:
		total = f.lastTotal
	default:
		total = 0 // Share's token rate
	}
	f.cfg.Limiter.Lend(nil)
	rpm := f.cfg.Limiter.Rebalance(f.cfg.Budget, assigned, total)
	if rpm > 0 {
		f.cfg.Limiter.delayStart(debt)
	}
	f.gen, f.share, f.verified, f.joined, f.committed, f.lowSince, f.reserveOut = gen, rpm, verified, true, nil, time.Time{}, false
	f.rebalanceFull(verified, assigned, total)
	f.mu.Unlock()
	if !verified {
		f.cfg.Logger.Warn("the partition total is unknown: this replica keeps the share of the last known total, or the smallest, and lends nothing this generation",
			"requests_per_minute", rpm, "assigned", assigned, "last_known_total", total)
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
	return rpm
}

// Run publishes this replica's record every Tick, and at once after a
// Rebalance or a new pause, until ctx ends. Without a Board it returns at
// once.
func (f *Fleet) Run(ctx context.Context) {
	if f.cfg.Board == nil {
		return
	}
	_, paused := f.cfg.Limiter.Paused()
	t := time.NewTicker(f.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.wake:
		case <-paused:
		}
		f.step(ctx, time.Now())
	}
}

// wall is the wall clock for records' times at now.
func (f *Fleet) wall(now time.Time) time.Time {
	if f.cfg.Clock != nil {
		return f.cfg.Clock()
	}
	return now
}

// step reads the board, decides what to lend, sets the Limiter and
// publishes the record.
func (f *Fleet) step(ctx context.Context, now time.Time) {
	recs, fresh := f.cfg.Board.Records()
	lim := f.cfg.Limiter
	wall := f.wall(now)
	f.mu.Lock()
	if !f.joined || !(f.share > 0) {
		f.mu.Unlock()
		return
	}
	f.holdPauses(recs, now, wall)
	demand := f.demand(now)
	peers := f.peers(recs, fresh, now, wall)
	grants, borrowed := f.grants(peers, now, wall)
	full, loans := f.fullState(now, demand, peers)
	if !loans {
		grants, borrowed = nil, 0
	}
	lend, demand, reserve := f.lending(demand, len(grants) > 0, loans, peers, now)
	// Honoured on the monotonic clock until at least Until + Margin.
	lent, own := f.commit(lend, f.share-min(f.share, demand)+reserve, now.Add(f.cfg.Lease+f.cfg.Margin), now)
	if full {
		own = f.full
	}
	f.involve(lent, grants, now.Add(f.cfg.Lease+f.cfg.Margin))
	until := wall.Add(f.cfg.Lease).Truncate(time.Millisecond)
	rec := Record{Replica: f.cfg.Replica, Generation: f.gen, Share: f.share, Demand: demand,
		Lent: lent, Until: until.UnixMilli(), At: wall.UnixMilli(), Assigned: f.assigned, Total: f.total,
		PrevGeneration: f.prev.Generation, PrevAssigned: f.prev.Assigned, PrevTotal: f.prev.Total}
	if f.reserveOut {
		grants, borrowed = nil, 0 // until no borrower holds its reserve: it sends nothing
	}
	if own > lowRate || len(grants) > 0 {
		f.lowSince = time.Time{}
	} else {
		lim.Drain() // at every step, before the rate falls: it holds no permit
		if f.lowSince.IsZero() {
			f.lowSince = now
		}
	}
	// Lower our own rate before anyone can read what we lend.
	lim.SetRPM(own)
	lim.Lend(grants)
	f.mu.Unlock()
	// Only the API's pauses (PauseUntil), never the holds read from the board.
	if p, _ := lim.Paused(); p.After(now) {
		rec.PauseUntil = wall.Add(p.Sub(now) + time.Millisecond - 1).UnixMilli() // rounded up: nobody resumes early
	}
	if f.cfg.OnRate != nil {
		f.cfg.OnRate(own, borrowed)
	}
	f.publish(ctx, rec)
}

// publish writes rec to the board; until a record is written, nothing new
// is lent (unwritten).
func (f *Fleet) publish(ctx context.Context, rec Record) {
	pctx, cancel := context.WithTimeout(ctx, f.cfg.Tick)
	defer cancel()
	err := f.cfg.Board.Publish(pctx, rec)
	f.mu.Lock()
	f.unwritten = err != nil
	f.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		// What was lent stays committed until it ends: the record may have
		// been written. Nothing new is lent until a record is.
		f.cfg.Logger.Debug("budget board: publish failed", "err", err)
	}
}
