package event

import (
	"bytes"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/workspace"
)

// This file holds the fast path of Decode: a hand-written parser for the
// shape that producers write, one flat object of lower-case known keys with
// string values and a "uids" array of strings. The raw bytes of those
// strings must be valid UTF-8; their escape sequences are decoded exactly as
// encoding/json decodes them (see unescape), lone surrogate escapes aside,
// which decodeSlow rejects (text.go). A string without escape sequences is
// its bytes, and the fast path uses them in place.
//
// The fast path only ever answers "this is the event decodeSlow returns" or
// "not sure". It is not sure, and leaves the input to decodeSlow, whenever it
// meets anything else: an escape sequence or a non-ASCII byte in a key, a key
// that matches a known key only case-insensitively, a duplicate known key, a
// null, a value of a known key that is not a string (or array of strings for
// uids), a string with invalid UTF-8 (known key or not), a string of a known
// key with a lone surrogate escape, an object or array as the value of an
// unknown key, any syntax error, and any event that fails validation.
// It therefore never produces an error itself, and it cannot change the
// reason or message of one. Unknown keys whose values are strings, numbers,
// true, false or null are skipped after checking their syntax exactly.
//
// FuzzDecodeFast checks the fast path against decodeSlow.

// The fields of raw, as indexes of fastFields.str and bits of fastFields.has.
const (
	fieldAction = iota
	fieldCohortID
	fieldCohortName
	fieldCohortDescription
	fieldPartner
	fieldUID
	fieldUIDs
	fieldOccurredAt
	fieldWorkspaceID
	numFields

	fieldUnknown = -1 // a key that matches no field of raw
)

// fieldNames are the JSON names of the fields of raw, by field.
var fieldNames = [numFields]string{
	fieldAction:            "action",
	fieldCohortID:          "cohort_id",
	fieldCohortName:        "cohort_name",
	fieldCohortDescription: "cohort_description",
	fieldPartner:           "partner",
	fieldUID:               "uid",
	fieldUIDs:              "uids",
	fieldOccurredAt:        "occurred_at",
	fieldWorkspaceID:       "workspace_id",
}

// span is the value of a string. For a string without escape sequences it
// is value[lo:hi], quotes excluded. A string with escape sequences is
// unescaped onto fastFields.esc, and its span is offset by len(value): its
// value is esc[lo-len(value):hi-len(value)]. The spans index, in other words,
// value and esc laid end to end. A string in value starts at or before its
// closing quote, so lo < len(value) exactly when the string is in value (or
// the span is the span{} of an absent field, whose value is empty).
type span struct{ lo, hi int }

func (s span) len() int { return s.hi - s.lo }

// fastFields is what the fast path read from a document.
type fastFields struct {
	has  uint16          // bit 1<<field is set when field is present
	str  [numFields]span // the value of each present field but fieldUIDs
	uids []span          // the elements of uids
	esc  []byte          // the values of the strings with escape sequences
}

func (f *fastFields) present(field int) bool { return f.has&(1<<field) != 0 }

// bytes returns the value of field, which is empty when field is absent.
func (f *fastFields) bytes(v []byte, field int) []byte {
	return f.text(v, f.str[field])
}

// text returns the value of the string s of v.
func (f *fastFields) text(v []byte, s span) []byte { return spanText(v, f.esc, s) }

// spanText returns the value of the string s of v, whose strings with escape
// sequences are unescaped in esc.
func spanText(v, esc []byte, s span) []byte {
	if s.lo < len(v) {
		return v[s.lo:s.hi]
	}
	return esc[s.lo-len(v) : s.hi-len(v)]
}

// decodeFast is Decode for the inputs the fast path is sure about: when ok,
// ev is the Event that decodeSlow returns (with a fresh UIDs slice).
// Otherwise the caller must run decodeSlow.
func decodeFast(value []byte, defaultPartner string) (ev Event, ok bool) {
	var scratch [16]span
	var esc [128]byte
	f, ok := scanEvent(value, scratch[:0], esc[:0])
	if !ok {
		return Event{}, false
	}
	ev.Action, f.uids, ok = f.check(value, defaultPartner)
	if !ok {
		return Event{}, false
	}

	// The header strings share one allocation and the members another, so
	// that holding on to a cohort's name does not keep its members alive.
	// occurred_at is parsed from the header string and not kept.
	var buf [256]byte
	b := buf[:0]
	for _, field := range [...]int{fieldCohortID, fieldCohortName, fieldCohortDescription, fieldPartner, fieldWorkspaceID, fieldOccurredAt} {
		b = append(b, f.bytes(value, field)...) // absent fields are empty
	}
	s := string(b)
	ev.CohortID = take(&s, f.str[fieldCohortID].len())
	ev.CohortName = take(&s, f.str[fieldCohortName].len())
	ev.CohortDescription = take(&s, f.str[fieldCohortDescription].len())
	ev.Partner = take(&s, f.str[fieldPartner].len())
	if ev.Partner == "" {
		ev.Partner = defaultPartner
	}
	ev.Workspace = take(&s, f.str[fieldWorkspaceID].len())
	if f.present(fieldOccurredAt) {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return Event{}, false
		}
		ev.OccurredAt = t
	}

	b = buf[:0]
	for _, u := range f.uids {
		b = append(b, f.text(value, u)...)
	}
	s = string(b)
	ev.UIDs = make([]string, len(f.uids))
	for i, u := range f.uids {
		ev.UIDs[i] = take(&s, u.len())
	}
	return ev, true
}

// take returns the first n bytes of *s and removes them from it.
func take(s *string, n int) string {
	t := (*s)[:n]
	*s = (*s)[n:]
	return t
}

// check applies the rules of decodeSlow to f, except the parsing of
// occurred_at, which the caller does. When they pass it returns the action
// and the members: uid first, then uids, each once in the order given. The
// members reuse the memory of f.uids.
func (f *fastFields) check(v []byte, defaultPartner string) (a Action, members []span, ok bool) {
	if !f.present(fieldAction) {
		return "", nil, false
	}
	if a, ok = ParseAction(string(f.bytes(v, fieldAction))); !ok {
		return "", nil, false
	}
	if f.str[fieldCohortID].len() == 0 || f.str[fieldCohortName].len() == 0 {
		return "", nil, false // absent fields are empty too
	}
	for _, c := range f.bytes(v, fieldCohortName) { // unescaped
		if forbiddenName[c] {
			return "", nil, false
		}
	}
	if f.str[fieldPartner].len() == 0 && defaultPartner == "" {
		return "", nil, false
	}
	if f.present(fieldWorkspaceID) && !workspace.ValidID(string(f.bytes(v, fieldWorkspaceID))) {
		return "", nil, false // "" included
	}
	members = f.uids
	if f.present(fieldUID) {
		members = append(members, span{})
		copy(members[1:], members)
		members[0] = f.str[fieldUID]
	}
	if len(members) == 0 { // neither uid nor uids, or uids is []
		return "", nil, false
	}
	for _, u := range members {
		if u.len() == 0 {
			return "", nil, false
		}
	}
	return a, f.dedupeSpans(v, members), true
}

// forbiddenName[c] reports whether c is in ForbiddenNameChars. As those are
// ASCII, a name of valid UTF-8 contains one exactly when it contains its byte.
// Unescaped names are valid UTF-8 too: the fast path takes only strings
// of valid UTF-8, and an escape sequence stands for the UTF-8 of a rune.
var forbiddenName = func() (t [256]bool) {
	for _, c := range []byte(ForbiddenNameChars) {
		t[c] = true
	}
	return t
}()

// dedupeSpans is dedupe for the strings s of v: it keeps the first
// occurrence of each value (unescaped), preserving order, in the memory of s.
func (f *fastFields) dedupeSpans(v []byte, s []span) []span {
	if len(s) < 2 {
		return s
	}
	out := s[:0]
	if len(s) <= 32 {
		// Quadratic, but no allocation for the usual few members.
		esc := f.esc
		for _, u := range s {
			dup := false
			ut := spanText(v, esc, u)
			for _, w := range out {
				if bytes.Equal(spanText(v, esc, w), ut) {
					dup = true
					break
				}
			}
			if !dup {
				out = append(out, u)
			}
		}
		return out
	}
	vs := string(v) + string(f.esc) // one allocation for the keys of seen
	seen := make(map[string]struct{}, len(s))
	for _, u := range s {
		if _, dup := seen[vs[u.lo:u.hi]]; dup {
			continue
		}
		seen[vs[u.lo:u.hi]] = struct{}{}
		out = append(out, u)
	}
	return out
}

// scanEvent parses v as one JSON object of the shape the fast path handles,
// appending the elements of uids to uids and the values of strings with
// escape sequences to esc. ok is false when v is anything else, valid or
// not. f.uids and f.esc are returned even then, for reuse.
func scanEvent(v []byte, uids []span, esc []byte) (f fastFields, ok bool) {
	f.uids, f.esc = uids, esc
	i := skipSpace(v, 0)
	if i == len(v) || v[i] != '{' {
		return f, false
	}
	i = skipSpace(v, i+1)
	if i < len(v) && v[i] == '}' {
		return f, skipSpace(v, i+1) == len(v)
	}
	for {
		if i == len(v) || v[i] != '"' {
			return f, false
		}
		end, ok := scanKey(v, i+1)
		if !ok {
			return f, false
		}
		field, ok := lookupField(v[i+1 : end])
		if !ok {
			return f, false
		}
		i = skipSpace(v, end+1)
		if i == len(v) || v[i] != ':' {
			return f, false
		}
		i = skipSpace(v, i+1)
		if i == len(v) {
			return f, false
		}
		switch field {
		case fieldUnknown:
			i, ok = skipScalar(v, i)
		case fieldUIDs:
			f.uids, f.esc, i, ok = scanStrings(v, i, f.uids, f.esc)
		default:
			if v[i] != '"' {
				return f, false
			}
			end, ok = scanPlain(v, i+1)
			f.str[field] = span{i + 1, end}
			if !ok && end < len(v) && v[end] == '\\' {
				f.str[field], f.esc, end, ok = unescape(v, i+1, end, f.esc)
			}
			i = end + 1
		}
		if !ok {
			return f, false
		}
		if field != fieldUnknown {
			if f.present(field) {
				return f, false // the last one wins: leave it to decodeSlow
			}
			f.has |= 1 << field
		}
		i = skipSpace(v, i)
		if i == len(v) {
			return f, false
		}
		switch v[i] {
		case ',':
			i = skipSpace(v, i+1)
		case '}':
			return f, skipSpace(v, i+1) == len(v)
		default:
			return f, false
		}
	}
}

// lookupField returns the field of raw that key, an ASCII key without
// escapes, names, or fieldUnknown. ok is false when encoding/json would match
// key to a field case-insensitively.
func lookupField(key []byte) (field int, ok bool) {
	switch string(key) {
	case "action":
		return fieldAction, true
	case "cohort_id":
		return fieldCohortID, true
	case "cohort_name":
		return fieldCohortName, true
	case "cohort_description":
		return fieldCohortDescription, true
	case "partner":
		return fieldPartner, true
	case "uid":
		return fieldUID, true
	case "uids":
		return fieldUIDs, true
	case "occurred_at":
		return fieldOccurredAt, true
	case "workspace_id":
		return fieldWorkspaceID, true
	}
	for _, name := range fieldNames {
		if equalFoldASCII(key, name) {
			return 0, false
		}
	}
	return fieldUnknown, true
}

// equalFoldASCII reports whether the ASCII key equals the lower-case name
// under ASCII case folding, which is how encoding/json folds ASCII keys.
func equalFoldASCII(key []byte, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i, c := range key {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}
