package ratelimit

import (
	"time"
)

// Reading the board: which records count (peers), the rates they lend
// this replica (grants), and the pauses they publish (holdPauses). The
// rules, and why they keep the fleet within the budget, are at the top of
// fleet.go.

// holdPauses applies the pauses replicas of this generation published (the
// API's window is spent), each bounded by its record's own time: a record
// from the future (by more than Margin) or older than maxPause is ignored,
// and a pause holds at most until the record's At + maxPause. The hold is on
// the monotonic clock and is never republished (Limiter.HoldUntil). A dead
// replica's record, never deleted, is of an older generation once the group
// noticed (and a replica that is alive republishes its pause in its next
// record). Called with mu held.
func (f *Fleet) holdPauses(recs []Record, now, wall time.Time) {
	for _, r := range recs {
		if r.PauseUntil <= 0 || r.Generation != f.gen || f.fromFuture(r, wall) {
			continue
		}
		at := time.UnixMilli(r.At)
		if wall.Sub(at) > maxPause {
			continue
		}
		until := time.UnixMilli(min(r.PauseUntil, at.Add(maxPause).UnixMilli()))
		if d := until.Sub(wall); d > 0 {
			f.cfg.Limiter.HoldUntil(now.Add(d))
		}
	}
}

// fromFuture tells whether r was written more than Margin ahead of our
// clock when we first read it: such a record stays ignored even once our
// clock has caught up with it (it is as old as then). Called with mu held.
func (f *Fleet) fromFuture(r Record, wall time.Time) bool {
	if time.UnixMilli(r.At).After(wall.Add(f.cfg.Margin)) {
		if f.ahead == nil {
			f.ahead = make(map[string]int64)
		}
		f.ahead[r.Replica] = r.At
		return true
	}
	return f.ahead[r.Replica] == r.At && r.At != 0
}

// peers returns the records of replicas of this generation that may count:
// read lately, written no later than Margin ahead of our clock, and sound
// (they lend no more than their share and its reserve, and the share is no
// more than the budget).
// Called with mu held.
func (f *Fleet) peers(recs []Record, fresh, now, wall time.Time) []Record {
	stale := 3*f.cfg.Tick + f.cfg.Margin
	if now.Sub(fresh) >= stale {
		return nil
	}
	var out []Record
	for _, r := range recs {
		at := time.UnixMilli(r.At)
		if r.Generation != f.gen || r.Replica == f.cfg.Replica || f.fromFuture(r, wall) ||
			wall.Sub(at) >= stale+2*f.cfg.Margin || !(r.Share <= f.cfg.Budget) || !(sum(r.Lent) <= r.Share+Reserve(r.Share)) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// grants returns the rates peers lend this replica, each until its record's
// Until − Margin, and no later than At + Lease − Margin, converted to the
// monotonic clock at now.
func (f *Fleet) grants(peers []Record, now, wall time.Time) ([]Grant, float64) {
	var grants []Grant
	borrowed := 0.0
	for _, r := range peers {
		end := time.UnixMilli(min(r.Until, r.At+f.cfg.Lease.Milliseconds())).Add(-f.cfg.Margin)
		if g := r.Lent[f.cfg.Replica]; g > 0 && end.After(wall) {
			grants = append(grants, Grant{RPM: g, Until: now.Add(end.Sub(wall))})
			borrowed += g
		}
	}
	return grants, borrowed
}
