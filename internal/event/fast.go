package event

import (
	"bytes"
	"time"
	"unicode/utf8"

	"github.com/cohortsync/cohortsync-worker/internal/jsonstr"
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
	for _, field := range [...]int{fieldCohortID, fieldCohortName, fieldCohortDescription, fieldPartner, fieldOccurredAt} {
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

// plainASCII[c] reports whether c stands for itself in a JSON string and is
// ASCII: it is not a control character, '"' or '\\'.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanKey scans the rest of a key whose opening quote is v[i-1] and returns
// the index of its closing quote. ok is false for a key with an escape
// sequence or a non-ASCII byte, and for an invalid one.
func scanKey(v []byte, i int) (end int, ok bool) {
	for ; i < len(v); i++ {
		if !plainASCII[v[i]] {
			return i, v[i] == '"'
		}
	}
	return i, false
}

// scanPlain scans the rest of a string without escape sequences whose
// opening quote is v[i-1] and returns the index of its closing quote. ok is
// false for a string of invalid UTF-8, and for an invalid one. It is false
// too for a string with an escape sequence, and end is then the index of the
// first backslash, for unescape to take over.
func scanPlain(v []byte, i int) (end int, ok bool) {
	start, ascii := i, true
	for ; i < len(v); i++ {
		c := v[i]
		if plainASCII[c] {
			continue
		}
		if c == '"' {
			return i, ascii || utf8.Valid(v[start:i])
		}
		if c < utf8.RuneSelf {
			return i, false // an escape sequence or a control character
		}
		ascii = false
	}
	return i, false
}

// unescape scans the rest of a string with escape sequences whose opening
// quote is v[start-1] and first escape sequence v[i]. It returns the span of
// the string, esc with the value of the string appended, and the index of its
// closing quote. It decodes the escape sequences as encoding/json's unquote
// does (see package jsonstr); invalid ones and raw control characters are
// syntax errors (ok is false). Raw bytes that are not valid UTF-8, and lone
// surrogate escapes, leave the string to decodeSlow (ok is false too), which
// rejects them.
func unescape(v []byte, start, i int, esc []byte) (s span, _ []byte, end int, ok bool) {
	if !utf8.Valid(v[start:i]) {
		return span{}, esc, i, false
	}
	b := esc
	lo := len(b)
	b = append(b, v[start:i]...)
	for i < len(v) {
		if plainASCII[v[i]] { // copy a run of plain ASCII at once
			j := i + 1
			for j < len(v) && plainASCII[v[j]] {
				j++
			}
			b = append(b, v[i:j]...)
			i = j
			continue
		}
		switch c := v[i]; {
		case c == '"':
			return span{len(v) + lo, len(v) + len(b)}, b, i, true
		case c == '\\':
			r, n := jsonstr.DecodeEscape(v[i:])
			if n == 0 || r == utf8.RuneError && jsonstr.LoneSurrogate(v[i:]) {
				return span{}, b, i, false
			}
			b = utf8.AppendRune(b, r)
			i += n
		case c < utf8.RuneSelf: // a control character
			return span{}, b, i, false
		default:
			r, size := utf8.DecodeRune(v[i:])
			if r == utf8.RuneError && size == 1 {
				return span{}, b, i, false
			}
			b = append(b, v[i:i+size]...)
			i += size
		}
	}
	return span{}, b, i, false
}

// scanStrings scans an array of strings that starts at v[i], appending their
// spans to s and the values of those with escape sequences to esc, and
// returns s, esc and the index after it.
func scanStrings(v []byte, i int, s []span, esc []byte) (_ []span, _ []byte, next int, ok bool) {
	if v[i] != '[' {
		return s, esc, i, false
	}
	i = skipSpace(v, i+1)
	if i < len(v) && v[i] == ']' {
		return s, esc, i + 1, true
	}
	for {
		if i == len(v) || v[i] != '"' {
			return s, esc, i, false
		}
		end, ok := scanPlain(v, i+1)
		if !ok {
			if end < len(v) && v[end] == '\\' {
				return scanEscapedStrings(v, i, s, esc)
			}
			return s, esc, i, false
		}
		s = append(s, span{i + 1, end})
		var done bool
		if i, done, ok = arrayNext(v, end+1); done || !ok {
			return s, esc, i, ok
		}
	}
}

// scanEscapedStrings is scanStrings from the string at v[i] on, the first
// with an escape sequence. It is apart to keep the loop of scanStrings, for
// strings without, short.
func scanEscapedStrings(v []byte, i int, s []span, esc []byte) (_ []span, _ []byte, next int, ok bool) {
	for {
		if i == len(v) || v[i] != '"' {
			return s, esc, i, false
		}
		end, ok := scanPlain(v, i+1)
		u := span{i + 1, end}
		if !ok && end < len(v) && v[end] == '\\' {
			u, esc, end, ok = unescape(v, i+1, end, esc)
		}
		if !ok {
			return s, esc, i, false
		}
		s = append(s, u)
		var done bool
		if i, done, ok = arrayNext(v, end+1); done || !ok {
			return s, esc, i, ok
		}
	}
}

// arrayNext reads what follows an array element that ends before v[i]:
// a comma (it returns the index of the next element) or the closing
// bracket (done, and the index after it). ok is false for anything else.
func arrayNext(v []byte, i int) (next int, done, ok bool) {
	i = skipSpace(v, i)
	if i == len(v) {
		return i, false, false
	}
	switch v[i] {
	case ',':
		return skipSpace(v, i+1), false, true
	case ']':
		return i + 1, true, true
	}
	return i, false, false
}

// skipScalar skips the string, number, true, false or null that starts at
// v[i] and returns the index after it. ok is false for anything else (an
// object or an array included) and for invalid JSON.
func skipScalar(v []byte, i int) (next int, ok bool) {
	switch c := v[i]; {
	case c == '"':
		return skipString(v, i+1)
	case c == '-' || '0' <= c && c <= '9':
		return skipNumber(v, i)
	case c == 't':
		return skipLiteral(v, i, "true")
	case c == 'f':
		return skipLiteral(v, i, "false")
	case c == 'n':
		return skipLiteral(v, i, "null")
	}
	return i, false
}

func skipLiteral(v []byte, i int, lit string) (next int, ok bool) {
	if len(v)-i < len(lit) || string(v[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// skipString skips the rest of any valid string of valid UTF-8 whose
// opening quote is v[i-1] and returns the index after its closing quote.
func skipString(v []byte, i int) (next int, ok bool) {
	for i < len(v) {
		switch c := v[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			n := jsonstr.EscapeLen(v[i:])
			if n == 0 {
				return i, false
			}
			i += n
		case c < 0x20:
			return i, false
		case c < utf8.RuneSelf:
			i++
		default:
			// encoding/json does not check the UTF-8 of ignored strings,
			// but decodeSlow does (text.go).
			r, size := utf8.DecodeRune(v[i:])
			if r == utf8.RuneError && size == 1 {
				return i, false
			}
			i += size
		}
	}
	return i, false
}

// skipNumber skips the number that starts at v[i], following the JSON
// grammar exactly, and returns the index after it.
func skipNumber(v []byte, i int) (next int, ok bool) {
	if v[i] == '-' {
		i++
	}
	switch {
	case i < len(v) && v[i] == '0':
		i++
	case i < len(v) && '1' <= v[i] && v[i] <= '9':
		i = skipDigits(v, i+1)
	default:
		return i, false
	}
	if i < len(v) && v[i] == '.' {
		j := skipDigits(v, i+1)
		if j == i+1 {
			return i, false
		}
		i = j
	}
	if i < len(v) && (v[i] == 'e' || v[i] == 'E') {
		i++
		if i < len(v) && (v[i] == '+' || v[i] == '-') {
			i++
		}
		j := skipDigits(v, i)
		if j == i {
			return i, false
		}
		i = j
	}
	return i, true
}

func skipDigits(v []byte, i int) int {
	for i < len(v) && '0' <= v[i] && v[i] <= '9' {
		i++
	}
	return i
}

// skipSpace returns the index of the first byte at or after v[i] that is not
// JSON white space.
func skipSpace(v []byte, i int) int {
	for i < len(v) {
		switch v[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}
