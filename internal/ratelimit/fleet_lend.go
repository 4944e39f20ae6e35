package ratelimit

import (
	"math"
	"time"
)

// Lending: what this replica could use (demand), what it lends out of its
// spare (Allocate) and what it keeps committed until its records end
// (commit). The rules, and why they keep the fleet within the budget, are at
// the top of fleet.go.

// lending returns what this step lends (nil: nothing), the demand to
// publish, and the part of the reserve it may lend (what it lends comes out
// of its share and that). A replica drained at lowRate for reserveAfter
// holds no permit, and may lend its reserve too; one whose share is not
// verified lends nothing and shows no spare and no need; one that may not
// lend or borrow now (loans false, fleet_full.go) shows its spare but no
// need. Called with mu held.
func (f *Fleet) lending(demand float64, borrows, loans bool, peers []Record, now time.Time) (map[string]float64, float64, float64) {
	var lend map[string]float64
	reserve := 0.0
	if demand == 0 && !borrows && !f.lowSince.IsZero() && now.Sub(f.lowSince) >= reserveAfter {
		reserve = Reserve(f.share) // drained at lowRate for reserveAfter: it holds no permit
	}
	switch {
	case !f.verified:
		demand = f.share // no spare for the others to count, no need (a token share cannot use loans)
	case !loans:
		demand = min(demand, f.share) // it borrows nothing now: no need to lend to (its spare shows)
	case !f.unwritten:
		lend = Allocate(f.share+reserve, demand, peers)
	}
	return lend, demand, reserve
}

// commit records the loans of a new record, honoured until until, and
// returns them and this replica's own rate: its share less, for each
// borrower, the most any record still honoured lends it. A borrower uses one
// record of ours at a time, but not necessarily the latest (each borrower
// may hold another one), so the largest loans of different records add up;
// the new record may raise a loan above what is honoured already only as
// far as spare (what we do not use ourselves) allows, so that the sum never
// exceeds the share. Called with mu held.
func (f *Fleet) commit(lent map[string]float64, spare float64, until, now time.Time) (map[string]float64, float64) {
	kept := f.committed[:0]
	most := map[string]float64{}
	for _, c := range f.committed {
		if c.until.After(now) {
			kept = append(kept, c)
			for p, v := range c.lent {
				most[p] = max(most[p], v)
			}
		}
	}
	f.committed = kept
	raise, room := 0.0, max(0, spare-sum(most))
	for p, v := range lent {
		raise += max(0, v-most[p])
	}
	if raise > room {
		scaled := make(map[string]float64, len(lent))
		for p, v := range lent {
			if v > most[p] {
				v = most[p] + math.Floor((v-most[p])*room/raise*1000)/1000
			}
			if v > 0 {
				scaled[p] = v
			}
		}
		lent = scaled
	}
	f.committed = append(f.committed, commitment{lent: lent, until: until})
	for p, v := range lent {
		most[p] = max(most[p], v)
	}
	f.reserveOut = sum(most) > f.share
	return lent, max(f.share-sum(most), f.floor())
}

// floor is the least own rate: a token rate (0 would be unlimited), where a
// replica that lent its whole share stays.
func (f *Fleet) floor() float64 {
	return f.cfg.Budget / 1e6
}

// demand estimates the rate this replica could use now: the whole budget
// when its sends wait for permits (one is asleep in Limiter.Wait now, or
// one slept since the last step: it uses all its rate gives and would use
// more), 0 when it has sent nothing lately, else what it used lately with
// room to grow. (The usage is an estimate smoothed over Ticks: a replica
// whose permits are several Ticks apart shows a usage far below its rate
// in the Ticks between them, so it does not tell whether a replica that
// waits uses its rate.) Called with mu held.
func (f *Fleet) demand(now time.Time) float64 {
	granted, blocked := f.cfg.Limiter.Demand()
	if !f.last.IsZero() && now.After(f.last) {
		perMin := float64(granted-f.granted) / now.Sub(f.last).Minutes()
		f.usage = 0.5*f.usage + 0.5*perMin
	}
	f.granted, f.last = granted, now
	switch {
	case blocked:
		return f.cfg.Budget
	case f.usage < idleUsage:
		return 0 // idle: it lends its whole share
	}
	return min(f.cfg.Budget, f.usage*1.25+1)
}

// Allocate returns what a replica with share and demand lends to each of
// peers (the others of its generation): its spare, share − demand, split
// in proportion to what each peer wants beyond its own share. The split
// counts the other lenders' spares (from their records), so that when
// every lender does the same, each need is met as far as the spares go
// and no more. Lent rates are rounded down to 1/1000 rpm.
func Allocate(share, demand float64, peers []Record) map[string]float64 {
	spare := share - min(share, demand)
	if !(spare > 0) {
		return nil
	}
	pool, needs := spare, 0.0
	for _, p := range peers {
		pool += p.Share - min(p.Share, p.Demand)
		needs += max(0, p.Demand-p.Share)
	}
	if !(needs > 0) {
		return nil
	}
	out := make(map[string]float64)
	for _, p := range peers {
		if need := max(0, p.Demand-p.Share); need > 0 {
			if g := math.Floor(spare*need/max(needs, pool)*1000) / 1000; g > 0 {
				out[p.Replica] = g
			}
		}
	}
	return out
}

func sum(m map[string]float64) float64 {
	s := 0.0
	for _, v := range m {
		s += v
	}
	return s
}
