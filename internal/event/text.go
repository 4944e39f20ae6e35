package event

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cohortsync/cohortsync-worker/internal/jsonstr"
)

// This file holds the rules about the text of a record that encoding/json
// does not enforce (RFC 8259 §8.1: JSON text exchanged between systems is
// UTF-8), and the quoting of values in error details.
//
// encoding/json replaces bytes that are not valid UTF-8, and \uXXXX escapes
// of lone UTF-16 surrogates, with U+FFFD: "a\xffb" and "a\xfeb" would both
// become "a\uFFFDb", one member where the producer meant two. So Decode
// rejects, before any other validation:
//
//   - a string of a field of the event (action, cohort_id, cohort_name,
//     cohort_description, partner, uid, an element of uids, occurred_at)
//     with bytes that are not valid UTF-8 or a lone surrogate escape:
//     ReasonInvalidField, naming the field;
//   - any other string of the record (a key, the value of an unknown field)
//     with bytes that are not valid UTF-8: ReasonMalformed, as the record
//     is not JSON text. A lone surrogate escape there is valid JSON syntax
//     and is ignored with the field.
//
// Bytes that are not valid UTF-8 outside strings are a syntax error of
// encoding/json already (ReasonMalformed).

// maxQuoted is the most bytes of a value that an error detail quotes.
const maxQuoted = 64

// Quote returns s quoted (strconv.Quote) for an error detail or a log line,
// cut to its first few dozen bytes (at a character boundary) with an
// ellipsis and the full length when it is longer, so that a detail quoting a
// value of the record stays a few hundred bytes at most, however large the
// value. The result is valid UTF-8.
func Quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// mayHaveBadText reports whether value may hold a string that checkText
// rejects: it has bytes that are not valid UTF-8, or a \uD8.. to \uDF..
// escape (the prefix of any surrogate escape).
func mayHaveBadText(value []byte) bool {
	if !utf8.Valid(value) {
		return true
	}
	for i := 0; ; {
		j := bytes.Index(value[i:], escapeU)
		if j < 0 {
			return false
		}
		i += j + 2
		if i+1 < len(value) && (value[i] == 'd' || value[i] == 'D') {
			switch value[i+1] {
			case '8', '9', 'a', 'b', 'c', 'd', 'e', 'f', 'A', 'B', 'C', 'D', 'E', 'F':
				return true
			}
		}
	}
}

var escapeU = []byte(`\u`)

// checkText applies the rules at the top of this file to value, a JSON
// document that encoding/json has decoded into a raw without error. It
// returns the *InvalidError of the first string (in the order of the
// document) that breaks them, or nil.
func checkText(value []byte) error {
	if !mayHaveBadText(value) {
		return nil
	}
	i := skipSpace(value, 0)
	if i == len(value) || value[i] != '{' {
		return nil // null: no strings
	}
	i = skipSpace(value, i+1)
	for i < len(value) && value[i] == '"' {
		end := stringEnd(value, i+1)
		key := value[i+1 : end]
		if bad := badText(key, false); bad != "" {
			return invalid(ReasonMalformed, "a key %s (JSON text must be UTF-8)", bad)
		}
		field := knownField(key)
		i = skipSpace(value, end+1)
		i = skipSpace(value, i+1) // the colon
		var err error
		switch field {
		case fieldUnknown:
			if i, err = checkValue(value, i, false, func(bad string) error {
				return invalid(ReasonMalformed, "a string in the value of the unknown field %s %s (JSON text must be UTF-8)",
					Quote(string(jsonstr.AppendUnescaped(nil, key))), bad)
			}); err != nil {
				return err
			}
		case fieldUIDs:
			if i, err = checkUIDs(value, i); err != nil {
				return err
			}
		default:
			name := fieldNames[field]
			if i, err = checkValue(value, i, true, func(bad string) error {
				return invalid(ReasonInvalidField, "%s %s", name, bad)
			}); err != nil {
				return err
			}
		}
		i = skipSpace(value, i)
		if i < len(value) && value[i] == ',' {
			i = skipSpace(value, i+1)
		}
	}
	return nil
}

// knownField returns the field of raw that encoding/json decodes the key
// with these contents into (keys match exactly, else under Unicode case
// folding, as strings.EqualFold folds), or fieldUnknown.
func knownField(key []byte) int {
	k := string(key)
	if strings.IndexByte(k, '\\') >= 0 {
		k = string(jsonstr.AppendUnescaped(nil, key))
	}
	for f, name := range fieldNames {
		if k == name {
			return f
		}
	}
	for f, name := range fieldNames {
		if strings.EqualFold(k, name) {
			return f
		}
	}
	return fieldUnknown
}

// checkUIDs checks the array of strings (or nulls) that starts at v[i] and
// returns the index after it.
func checkUIDs(v []byte, i int) (next int, err error) {
	if v[i] != '[' {
		return checkValue(v, i, true, func(bad string) error { return invalid(ReasonInvalidField, "uids %s", bad) })
	}
	i = skipSpace(v, i+1)
	for n := 0; i < len(v) && v[i] != ']'; n++ {
		if i, err = checkValue(v, i, true, func(bad string) error {
			return invalid(ReasonInvalidField, "uids[%d] %s", n, bad)
		}); err != nil {
			return i, err
		}
		i = skipSpace(v, i)
		if i < len(v) && v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
	return i + 1, nil
}

// checkValue checks every string (keys included) of the valid JSON value
// that starts at v[i], lone surrogate escapes too when surrogates is set,
// and returns the index after the value. The first bad string ends the
// check with the error fail returns for badText's description of it.
func checkValue(v []byte, i int, surrogates bool, fail func(bad string) error) (next int, err error) {
	depth := 0
	for i < len(v) {
		switch c := v[i]; c {
		case '"':
			end := stringEnd(v, i+1)
			if bad := badText(v[i+1:end], surrogates); bad != "" {
				return i, fail(bad)
			}
			i = end + 1
		case '{', '[':
			depth++
			i++
		case '}', ']':
			depth--
			i++
		default:
			i++
			if depth == 0 && c != ' ' && c != '\t' && c != '\n' && c != '\r' {
				// A scalar at the top: it ends before the next
				// delimiter.
				for i < len(v) && v[i] != ',' && v[i] != '}' && v[i] != ']' {
					i++
				}
				return i, nil
			}
			continue
		}
		if depth == 0 {
			return i, nil
		}
	}
	return i, nil
}

// stringEnd returns the index of the closing quote of the valid string
// whose contents start at v[i].
func stringEnd(v []byte, i int) int {
	for i < len(v) {
		switch v[i] {
		case '"':
			return i
		case '\\':
			i += 2 // the escaped byte is never the closing quote
		default:
			i++
		}
	}
	return i
}

// badText describes what is wrong with the contents s of a valid JSON
// string ("is not valid UTF-8 ..."), or returns "" when its bytes are valid
// UTF-8 and, if surrogates is set, it has no lone surrogate escape.
func badText(s []byte, surrogates bool) string {
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == '\\':
			if surrogates && jsonstr.LoneSurrogate(s[i:]) {
				return fmt.Sprintf("has the escape %s of a lone UTF-16 surrogate, which stands for no character", s[i:i+6])
			}
			_, n := jsonstr.DecodeEscape(s[i:])
			i += max(n, 1)
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				return fmt.Sprintf("is not valid UTF-8 (byte 0x%02x at byte %d of the string)", c, i)
			}
			i += size
		}
	}
	return ""
}
