package sink

// RetryReason is why an attempt repeats members already sent (classify
// decides it): the value of the reason label of cohortsync_retries_total
// (the dashboards and alerts in deploy/ use these values).
type RetryReason string

// The retry reasons.
const (
	RetryRateLimited RetryReason = "rate_limited" // a 429
	RetryServerError RetryReason = "server_error" // a 5xx
	RetryTimeout     RetryReason = "timeout"      // a 408, or the attempt timed out
	RetryNetwork     RetryReason = "network"      // no answer: the connection failed
	RetryTooLarge    RetryReason = "too_large"    // a 413: the parts of a split
	RetryInvalid     RetryReason = "invalid"      // another 4xx: the parts of an isolating split
	// RetryLineStopped: the line is stopped (credentials or configuration,
	// LineStopAuth or LineStopConfig); the label value is "auth" for
	// dashboards built before the config stop existed.
	RetryLineStopped RetryReason = "auth"
	RetryStatusFail  RetryReason = "status_fail" // a 2xx whose body says "status": "fail"
	RetryLease       RetryReason = "lease"       // the lease lapsed before the request was written
)

// RetryReasons are all the retry reasons.
var RetryReasons = []RetryReason{RetryRateLimited, RetryServerError, RetryTimeout, RetryNetwork,
	RetryTooLarge, RetryInvalid, RetryLineStopped, RetryStatusFail, RetryLease}

// LineStopReason is why the sink sends only probes (classify decides it):
// the value of the reason label of cohortsync_line_stopped and
// cohortsync_line_stopped_probes_total.
type LineStopReason string

// The line-stop reasons.
const (
	LineStopAuth         LineStopReason = "auth"          // the API rejects the credentials
	LineStopConfig       LineStopReason = "config"        // the API rejects the endpoint or a header
	LineStopInvalidBatch LineStopReason = "invalid_batch" // a 4xx hits every part of a batch alike
	LineStopNoKey        LineStopReason = "no_key"        // a batch's workspace has no target or key (Config.Targets)
)

// LineStopReasons are all the line-stop reasons.
var LineStopReasons = []LineStopReason{LineStopAuth, LineStopConfig, LineStopInvalidBatch, LineStopNoKey}
