package ratelimit

import (
	"math"
	"time"
)

// ArrivalSlack is the spread of the delay between a permit and the
// request's arrival at the API (encoding, connection, network) that the
// shares allow for. The Limiter spaces permits, but the API counts
// arrivals: with permits exactly 60s/rpm apart, one request that arrives
// late and a later one that arrives early put rpm+1 requests in one
// 60-second window. Spreading each share over 60s+ArrivalSlack keeps every
// window of arrivals within the budget as long as the delays differ by
// less than ArrivalSlack.
const ArrivalSlack = time.Second

// Share is one replica's part of the fleet-wide budget of rpm requests per
// minute: x = rpm × assigned/total × 60s/(60s+ArrivalSlack), less one
// request per minute: x − 1 (not rounded: a Limiter spaces fractional rates
// as well). The slack keeps every window of arrivals within the budget
// though requests arrive up to ArrivalSlack after their permits; the one
// request less, the Reserve, pays for the one permit a Limiter may give
// beyond the integral of its rate over a window (see fleet.go), so that the
// shares, and anything lent out of them, never let a 60-second window of
// arrivals hold more than rpm. A replica that has lent its whole share and
// sent nothing for a minute cannot give that permit, and lends its reserve
// too; one that has lent and borrowed nothing for a minute runs at its
// FullShare, reserve included (fleet.go). A share that would fall below one request per minute
// (x < 2) is x/2, with no reserve: it keeps the replica going, and the
// bound then holds only up to one request per such replica. With nothing assigned it is a token rate (nothing is sent
// anyway), and so it is when the total is unknown (total <= 0, or fewer
// than assigned): the smallest share, never the whole budget. rpm <= 0
// means unlimited.
func Share(rpm float64, assigned, total int) float64 {
	if rpm <= 0 {
		return rpm
	}
	if assigned <= 0 || total < assigned {
		return rpm / 1e6
	}
	x := rpm * float64(assigned) / float64(total) * float64(time.Minute) / float64(time.Minute+ArrivalSlack)
	if x >= 2 {
		return x - 1
	}
	return x / 2
}

// Reserve is the part of the budget a replica with share keeps back besides
// it (one request per minute; see Share): 1 for a share of at least 1, else
// 0.
func Reserve(share float64) float64 {
	if share >= 1 {
		return 1
	}
	return 0
}

// Rebalance sets l to this replica's Share of the fleet budget after a
// rebalance gave it assigned of total partitions, and returns the share.
//
// The new share starts two of its intervals late: every replica's old
// share may have granted a permit just before the rebalance, and a replica
// whose share grew would otherwise use it at once, so that a 60-second
// window could hold the old permits of one replica and the new ones of
// another on top of the budget. Two intervals cover one permit of the old
// share, granted at most one (old) interval before, and the arrival slack.
// The Fleet starts it later still by the debt of the generation change
// (fleet_debt.go): the permits the replicas of the last generation may have
// given beyond their shares.
func (l *Limiter) Rebalance(budget float64, assigned, total int) float64 {
	rpm := Share(budget, assigned, total)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.change(func() { l.rpm = rpm })
	if rpm > 0 {
		// Not a pause (PauseUntil): the Fleet publishes pauses to every
		// replica, and a replica with no partition would stop the fleet
		// for its tiny share's two intervals (years).
		l.start = time.Now().Add(2 * Spacing(rpm))
	}
	return rpm
}

// FullShare is the rate a replica may run at, its reserve included, while
// it has lent and borrowed nothing for a while (fleet.go, "The reserve"):
// the whole number of requests of its part of the budget, k = floor(rpm ×
// assigned/total), spread over 60s+ArrivalSlack, as a rate per minute:
// k × 60s/(60s+ArrivalSlack). A Limiter at that rate (or below) gives at
// most k permits in any span shorter than 60s+ArrivalSlack, whatever its
// changes (Limiter), so such replicas need no reserve: their k add up to
// at most rpm. 0 when Share keeps no reserve (a share under two requests a
// minute, a token rate, an unknown total, unlimited).
func FullShare(rpm float64, assigned, total int) float64 {
	if rpm <= 0 || Reserve(Share(rpm, assigned, total)) == 0 || assigned <= 0 || total < assigned {
		return 0
	}
	k := math.Floor(rpm * float64(assigned) / float64(total))
	if rpm == math.Trunc(rpm) && rpm < 1<<40 {
		k = float64(int64(rpm) * int64(assigned) / int64(total)) // exact: no rounding error can add one
	}
	return k * float64(time.Minute) / float64(time.Minute+ArrivalSlack)
}
