// Package emulator is an in-process stand-in for MoEngage's Cohort Sync API,
// POST /v1/integrations/cohortsync, as described in
// the API contract, cohortsync-api.md (called "the contract" below).
//
// It owns the HTTP behaviour of that one endpoint (the order of checks, the
// documented error bodies, the rate limit and its headers), an in-memory copy
// of the segments the endpoint would create, a bounded log of the requests it
// saw, fault injection, and a small JSON admin API under /_emulator/ with a Go
// client ([AdminClient]) for out-of-process tests. It does not own the worker's
// HTTP client, batching or retry policy; it only answers them.
//
// An [Emulator] is an [net/http.Handler]: mount it on an httptest.Server, or
// run the cmd/cohortsync-emulator binary.
//
// # Order of checks (contract §11)
//
//  1. Path and method: 404 for any path other than [APIPath] (and not under
//     [AdminPrefix]); 405 with "Allow: POST" for other methods on [APIPath].
//  2. Outage fault: 503 (or a connection reset) for every request to the path.
//  3. Content-Type: 415 unless the media type is application/json; a charset
//     parameter, if present, must be utf-8.
//  4. Size: the body is read up to Config.MaxBodyBytes+1 bytes; more than
//     MaxBodyBytes gives 413.
//  5. Authentication: a missing or unparsable Authorization header gives 401
//     "Authentication Header Required"; an unknown workspace or a wrong key
//     gives 401 "App Secret key mismatch…"; a missing MOE-APPKEY gives 400
//     MissingAttributeError with attribute "MOE-APPKEY" (the contract allows
//     400 or 401; 400 is chosen because the documented 400 text names a missing
//     "APP KEY"); a MOE-APPKEY that differs from the Basic-auth username gives
//     401 "Authentication Mismatch".
//  6. Forbidden fault: 403 with one of the three documented bodies.
//  7. Rate limit: per workspace, fixed windows aligned to multiples of
//     Config.RateWindow since the Unix epoch; the request that finds the window
//     full gets 429. Forced 429s (Faults.Force429, scripted "429" steps) are
//     answered here too.
//  8. Body: invalid UTF-8, invalid JSON, trailing data or a top level that is
//     not an object give 400 "Malformed JSON"; then each required field, in
//     schema order (action, partner, parameters, cohort_name, cohort_id,
//     members, uid), is checked for presence (JSON null counts as missing),
//     type, emptiness and, for cohort_name, the forbidden characters and the
//     leading-period policy.
//  9. Injected rejections of otherwise valid requests, never applied:
//     Faults.BadRequest (400 "Malformed JSON", no attribute), then
//     Faults.RejectUIDs (400 "Bad Request" with a message naming nothing, for
//     a request with any of those members), then Faults.StatusFail (200 whose
//     body is the error envelope). They count toward the rate limit only
//     when Config.CountRejected is true.
//  10. Injected 5xx or connection reset for otherwise valid requests.
//  11. 200 with the documented success body.
//
// Every error response uses the documented envelope
// {"status":"fail","error":{"attribute":…,"message":…,"type":…,"request_id":…}}
// with "attribute" only on attribute errors and an 8-letter request_id.
// Errors the contract does not document (404, 405, invalid values, wrong
// types) use the same envelope with types "Not Found", "Method Not Allowed"
// and "Bad Request" (the generic type of the contract's §7.2 S6 example).
//
// # State
//
// An accepted request is applied synchronously, before the response is
// written, so a test that has seen the 200 can read the new state at once
// (the real API is asynchronous; arrival order is the order in which requests
// reach the emulator's lock, after their bodies were read). Segments are keyed
// by (workspace, partner, cohort_id) and are created by the first accepted
// request, even a remove_members. add_members and remove_members are set
// operations. The cohort name is replaced by every accepted request; the
// description only by requests that carry one. With a user store enabled
// (Config.Users or the admin API), add_members only adds uids the store knows
// for the workspace and silently drops the rest; remove_members removes any
// uid.
//
// # Rate-limit headers
//
// When Config.RateLimit > 0, every response to a request that passed
// authentication (step 5) carries x-ratelimit-limit, x-ratelimit-remaining and
// x-ratelimit-reset (seconds until the window ends, rounded up, or the window
// end in Unix seconds with Config.ResetHeader = "epoch"); a 429 always reports
// remaining 0. Accepted requests, injected 5xx and resets count toward the
// limit; 429s never do; other 4xx responses after step 5, and the injected
// "status":"fail" 200s of step 9, count only when Config.CountRejected is
// true.
//
// # Workspaces
//
// The emulator serves several workspaces (Config.Credentials and
// Config.Workspaces, or [LoadWorkspacesDir] for a directory in the layout of
// the worker's MOENGAGE_WORKSPACES_DIR). Each has its own key (Basic-auth
// user = workspace ID, password = key, MOE-APPKEY = workspace ID), its own
// rate limit (Workspace.RateLimit, else Config.RateLimit) with its own
// windows and x-ratelimit-* headers, its own segments and user store, and
// optionally its own faults. A workspace's faults (Workspace.Faults,
// [Emulator.SetWorkspaceFaults]) replace the emulator-wide Config.Faults /
// [Emulator.SetFaults] for the requests that name it; steps 2 (outage) and
// the injected latency, which come before authentication, go by the
// Basic-auth username (else MOE-APPKEY) the request claims. A forced 429,
// a 403 or an outage of one workspace leaves the others alone.
//
// At run time: [Emulator.AddWorkspace] adds a workspace or rotates its key
// (the old key gets 401 at once); [Emulator.RevokeKey] makes the key of a
// workspace answer 401 "App Secret key mismatch" (as a revoked Data API key
// does) until [Emulator.RestoreKey]; [Emulator.RemoveWorkspace] stops
// serving it. None of them touches segments or rate windows. A 403 for one
// workspace is its own Faults.Forbidden. [Emulator.Reset] returns to the
// workspaces of Config. The admin API has the same operations under
// /_emulator/workspaces/{id} (see [AdminPrefix]); the older admin endpoints
// act on all workspaces (their faults are the emulator-wide ones, which are
// the single workspace's when there is one).
//
// # Concurrency
//
// All methods of [Emulator] are safe for concurrent use. One mutex guards the
// segments, the user store, the rate windows, the workspaces, the faults and
// the request log.
package emulator
