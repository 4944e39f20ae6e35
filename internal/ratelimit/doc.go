// Package ratelimit is the one home of the request budget: the Limiter
// that spaces one replica's permits (and the rates other replicas lend
// it), the replica's Share of the fleet-wide RATE_LIMIT_RPM, the arrival
// slack that keeps windows of arrivals (what the API counts) within it,
// the late start after a rebalance, and the Fleet, which shares the budget
// by demand over a Board (fleet.go says how, and why the fleet stays
// within the budget).
//
// Ownership: internal/app builds one Limiter and one Fleet per replica and
// calls Fleet.Rebalance at every partition assignment; the Fleet's
// goroutine alone sets the Limiter's rates after that. The sink is the
// Limiter's only user, taking one permit before every attempt (the first
// one included) and pausing it on a 429 or a spent window. Nothing else
// grants or holds permits.
package ratelimit
