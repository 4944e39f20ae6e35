// Package ratelimit is the one home of the request budget: the Limiter
// that spaces one replica's permits (and the rates other replicas lend
// it), the replica's Share of the fleet-wide RATE_LIMIT_RPM, the arrival
// slack that keeps windows of arrivals (what the API counts) within it,
// the late start after a rebalance, and the Fleet, which shares the budget
// by demand over a Board (fleet.go says how, and why the fleet stays
// within the budget).
//
// Ownership: internal/app builds one Fleets per replica (a Fleet and a
// Limiter per workspace, each at the workspace's own budget: fleets.go) and
// calls Fleets.Rebalance at every partition assignment; the Fleets'
// goroutine alone sets the Limiters' rates after that. The sink is the
// Limiters' only user, taking one permit of the batch's workspace before
// every attempt (the first one included) and pausing that workspace's on a
// 429 or a spent window. Nothing else grants or holds permits.
package ratelimit
