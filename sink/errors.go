package sink

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrGaveUp is wrapped by the error Send returns when Config.MaxElapsed > 0
// passed without progress. The same error also wraps the last failure (a
// *StatusError, or the network error). Nothing of the batch is known to be
// delivered: the caller must not acknowledge it.
var ErrGaveUp = errors.New("sink: gave up retrying")

// StatusError is a non-2xx answer from the Cohort Sync API. Type, Message,
// Attribute and RequestID come from the API's error envelope
// {"status":"fail","error":{"attribute","message","type","request_id"}} and
// are empty when the body is not one. Strings the server sent are truncated
// and scrubbed of the API key, so Error() never includes it.
type StatusError struct {
	Code      int    // HTTP status code
	Type      string // error.type, e.g. "MissingAttributeError"
	Message   string // error.message
	Attribute string // error.attribute: the request field at fault, if any
	RequestID string // error.request_id
	// RetryAfter is the delay the server asked for; 0 if none. On a 429 it
	// is Retry-After, else x-ratelimit-reset (RetryAfter); on any other
	// answer only an explicit Retry-After counts: x-ratelimit-reset says
	// when the rate window resets, which is no reason to hold back the
	// retry of a 5xx.
	RetryAfter time.Duration
	// NotAPI: a 2xx whose body is not the API's (see successBody): the
	// base URL reaches something else.
	NotAPI bool
}

// Error describes the answer, e.g.
// "cohortsync API answered 400 MissingAttributeError: action is not found in the payload (attribute action, request_id sYsoPuzf)".
func (e *StatusError) Error() string {
	var b strings.Builder
	b.WriteString("cohortsync API answered ")
	b.WriteString(e.summary())
	if e.Attribute != "" || e.RequestID != "" {
		b.WriteString(" (")
		if e.Attribute != "" {
			b.WriteString("attribute " + e.Attribute)
			if e.RequestID != "" {
				b.WriteString(", ")
			}
		}
		if e.RequestID != "" {
			b.WriteString("request_id " + e.RequestID)
		}
		b.WriteString(")")
	}
	if e.RetryAfter > 0 {
		b.WriteString(" retry after " + e.RetryAfter.String())
	}
	return b.String()
}

// summary is "<status> <type>: <message>", the rejection reason format. The
// status text stands in for a missing type.
func (e *StatusError) summary() string {
	if e.NotAPI {
		return strconv.Itoa(e.Code) + " with a body that is not the Cohort Sync API's (a JSON object whose status is success or fail)"
	}
	t := e.Type
	if t == "" {
		t = http.StatusText(e.Code)
	}
	if t == "" {
		t = "HTTP " + strconv.Itoa(e.Code)
	}
	m := e.Message
	if m == "" {
		m = "no error message"
	}
	return strconv.Itoa(e.Code) + " " + t + ": " + m
}

// dedupeKey identifies a repeating failure for logging: the request_id and
// the server delay change with every answer, so they are left out.
func (e *StatusError) dedupeKey() string {
	return e.summary() + "|" + e.Attribute
}

// maxServerDelay caps the delay a server may ask for (Retry-After,
// x-ratelimit-reset): a far-future or misread value (an epoch in
// milliseconds, say) must not park the replica for days. The rate window
// is 60 seconds; a pause that ends too early just meets another 429.
const maxServerDelay = 15 * time.Minute

// RetryAfter returns the delay a response asks for: Retry-After (delta
// seconds or an HTTP-date), else x-ratelimit-reset (a value below 1e9 is
// delta seconds, a larger one UTC epoch seconds; the API's docs disagree on
// which, so both are read). It returns 0 when neither header is usable or
// the time is already past, and caps the delay at 15 minutes. Delta seconds
// may be fractional.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	return serverDelay(h, now, true)
}

// serverDelay is RetryAfter, reading x-ratelimit-reset only when
// readReset (on a 429: see StatusError.RetryAfter).
func serverDelay(h http.Header, now time.Time, readReset bool) time.Duration {
	d, ok := retryAfterValue(h, now)
	if !ok && readReset {
		d = rateLimitReset(h, now)
	}
	return min(max(d, 0), maxServerDelay)
}

// rateLimitReset reads x-ratelimit-reset as delta or epoch seconds.
func rateLimitReset(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("X-Ratelimit-Reset")); v != "" {
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			if n < 1e9 {
				return seconds(n)
			}
			sec, frac := int64(n), n-float64(int64(n))
			return time.Unix(sec, int64(frac*1e9)).Sub(now)
		}
	}
	return 0
}

// retryAfterValue reads Retry-After; ok is false when it is absent or
// unreadable.
func retryAfterValue(h http.Header, now time.Time) (time.Duration, bool) {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			return seconds(n), true
		}
		if t, err := http.ParseTime(v); err == nil {
			return t.Sub(now), true
		}
	}
	return 0, false
}

// seconds converts n seconds to a Duration, saturating instead of
// overflowing (NaN and negatives give 0).
func seconds(n float64) time.Duration {
	if !(n > 0) {
		return 0
	}
	if n >= float64(maxServerDelay/time.Second) {
		return maxServerDelay
	}
	return time.Duration(n * float64(time.Second))
}
