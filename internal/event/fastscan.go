package event

import (
	"unicode/utf8"

	"github.com/cohortsync/cohortsync-worker/internal/jsonstr"
)

// This file holds the JSON scanners of the fast path (fast.go): keys, plain
// and escaped strings, arrays of strings, and the scalars of unknown keys,
// each checked exactly as encoding/json checks them.

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
