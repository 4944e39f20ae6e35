// Package sink is the MoEngage Cohort Sync API client.
//
// It owns:
//   - the HTTP request: the body (encoded by internal/wire), the endpoint
//     (BaseURL + Path), Basic auth and the MOE-APPKEY header, those of the
//     batch's workspace (wire.Header.Workspace) resolved before every
//     attempt: Config.Targets gives each workspace's ID, base URL and key,
//     or without it the Client serves Config.WorkspaceID alone (target.go);
//     a workspace without credentials stops its Send's line (no_key),
//     and Client.TargetsChanged wakes the stopped Sends;
//   - the classification of every answer (classify) and what follows from
//     it, per DESIGN.md's retry policy: accept, retry with backoff, pause for
//     a 429, split a 413, split an invalid batch to isolate the members at
//     fault (rejecting one only with evidence), or stop the line and retry
//     slowly while the credentials, the configuration or a whole batch are
//     rejected (Client.LineStopped), each workspace its own line;
//   - the blocked view (blocked.go): which workspaces cannot take changes
//     for their own reasons (Client.Blocked, Client.BlockedChanged), so
//     that the consumer parks their changes while the others flow;
//   - the API key in use, re-read after a 401/403 (Config.APIKeyFunc);
//   - the retry loop itself (only NextBackOff and Reset are taken from
//     cenkalti/backoff/v4), per-attempt timeouts, the lease check before
//     every attempt (Config.Lease; the default HTTP client checks it again
//     before every write, on the monotonic clock), and draining responses;
//   - taking a rate-limit permit before every attempt, after the lease is
//     proven (re-taken when older than half the arrival slack at the
//     write), and pausing the Limiter on a 429 (the Limiter itself, the
//     replica's share and its start after a rebalance are package
//     internal/ratelimit's);
//   - unknown outcomes: an answerless attempt that may have reached the
//     API holds the other action of its cohort (per workspace) for MaxProcessingTime
//     (unknown.go; Client.Settle for a hand-over);
//   - HTTP/1.1 only to the API (http.go, defaultHTTPClient: no transport
//     resends behind the limiter and the fence);
//   - the request metrics: requests, durations, retries, rate-limit wait,
//     line stopped (and auth failing), per workspace stopped and blocked.
//
// It does not own the lease itself (the consumer group proves membership),
// batching, compaction, per-cohort ordering or the number of concurrent
// Sends (package batcher), nor acknowledging, committing or dead-lettering
// anything; it knows nothing of Kafka (package consumer). Rejected members
// are returned to the caller, which dead-letters them.
package sink
