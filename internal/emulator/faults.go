package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Values of Faults.ForbiddenVariant, one per documented 403 body.
const (
	// ForbiddenSuspended answers type "Account Suspended"; the default.
	ForbiddenSuspended = "suspended"
	// ForbiddenBlocked answers type "BlockedClient".
	ForbiddenBlocked = "blocked"
	// ForbiddenTemporarilySuspended answers type "Account Temporarily Suspended".
	ForbiddenTemporarilySuspended = "temporarily_suspended"
)

// Kinds of injected fault: the values of FaultStep.Kind, also used in
// RequestRecord.Fault.
const (
	// FaultOutage answers every request to the endpoint with 503 (or resets
	// the connection when Faults.OutageReset is set) before any other check.
	FaultOutage = "outage"
	// Fault5xx answers otherwise valid requests with a 5xx from
	// Faults.ErrorStatuses and the documented 500 body.
	Fault5xx = "5xx"
	// Fault429 answers authenticated, permitted requests with 429 at the
	// rate-limit step.
	Fault429 = "429"
	// FaultReset closes the connection of otherwise valid requests without
	// a response (a TCP reset where possible).
	FaultReset = "reset"
	// FaultForbidden marks a 403 from Faults.Forbidden in the request log.
	FaultForbidden = "forbidden"
	// FaultCanceled marks in the request log a request whose client went
	// away during an injected latency; nothing was answered or applied.
	FaultCanceled = "canceled"
	// FaultBadRequest answers authenticated, otherwise valid requests with
	// the documented 400 "Malformed JSON" body (no attribute), without
	// applying them: Faults.BadRequest, or a scripted step.
	FaultBadRequest = "bad_request"
	// FaultStatusFail answers authenticated, otherwise valid requests with
	// 200 and the error envelope {"status":"fail","error":{...}}, without
	// applying them: Faults.StatusFail, or a scripted step.
	FaultStatusFail = "status_fail"
	// FaultRejectUIDs marks a 400 from Faults.RejectUIDs in the request log.
	FaultRejectUIDs = "reject_uids"
	// FaultLate marks in the request log a request held for Faults.LateDelay
	// (Faults.LateRate), whatever its client did meanwhile, then processed
	// as usual: when the client gave up first, it was processed all the
	// same, its answer unread.
	FaultLate = "late"
)

// MessageInvalidParameters is the message of the 400 that Faults.RejectUIDs
// answers, with type "Bad Request" and no attribute: MoEngage's generic
// Standard Error Format example (contract §7.2, S6). It names nothing, so
// the client cannot tell which member, if any, is at fault.
const MessageInvalidParameters = "The request parameters are invalid"

var (
	// errRejectedMember is the 400 of Faults.RejectUIDs.
	errRejectedMember = &apiError{status: http.StatusBadRequest, typ: TypeBadRequest, message: MessageInvalidParameters}
	// errStatusFail is the body of Faults.StatusFail, sent with 200: the
	// documented 500 body in the error envelope.
	errStatusFail = &apiError{status: http.StatusOK, typ: TypeServerError, message: MessageServerError}
)

// Faults are the failures the emulator injects. They can be replaced at any
// time with [Emulator.SetFaults] or PUT /_emulator/faults. The zero value
// injects nothing. In JSON, durations are Go duration strings ("250ms";
// numbers are read as nanoseconds) and OutageUntil is RFC 3339.
type Faults struct {
	// ErrorRate is the fraction (0 to 1) of otherwise valid requests answered
	// with a 5xx and the documented 500 body.
	ErrorRate float64
	// ErrorStatuses are the statuses injected 5xx answers pick from at
	// random; each must be 500, 502, 503 or 504. Empty means [500].
	ErrorStatuses []int
	// Latency is waited before a request to the endpoint is handled, plus a
	// random extra up to LatencyJitter. If the client goes away during the
	// wait, the request is dropped without being applied.
	Latency       time.Duration
	LatencyJitter time.Duration
	// ResetRate is the fraction (0 to 1) of otherwise valid requests whose
	// connection is closed without a response. It is drawn before ErrorRate.
	ResetRate float64
	// Forbidden answers every authenticated request with 403.
	Forbidden bool
	// ForbiddenVariant picks the documented 403 body: ForbiddenSuspended
	// (the default when empty), ForbiddenBlocked or
	// ForbiddenTemporarilySuspended.
	ForbiddenVariant string
	// Outage answers every request to the endpoint with 503 while set.
	Outage bool
	// OutageUntil, when after the emulator's clock, acts like Outage.
	OutageUntil time.Time
	// OutageReset makes outages reset connections instead of answering 503.
	OutageReset bool
	// Force429 answers the next Force429 requests that reach the rate-limit
	// step (authenticated, not forbidden) with 429. It counts down as it is
	// used; [Emulator.Faults] reports what is left.
	Force429 int
	// BadRequest answers every authenticated, permitted (not forbidden, not
	// rate-limited), otherwise valid request with the documented 400
	// "Malformed JSON" body, which has no attribute, and does not apply it:
	// a fault of the API, or of a proxy in front of it, that hits every
	// request alike.
	BadRequest bool
	// StatusFail answers every authenticated, permitted, otherwise valid
	// request with 200 whose body is the error envelope
	// {"status":"fail","error":{"message":…,"type":"Server Error",…}}
	// rather than the success body, and does not apply it.
	StatusFail bool
	// RejectUIDs answers every authenticated, permitted, otherwise valid
	// request whose members include any of these uids with 400, type "Bad
	// Request", MessageInvalidParameters and no attribute, and does not
	// apply it: members the API refuses without saying which. Entries must
	// not be empty.
	RejectUIDs []string
	// ApplyBeforeError applies an otherwise valid request's change before
	// answering it with an injected 5xx or reset, which simulates "accepted
	// but the response was lost". By default the change is not applied.
	ApplyBeforeError bool
	// LateRate is the fraction (0 to 1) of authenticated requests with a
	// readable body that are held for LateDelay and then processed as usual
	// -- checked, counted, applied and answered -- even if the client went
	// away meanwhile: an API that processes a request after the client
	// gave up on it (its timeout shorter than LateDelay). Requires
	// LateDelay > 0 when set.
	LateRate  float64
	LateDelay time.Duration
	// Script schedules faults relative to the time the faults were set.
	Script []FaultStep
}

// FaultStep is one scheduled fault: from After until After+Duration, counted
// from the moment the Faults holding it were set (by the emulator's clock),
// every request eligible for Kind gets it, as if that fault's rate were 1.
// Duration 0 means until the faults are replaced.
type FaultStep struct {
	After    time.Duration
	Duration time.Duration
	// Kind is FaultOutage, Fault5xx, Fault429, FaultReset, FaultBadRequest
	// or FaultStatusFail.
	Kind string
}

// Validate reports the first invalid field of f, if any.
func (f Faults) Validate() error {
	if !isRate(f.ErrorRate) {
		return fmt.Errorf("faults: error rate %v is not within [0, 1]", f.ErrorRate)
	}
	if !isRate(f.ResetRate) {
		return fmt.Errorf("faults: reset rate %v is not within [0, 1]", f.ResetRate)
	}
	for _, s := range f.ErrorStatuses {
		switch s {
		case 500, 502, 503, 504:
		default:
			return fmt.Errorf("faults: error status %d is not 500, 502, 503 or 504", s)
		}
	}
	if f.Latency < 0 || f.LatencyJitter < 0 {
		return errors.New("faults: latency and latency jitter must not be negative")
	}
	if !isRate(f.LateRate) {
		return fmt.Errorf("faults: late rate %v is not within [0, 1]", f.LateRate)
	}
	if f.LateDelay < 0 || (f.LateRate > 0 && f.LateDelay == 0) {
		return fmt.Errorf("faults: late delay %s must be positive with a late rate", f.LateDelay)
	}
	switch f.ForbiddenVariant {
	case "", ForbiddenSuspended, ForbiddenBlocked, ForbiddenTemporarilySuspended:
	default:
		return fmt.Errorf("faults: forbidden variant %q is not %q, %q or %q", f.ForbiddenVariant,
			ForbiddenSuspended, ForbiddenBlocked, ForbiddenTemporarilySuspended)
	}
	if f.Force429 < 0 {
		return fmt.Errorf("faults: force 429 count %d is negative", f.Force429)
	}
	for i, u := range f.RejectUIDs {
		if u == "" {
			return fmt.Errorf("faults: reject uid %d is empty", i)
		}
	}
	for i, s := range f.Script {
		if s.After < 0 || s.Duration < 0 {
			return fmt.Errorf("faults: script step %d: negative time", i)
		}
		switch s.Kind {
		case FaultOutage, Fault5xx, Fault429, FaultReset, FaultBadRequest, FaultStatusFail:
		default:
			return fmt.Errorf("faults: script step %d: kind %q is not %q, %q, %q, %q, %q or %q",
				i, s.Kind, FaultOutage, Fault5xx, Fault429, FaultReset, FaultBadRequest, FaultStatusFail)
		}
	}
	return nil
}

func isRate(r float64) bool { return !math.IsNaN(r) && r >= 0 && r <= 1 }

// clone returns f with its slices copied, so that the caller and the
// emulator never share them.
func (f Faults) clone() Faults {
	f.ErrorStatuses = slices.Clone(f.ErrorStatuses)
	f.Script = slices.Clone(f.Script)
	f.RejectUIDs = slices.Clone(f.RejectUIDs)
	return f
}

// rejectOutcome returns the answer of the faults that reject an otherwise
// valid request without applying it (BadRequest, RejectUIDs, StatusFail,
// and their scripted steps, in that order), if one applies to members at
// now, for faults set at setAt.
func (f *Faults) rejectOutcome(members []string, setAt, now time.Time) (outcome, bool) {
	switch {
	case f.BadRequest || f.activeStep(FaultBadRequest, setAt, now):
		return outcome{err: errMalformedJSON, fault: FaultBadRequest}, true
	case f.rejectsAny(members):
		return outcome{err: errRejectedMember, fault: FaultRejectUIDs}, true
	case f.StatusFail || f.activeStep(FaultStatusFail, setAt, now):
		return outcome{err: errStatusFail, fault: FaultStatusFail}, true
	}
	return outcome{}, false
}

// rejectsAny reports whether members include any of f.RejectUIDs.
func (f *Faults) rejectsAny(members []string) bool {
	switch n := len(f.RejectUIDs); {
	case n == 0:
		return false
	case n <= 8:
		for _, m := range members {
			if slices.Contains(f.RejectUIDs, m) {
				return true
			}
		}
		return false
	default:
		set := make(map[string]struct{}, n)
		for _, u := range f.RejectUIDs {
			set[u] = struct{}{}
		}
		for _, m := range members {
			if _, ok := set[m]; ok {
				return true
			}
		}
		return false
	}
}

// activeStep reports whether a script step of kind is active at now, for
// faults set at setAt.
func (f *Faults) activeStep(kind string, setAt, now time.Time) bool {
	for _, s := range f.Script {
		if s.Kind != kind {
			continue
		}
		from := setAt.Add(s.After)
		if now.Before(from) {
			continue
		}
		if s.Duration == 0 || now.Before(from.Add(s.Duration)) {
			return true
		}
	}
	return false
}

// jsonDuration is a time.Duration written as a Go duration string in JSON;
// it also reads a number of nanoseconds.
type jsonDuration time.Duration

// MarshalJSON implements json.Marshaler.
func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, time.Duration(d).String()), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = jsonDuration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration must be a string like \"250ms\" or a number of nanoseconds")
	}
	*d = jsonDuration(n)
	return nil
}

type faultsJSON struct {
	ErrorRate        float64         `json:"error_rate"`
	ErrorStatuses    []int           `json:"error_statuses"`
	Latency          jsonDuration    `json:"latency"`
	LatencyJitter    jsonDuration    `json:"latency_jitter"`
	ResetRate        float64         `json:"reset_rate"`
	Forbidden        bool            `json:"forbidden"`
	ForbiddenVariant string          `json:"forbidden_variant"`
	Outage           bool            `json:"outage"`
	OutageUntil      *time.Time      `json:"outage_until"`
	OutageReset      bool            `json:"outage_reset"`
	Force429         int             `json:"force_429"`
	BadRequest       bool            `json:"bad_request"`
	StatusFail       bool            `json:"status_fail"`
	RejectUIDs       []string        `json:"reject_uids"`
	ApplyBeforeError bool            `json:"apply_before_error"`
	LateRate         float64         `json:"late_rate"`
	LateDelay        jsonDuration    `json:"late_delay"`
	Script           []faultStepJSON `json:"script"`
}

type faultStepJSON struct {
	After    jsonDuration `json:"after"`
	Duration jsonDuration `json:"duration"`
	Kind     string       `json:"kind"`
}

// MarshalJSON implements json.Marshaler with snake_case keys and duration
// strings.
func (f Faults) MarshalJSON() ([]byte, error) {
	j := faultsJSON{
		ErrorRate:        f.ErrorRate,
		ErrorStatuses:    f.ErrorStatuses,
		Latency:          jsonDuration(f.Latency),
		LatencyJitter:    jsonDuration(f.LatencyJitter),
		ResetRate:        f.ResetRate,
		Forbidden:        f.Forbidden,
		ForbiddenVariant: f.ForbiddenVariant,
		Outage:           f.Outage,
		OutageReset:      f.OutageReset,
		Force429:         f.Force429,
		BadRequest:       f.BadRequest,
		StatusFail:       f.StatusFail,
		RejectUIDs:       f.RejectUIDs,
		ApplyBeforeError: f.ApplyBeforeError,
		LateRate:         f.LateRate,
		LateDelay:        jsonDuration(f.LateDelay),
	}
	if j.ErrorStatuses == nil {
		j.ErrorStatuses = []int{}
	}
	if j.RejectUIDs == nil {
		j.RejectUIDs = []string{}
	}
	if !f.OutageUntil.IsZero() {
		t := f.OutageUntil
		j.OutageUntil = &t
	}
	j.Script = make([]faultStepJSON, len(f.Script))
	for i, s := range f.Script {
		j.Script[i] = faultStepJSON{After: jsonDuration(s.After), Duration: jsonDuration(s.Duration), Kind: s.Kind}
	}
	return json.Marshal(j)
}

// UnmarshalJSON implements json.Unmarshaler. Unknown keys are an error, so
// that a misspelt fault does not silently do nothing.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var j faultsJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	*f = Faults{
		ErrorRate:        j.ErrorRate,
		ErrorStatuses:    j.ErrorStatuses,
		Latency:          time.Duration(j.Latency),
		LatencyJitter:    time.Duration(j.LatencyJitter),
		ResetRate:        j.ResetRate,
		Forbidden:        j.Forbidden,
		ForbiddenVariant: j.ForbiddenVariant,
		Outage:           j.Outage,
		OutageReset:      j.OutageReset,
		Force429:         j.Force429,
		BadRequest:       j.BadRequest,
		StatusFail:       j.StatusFail,
		RejectUIDs:       j.RejectUIDs,
		ApplyBeforeError: j.ApplyBeforeError,
		LateRate:         j.LateRate,
		LateDelay:        time.Duration(j.LateDelay),
	}
	if len(f.ErrorStatuses) == 0 {
		f.ErrorStatuses = nil
	}
	if len(f.RejectUIDs) == 0 {
		f.RejectUIDs = nil
	}
	if j.OutageUntil != nil {
		f.OutageUntil = *j.OutageUntil
	}
	for _, s := range j.Script {
		f.Script = append(f.Script, FaultStep{After: time.Duration(s.After), Duration: time.Duration(s.Duration), Kind: s.Kind})
	}
	return nil
}
