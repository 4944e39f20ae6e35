// Package sink is the MoEngage Cohort Sync API client.
//
// It owns:
//   - the HTTP request: the body (encoded by internal/wire), the endpoint
//     (BaseURL + Path), Basic auth and the MOE-APPKEY header;
//   - the classification of every answer and what follows from it, per
//     DESIGN.md's retry policy: accept, retry with backoff, pause for a 429,
//     split a 413 or an invalid batch to isolate the members the API rejects
//     on their own, or stop and retry slowly while the credentials are
//     rejected (Client.AuthFailing);
//   - the retry loop itself (only NextBackOff and Reset are taken from
//     cenkalti/backoff/v4), per-attempt timeouts, and draining responses;
//   - the client-side rate limiter (Limiter): evenly spaced permits, paused
//     by a 429;
//   - the request metrics: requests, durations, retries, rate-limit wait,
//     auth failing.
//
// It does not own batching, compaction, per-cohort ordering, the number of
// concurrent Sends or the first permit of each batch (package batcher), nor
// acknowledging, committing or dead-lettering anything; it knows nothing of
// Kafka (package consumer). Rejected members are returned to the caller,
// which dead-letters them. The caller also sets the Limiter's share of the
// fleet-wide rate at every rebalance (Limiter.SetRPM) and its gauge.
package sink
