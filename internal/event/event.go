// Package event defines the membership-change event that producers write to
// Kafka, and its decoding and validation.
//
// It owns the wire format of the input topic (DESIGN.md, "Input event") and
// nothing else: it knows no Kafka, batching or HTTP.
package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/workspace"
)

// Action is a membership change: add members to a cohort or remove them.
type Action string

// The two actions the Cohort Sync API accepts.
const (
	Add    Action = "add_members"
	Remove Action = "remove_members"
)

// ForbiddenNameChars are the characters the API forbids in cohort_name in
// every version of its documentation.
const ForbiddenNameChars = "|*?\\:<>=$\""

// Event is one decoded, validated membership change record. It may carry
// several members (the bulk "uids" form); UIDs holds each member once, in the
// order given.
type Event struct {
	Action            Action
	Partner           string
	CohortID          string
	CohortName        string
	CohortDescription string
	UIDs              []string
	OccurredAt        time.Time // zero when absent
	// Workspace is the MoEngage workspace the event names in workspace_id
	// (a valid workspace.ValidID), or "" when it names none (the field is
	// absent or null): the consumer decides what that means.
	Workspace string
}

// Reason is a bounded, machine-readable cause of an invalid event. It is used
// as a metric label and as the dead-letter reason header.
type Reason string

// Reasons an event is rejected.
const (
	ReasonMalformed     Reason = "malformed_json"
	ReasonMissingField  Reason = "missing_field"
	ReasonInvalidAction Reason = "invalid_action"
	ReasonInvalidField  Reason = "invalid_field"
	ReasonForbiddenChar Reason = "forbidden_character"
	ReasonTooLarge      Reason = "too_large"
	ReasonAPIRejected   Reason = "api_rejected"
	// ReasonUnknownWorkspace: the event names a workspace (workspace_id)
	// this worker does not serve. Decode never returns it; the consumer
	// dead-letters such events, to be replayed once a worker serves it.
	ReasonUnknownWorkspace Reason = "unknown_workspace"
)

// Reasons lists every Reason, for pre-initialising metric labels.
var Reasons = []Reason{ReasonMalformed, ReasonMissingField, ReasonInvalidAction,
	ReasonInvalidField, ReasonForbiddenChar, ReasonTooLarge, ReasonAPIRejected, ReasonUnknownWorkspace}

// InvalidError says why an event was rejected. Reason is bounded; Detail is
// a human-readable explanation that never contains secrets (it may quote the
// offending field).
type InvalidError struct {
	Reason Reason
	Detail string
}

func (e *InvalidError) Error() string { return string(e.Reason) + ": " + e.Detail }

func invalid(r Reason, format string, args ...any) error {
	return &InvalidError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ErrTombstone is returned by Decode for a record without a value (a Kafka
// tombstone). Such records carry no change and are skipped, not dead-lettered.
var ErrTombstone = errors.New("event: tombstone record")

// raw mirrors the JSON document. Pointers distinguish "absent" from "empty".
type raw struct {
	Action            *string         `json:"action"`
	CohortID          *string         `json:"cohort_id"`
	CohortName        *string         `json:"cohort_name"`
	CohortDescription *string         `json:"cohort_description"`
	Partner           *string         `json:"partner"`
	UID               *string         `json:"uid"`
	UIDs              []string        `json:"uids"`
	OccurredAt        json.RawMessage `json:"occurred_at"`
	WorkspaceID       *string         `json:"workspace_id"`
}

// ParseAction maps the accepted spellings ("add_members", "add",
// "remove_members", "remove") to an Action.
func ParseAction(s string) (Action, bool) {
	switch s {
	case "add_members", "add":
		return Add, true
	case "remove_members", "remove":
		return Remove, true
	}
	return "", false
}

// Decode parses and validates one record value. defaultPartner is used when
// the event names no partner. A nil or empty value returns ErrTombstone; any
// other problem returns an *InvalidError.
//
// The strings of the returned Event may share memory with each other (the
// header strings one allocation, the members another), never with value.
// To decode the records of one partition, a Decoder allocates less.
func Decode(value []byte, defaultPartner string) (Event, error) {
	if ev, ok := decodeFast(value, defaultPartner); ok {
		return ev, nil
	}
	return decodeSlow(value, defaultPartner)
}

// decodeSlow is Decode written with encoding/json. It is the reference that
// defines what Decode accepts and returns, quirks of encoding/json included
// (keys match case-insensitively, the last of duplicate keys wins, null is
// absence), and the fallback of the fast path (fast.go) for every input
// that path is not sure about. Every error of Decode comes from here.
//
// Where encoding/json would replace text with U+FFFD (bytes that are not
// valid UTF-8, lone surrogate escapes), the record is rejected instead: see
// checkText (text.go). Error details quote values of the record cut short
// (Quote), so that they stay a few hundred bytes at most.
func decodeSlow(value []byte, defaultPartner string) (Event, error) {
	if len(bytes.TrimSpace(value)) == 0 {
		return Event{}, ErrTombstone
	}
	var r raw
	if err := json.Unmarshal(value, &r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return Event{}, typeError(te)
		}
		return Event{}, invalid(ReasonMalformed, "%v", err)
	}
	if err := checkText(value); err != nil {
		return Event{}, err
	}
	var ev Event
	if r.Action == nil {
		return Event{}, invalid(ReasonMissingField, "action is missing")
	}
	a, ok := ParseAction(*r.Action)
	if !ok {
		return Event{}, invalid(ReasonInvalidAction, "action %s is not add_members, remove_members, add or remove", Quote(*r.Action))
	}
	ev.Action = a
	if err := required("cohort_id", r.CohortID); err != nil {
		return Event{}, err
	}
	ev.CohortID = *r.CohortID
	if err := required("cohort_name", r.CohortName); err != nil {
		return Event{}, err
	}
	ev.CohortName = *r.CohortName
	if i := strings.IndexAny(ev.CohortName, ForbiddenNameChars); i >= 0 {
		return Event{}, invalid(ReasonForbiddenChar, "cohort_name contains the forbidden character %q", ev.CohortName[i])
	}
	if r.CohortDescription != nil {
		ev.CohortDescription = *r.CohortDescription
	}
	switch {
	case r.Partner != nil && *r.Partner != "":
		ev.Partner = *r.Partner
	case defaultPartner != "":
		ev.Partner = defaultPartner
	default:
		return Event{}, invalid(ReasonMissingField, "partner is missing and no default partner (COHORTSYNC_PARTNER) is configured")
	}
	if r.WorkspaceID != nil {
		if err := checkWorkspace(*r.WorkspaceID); err != nil {
			return Event{}, err
		}
		ev.Workspace = *r.WorkspaceID
	}
	if r.UID == nil && r.UIDs == nil {
		return Event{}, invalid(ReasonMissingField, "uid or uids is missing")
	}
	n := len(r.UIDs)
	if r.UID != nil {
		n++
	}
	ev.UIDs = make([]string, 0, n)
	if r.UID != nil {
		if *r.UID == "" {
			return Event{}, invalid(ReasonInvalidField, "uid is empty")
		}
		ev.UIDs = append(ev.UIDs, *r.UID)
	}
	for i, u := range r.UIDs {
		if u == "" {
			return Event{}, invalid(ReasonInvalidField, "uids[%d] is empty", i)
		}
		ev.UIDs = append(ev.UIDs, u)
	}
	if len(ev.UIDs) == 0 {
		return Event{}, invalid(ReasonMissingField, "uids is empty")
	}
	if len(ev.UIDs) > 1 {
		ev.UIDs = dedupe(ev.UIDs)
	}
	if len(r.OccurredAt) > 0 && string(r.OccurredAt) != "null" {
		var s string
		if err := json.Unmarshal(r.OccurredAt, &s); err != nil {
			return Event{}, invalid(ReasonInvalidField, "occurred_at is not a string")
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return Event{}, invalid(ReasonInvalidField, "occurred_at %s is not an RFC 3339 time", Quote(s))
		}
		ev.OccurredAt = t
	}
	return ev, nil
}

// typeError describes a value of the wrong JSON type in the words of the
// input format, not of Go.
func typeError(te *json.UnmarshalTypeError) error {
	got := jsonType(te.Value)
	switch {
	case te.Field == "":
		return invalid(ReasonInvalidField, "the record is %s; an event must be a JSON object", got)
	case te.Field == "uids" && te.Type.Kind() == reflect.Slice:
		return invalid(ReasonInvalidField, "uids must be an array of strings, not %s", got)
	case te.Field == "uids":
		return invalid(ReasonInvalidField, "uids must be an array of strings; it holds %s", got)
	}
	return invalid(ReasonInvalidField, "%s must be a string, not %s", te.Field, got) // a field of raw
}

// jsonType names the JSON type that encoding/json reports as v ("number",
// "bool", "array", ...), with its article.
func jsonType(v string) string {
	switch v, _, _ = strings.Cut(v, " "); v { // "number 1e999": the type only
	case "number":
		return "a JSON number"
	case "bool":
		return "a JSON boolean"
	case "string":
		return "a JSON string"
	case "array":
		return "a JSON array"
	case "object":
		return "a JSON object"
	}
	return "a JSON " + Quote(v)
}

func required(name string, v *string) error {
	if v == nil {
		return invalid(ReasonMissingField, "%s is missing", name)
	}
	if *v == "" {
		return invalid(ReasonInvalidField, "%s is empty", name)
	}
	return nil
}

// checkWorkspace rejects a workspace_id that is not a workspace ID
// (workspace.ValidID). JSON null is absence and never gets here.
func checkWorkspace(id string) error {
	if id == "" {
		return invalid(ReasonInvalidField, "workspace_id is empty (omit it, or null, for the default workspace)")
	}
	if !workspace.ValidID(id) {
		return invalid(ReasonInvalidField, "workspace_id %s is not a workspace ID: 1 to 128 ASCII letters, digits, '_' or '-', starting with a letter or a digit", Quote(id))
	}
	return nil
}

// dedupe keeps the first occurrence of each uid, preserving order.
func dedupe(uids []string) []string {
	seen := make(map[string]struct{}, len(uids))
	out := uids[:0]
	for _, u := range uids {
		if _, dup := seen[u]; dup {
			continue
		}
		seen[u] = struct{}{}
		out = append(out, u)
	}
	return out
}

// Encode renders ev in the input format, with one member (uid) when it has
// one and the bulk form (uids) otherwise. It is the inverse of Decode and is
// used for dead-letter records of single members and by test producers.
func Encode(ev Event) []byte {
	type out struct {
		Action            Action   `json:"action"`
		CohortID          string   `json:"cohort_id"`
		CohortName        string   `json:"cohort_name"`
		CohortDescription string   `json:"cohort_description,omitempty"`
		Partner           string   `json:"partner,omitempty"`
		UID               string   `json:"uid,omitempty"`
		UIDs              []string `json:"uids,omitempty"`
		OccurredAt        string   `json:"occurred_at,omitempty"`
		WorkspaceID       string   `json:"workspace_id,omitempty"`
	}
	o := out{Action: ev.Action, CohortID: ev.CohortID, CohortName: ev.CohortName,
		CohortDescription: ev.CohortDescription, Partner: ev.Partner, WorkspaceID: ev.Workspace}
	if len(ev.UIDs) == 1 {
		o.UID = ev.UIDs[0]
	} else {
		o.UIDs = ev.UIDs
	}
	if !ev.OccurredAt.IsZero() {
		o.OccurredAt = ev.OccurredAt.UTC().Format(time.RFC3339Nano)
	}
	b, err := json.Marshal(o)
	if err != nil {
		panic("event: encode: " + err.Error()) // only strings: cannot fail
	}
	return b
}
