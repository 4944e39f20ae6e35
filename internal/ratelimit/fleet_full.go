package ratelimit

import (
	"time"
)

// Running at the full share: a replica that has lent and borrowed nothing
// for reserveAfter, in a generation it has been in for as long, runs at its
// FullShare (its reserve included, rounded down to whole requests per
// 60s+ArrivalSlack) instead of its Share, lending and borrowing nothing;
// once it has left the full share, it lends and borrows nothing for
// reserveAfter. Why the fleet stays within the budget then is at the top
// of fleet.go ("The reserve").

// minSpare is the spare (rpm) a peer must show before a replica at its
// full share leaves it to be able to borrow: one request a minute, what
// leaving costs (its reserve).
const minSpare = 1.0

// rebalanceFull starts a generation: not at the full share, which comes
// reserveAfter later at the earliest (a loan of the last generation counts
// as in force until now). Called with mu held.
func (f *Fleet) rebalanceFull(verified bool, assigned, total int) {
	now := time.Now()
	if f.isFull {
		f.fullUntil = now
	}
	f.isFull = false
	f.involved = latest(f.involved, now)
	f.full = 0
	if verified {
		f.full = FullShare(f.cfg.Budget, assigned, total)
	}
}

// fullState decides whether this replica runs at its full share at this
// step (full: it lends and borrows nothing), and whether it may lend and
// borrow (loans). It runs at full when it has one, uses its share (demand),
// lends no part of its reserve, no loan it gave or took has been in force
// for reserveAfter, and no peer shows a spare of minSpare or more (it
// leaves full then, to be able to borrow reserveAfter later). It may lend
// and borrow only once it has not run at full for reserveAfter. Called
// with mu held.
func (f *Fleet) fullState(now time.Time, demand float64, peers []Record) (full, loans bool) {
	full = f.full > 0 && demand >= f.share && !f.reserveOut &&
		now.Sub(f.involved) >= reserveAfter && !spareAmong(peers)
	if f.isFull && !full {
		f.fullUntil = now // its full rate was in force until this step lowers it
	}
	f.isFull = full
	return full, !full && now.Sub(f.fullUntil) >= reserveAfter
}

// involve records that the loans of this step (lent by the new record,
// honoured until until, and the grants it uses) are in force until they
// end. Called with mu held.
func (f *Fleet) involve(lent map[string]float64, grants []Grant, until time.Time) {
	if sum(lent) > 0 {
		f.involved = latest(f.involved, until)
	}
	for _, g := range grants {
		f.involved = latest(f.involved, g.Until)
	}
}

// spareAmong tells whether a peer shows a spare of minSpare or more.
func spareAmong(peers []Record) bool {
	for _, p := range peers {
		if p.Share-p.Demand >= minSpare {
			return true
		}
	}
	return false
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
