package sink

import (
	"errors"
	"net/http"
	"strings"
	"time"
)

// kind is what Send does after a failed attempt.
type kind int

const (
	// retryBackoff: send the same body again after the next backoff
	// interval, or after delay if that is longer.
	retryBackoff kind = iota + 1
	// retryPause: a 429. Pause the Limiter for delay (0: the next backoff
	// interval), then send the same body again.
	retryPause
	// retryNow: the lease expired before a byte was written; send the same
	// body again as soon as a new lease (and a permit) is held.
	retryNow
	// stopLine: the credentials or the configuration are wrong; no request
	// can succeed until an operator acts. Stop the line (reason stop) and
	// send the same body again every AuthRetryInterval.
	stopLine
	// splitHalves: a 413. Split the members in halves; a single member is
	// rejected.
	splitHalves
	// rejectAll: the error names a field of the cohort, shared by every
	// member: reject them all.
	rejectAll
	// isolate: another 4xx. Find the members at fault by splitting; reject
	// one only with evidence (DESIGN.md "Retry policy").
	isolate
)

// decision is the classification of one failed attempt.
type decision struct {
	kind kind
	// reason is the retries_total reason of the next attempt of the same
	// members.
	reason RetryReason
	// stop is the line_stopped reason of a stopLine.
	stop LineStopReason
	// delay is the delay the server asked for (StatusError.RetryAfter):
	// the pause of a retryPause, a floor for retryBackoff; 0 if none.
	delay time.Duration
	// member: for isolate, the error names a member field (uid, members),
	// which is evidence enough to reject a member that gets it alone.
	member bool
}

// Line-stop reasons: auth for 401, 403 and the "Authentication ..." types;
// config for 415, 404, 405, 3xx and a header named at fault; invalid_batch
// for a 4xx that hits every part of a batch alike.
const (
	stopAuth         = LineStopAuth
	stopConfig       = LineStopConfig
	stopInvalidBatch = LineStopInvalidBatch
	stopNoKey        = LineStopNoKey
)

// envelopeAttrs are the request fields outside the members: a 4xx naming one
// of them concerns the whole batch, so splitting cannot isolate anything.
var envelopeAttrs = map[string]bool{"action": true, "partner": true, "parameters": true,
	"cohort_name": true, "cohort_id": true, "cohort_description": true}

// memberAttrs are the request fields of the members: a 4xx naming one of
// them blames a member (which one, splitting finds out).
var memberAttrs = map[string]bool{"uid": true, "members": true}

// headerAttrs are request headers, lower case: a 4xx naming one of them is
// a fault of the worker's configuration or code, never of the data.
var headerAttrs = map[string]bool{"moe-appkey": true, "authorization": true, "content-type": true}

// authTypes are error types that mean the credentials are wrong whatever the
// status (the Data API documents "Authentication Mismatch" as a 409).
var authTypes = map[string]bool{"Authentication Mismatch": true, "Authentication required": true}

// classify decides what follows a failed attempt: serr is the API's answer
// (a non-2xx, or a 2xx whose body says "status": "fail"), err the transport
// error when there was no answer. Exactly one of them is non-nil. It is a
// pure function of the answer: the backoff and the intervals are the
// sender's.
func classify(serr *StatusError, err error) decision {
	if err != nil {
		switch {
		case errors.Is(err, errLeaseExpired):
			return decision{kind: retryNow, reason: RetryLease}
		case isTimeout(err):
			return decision{kind: retryBackoff, reason: RetryTimeout}
		default:
			return decision{kind: retryBackoff, reason: RetryNetwork}
		}
	}
	switch code := serr.Code; {
	case serr.NotAPI:
		return decision{kind: stopLine, reason: RetryLineStopped, stop: stopConfig}
	case code >= 200 && code < 300: // "status": "fail" in a 2xx: not an acceptance
		return decision{kind: retryBackoff, reason: RetryStatusFail, delay: serr.RetryAfter}
	case code == http.StatusTooManyRequests:
		return decision{kind: retryPause, reason: RetryRateLimited, delay: serr.RetryAfter}
	case code == http.StatusRequestTimeout:
		return decision{kind: retryBackoff, reason: RetryTimeout, delay: serr.RetryAfter}
	case code >= 500:
		return decision{kind: retryBackoff, reason: RetryServerError, delay: serr.RetryAfter}
	}
	if stop := stopReason(serr); stop != "" {
		return decision{kind: stopLine, reason: RetryLineStopped, stop: stop}
	}
	switch {
	case serr.Code == http.StatusRequestEntityTooLarge:
		return decision{kind: splitHalves, reason: RetryTooLarge}
	case envelopeAttrs[serr.Attribute]:
		return decision{kind: rejectAll, reason: RetryInvalid}
	default:
		return decision{kind: isolate, reason: RetryInvalid, member: memberAttrs[serr.Attribute]}
	}
}

// stopReason returns the line-stop reason of an answer meaning that the
// credentials or the configuration are wrong, so that no request can
// succeed until an operator acts (retried slowly, forever; never a
// rejection), or "" for another answer.
func stopReason(e *StatusError) LineStopReason {
	switch {
	case e.Code == http.StatusUnauthorized, e.Code == http.StatusForbidden:
		return stopAuth
	case e.Code >= 400 && e.Code < 500 && authTypes[e.Type]:
		return stopAuth
	case e.NotAPI, e.Code == http.StatusUnsupportedMediaType, e.Code == http.StatusNotFound,
		e.Code == http.StatusMethodNotAllowed, e.Code >= 300 && e.Code < 400:
		return stopConfig
	case e.Code >= 400 && e.Code < 500 && headerAttrs[strings.ToLower(e.Attribute)]:
		return stopConfig
	}
	return ""
}

// isAuthError reports whether an answer rejects the credentials (401, 403,
// an "Authentication ..." type): the API key is then re-read.
func isAuthError(e *StatusError) bool { return e != nil && stopReason(e) == stopAuth }

// lineStopMessage is the loud log line, what the operator must fix, for an
// answer that stops the line (stopReason: the credentials or the
// configuration).
func lineStopMessage(e *StatusError) string {
	switch {
	case e.Code == http.StatusUnsupportedMediaType:
		return "the API rejects the request's content type: this is a bug in the worker; sending is stopped, nothing is dropped or committed"
	case e.NotAPI:
		return "the API endpoint answered 2xx with a body that is not the Cohort Sync API's (a proxy, or another service): check MOENGAGE_BASE_URL / MOENGAGE_DC; sending is stopped, nothing is dropped or committed"
	case e.Code == http.StatusNotFound || e.Code == http.StatusMethodNotAllowed || e.Code >= 300 && e.Code < 400:
		return "the API endpoint is wrong: check MOENGAGE_BASE_URL / MOENGAGE_DC; sending is stopped, nothing is dropped or committed"
	case stopReason(e) == stopConfig:
		return "the API rejects a request header: this is a bug in the worker or a wrong MOENGAGE_WORKSPACE_ID; sending is stopped, nothing is dropped or committed"
	default:
		return "the API rejects the credentials (workspace ID and data API key) or the account is suspended; sending is stopped, nothing is dropped or committed"
	}
}
