package ratelimit

import (
	"math"
	"time"
)

// The debt of a generation change (fleet.go, "Generations do not
// overlap"): every replica of the previous generation may have given one
// permit beyond its part of a window across the change (the token its
// Limiter held, or the fencepost of the integral), and a replica that left
// the group pays for nothing after. So every replica starts its new share
// late by an extra D × 61 s / RATE_LIMIT_RPM, D an upper bound on the
// replicas that may have sent in the previous generation: nobody sends
// during that time, which takes D permits off the integral of the
// budget's rate over any window across the change.
//
// D counts, from the board's records and this replica's own, the replicas
// that had partitions in the previous generation (a record tells its
// generation's assignment and the one before it: a replica that already
// published its new generation still tells its old one), plus one for each
// partition of that generation no record accounts for (each replica that
// may have sent held at least one). Without a readable board that is about
// the partition total.

// debtFor returns how late (besides the two intervals) the share of
// generation gen starts: D × 61 s / Budget, D as above; total is the new
// generation's verified partition total (0: unknown). Called with mu held,
// before the fields of the new generation are set.
func (f *Fleet) debtFor(recs []Record, gen int64, total int) time.Duration {
	if !(f.cfg.Budget > 0) || math.IsInf(f.cfg.Budget, 1) {
		return 0
	}
	d := f.debtReplicas(recs, gen, total)
	return time.Duration(float64(d) * float64(time.Minute+ArrivalSlack) / f.cfg.Budget)
}

// debtReplicas is D: the replicas that may have sent in the generation
// before gen (see above). Called with mu held.
func (f *Fleet) debtReplicas(recs []Record, gen int64, total int) int {
	old, ok := f.gen, f.joined && f.gen < gen
	bound := max(f.lastTotal, total) // partitions are never removed: no fewer than before
	for _, r := range recs {
		bound = max(bound, r.Total, r.PrevTotal)
		// The latest generation before gen: this replica may have missed
		// some (new to the group, or dropped from it for a while).
		for _, g := range []int64{r.Generation, r.PrevGeneration} {
			if g > 0 && g < gen && (!ok || g > old) {
				old, ok = g, true
			}
		}
	}
	if !ok {
		return bound
	}
	senders, accounted := 0, 0
	add := func(assigned int) {
		if assigned > 0 {
			senders++
			accounted += assigned
		}
	}
	if f.joined && f.gen == old {
		add(f.assigned)
	}
	for _, r := range recs {
		switch {
		case r.Replica == f.cfg.Replica:
		case r.Generation == old:
			add(r.Assigned)
		case r.PrevGeneration == old:
			add(r.PrevAssigned)
		}
	}
	return senders + max(0, bound-accounted)
}

// delayStart makes the share set by Rebalance start d later still.
func (l *Limiter) delayStart(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d > 0 && !l.start.IsZero() {
		l.start = l.start.Add(d)
	}
}
