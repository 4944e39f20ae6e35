// Package ratelimit is the one home of the request budget: the Limiter
// that spaces one replica's permits, the replica's Share of the fleet-wide
// RATE_LIMIT_RPM, the arrival slack that keeps windows of arrivals (what
// the API counts) within it, and the late start after a rebalance.
//
// Ownership: internal/app builds one Limiter per replica and calls
// Rebalance at every partition assignment; the sink is its only user,
// taking one permit before every attempt (the first one included) and
// pausing it on a 429. Nothing else grants or holds permits.
package ratelimit
