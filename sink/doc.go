// Package sink is the Cohort Sync API client: it encodes a batch as the
// documented request, authenticates, classifies the answer, and retries,
// splits or gives members up according to DESIGN.md's retry policy. It also
// owns the client-side rate limiter.
//
// It does not batch, order or acknowledge anything (that is the batcher's
// job), and it knows nothing of Kafka.
package sink
