// Package jsonstr validates and decodes the contents of JSON string tokens
// exactly as encoding/json does. It holds the escape rules shared by the
// hand-written JSON fast paths of the event and emulator packages, so that
// they exist once:
//
//   - \" \\ \/ \b \f \n \r \t stand for the byte they name;
//   - \uXXXX (hex digits in either case) stands for the UTF-8 of U+XXXX,
//     except that a \uXXXX of the UTF-16 surrogate range (D800-DFFF)
//     immediately followed by another \uXXXX forms one rune with it when
//     they are a high and a low surrogate, in that order; otherwise that
//     surrogate alone stands for U+FFFD and the next \uXXXX is decoded on
//     its own;
//   - any other escape sequence, and \u with fewer than four hex digits,
//     are syntax errors (encoding/json's unquote accepts \', but its
//     scanner rejects it first).
//
// A string's contents are the bytes between its quotes. Scan validates them
// (with EscapeLen for the escape sequences); DecodeEscape decodes one escape
// sequence, and AppendUnescaped the contents of a string Scan accepted.
// LoneSurrogate tells the \uXXXX escapes that encoding/json turns into
// U+FFFD, for callers that must not let distinct strings collapse into one.
package jsonstr

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// Hex4 decodes the four hexadecimal digits (either case) at the start of b,
// or returns -1 when b is shorter or they are not all hexadecimal digits.
func Hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// EscapeLen returns the length of the valid escape sequence at the start of
// b, whose first byte is a backslash: 2, or 6 for \uXXXX. It returns 0 when
// there is no valid escape sequence there.
func EscapeLen(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
		if Hex4(b[2:]) >= 0 {
			return 6
		}
	}
	return 0
}

// plain reports the bytes that stand for themselves in a JSON string and are
// ASCII: printable ASCII other than '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// Scan scans the contents of a string token whose opening quote precedes b
// and returns the index in b of its closing quote, and whether the contents
// have escape sequences. ok is false, and n meaningless, when there is no
// closing quote, or before it an invalid escape sequence (see EscapeLen), a
// raw control character or bytes that are not valid UTF-8. The contents
// b[:n] of a string Scan accepts are what AppendUnescaped takes.
//
// encoding/json accepts invalid UTF-8 (replacing it with U+FFFD); Scan
// leaves such strings to the caller's slow path.
func Scan(b []byte) (n int, escaped, ok bool) {
	i := 0
	for i < len(b) {
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i >= len(b) {
			break
		}
		switch c := b[i]; {
		case c == '"':
			return i, escaped, true
		case c == '\\':
			n := EscapeLen(b[i:])
			if n == 0 {
				return i, false, false
			}
			escaped = true
			i += n
		case c < utf8.RuneSelf: // a control character
			return i, false, false
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return i, false, false
			}
			i += size
		}
	}
	return i, false, false
}

// DecodeEscape decodes the escape sequence at the start of b, whose first
// byte is a backslash. It returns the rune the sequence stands for and its
// length n: 2, or 6 for a \uXXXX, or 12 for a \uXXXX of a high surrogate
// followed by a \uXXXX of a low one, which form one rune. Any other
// surrogate stands for U+FFFD (and a \uXXXX after it is left for the next
// call). n is 0 when there is no valid escape sequence at b.
func DecodeEscape(b []byte) (r rune, n int) {
	if len(b) < 2 {
		return 0, 0
	}
	switch c := b[1]; c {
	case '"', '\\', '/':
		return rune(c), 2
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		r = Hex4(b[2:])
		if r < 0 {
			return 0, 0
		}
		if utf16.IsSurrogate(r) {
			if len(b) >= 12 && b[6] == '\\' && b[7] == 'u' {
				// A valid pair is never U+FFFD, which DecodeRune returns
				// for anything else.
				if pair := utf16.DecodeRune(r, Hex4(b[8:])); pair != utf8.RuneError {
					return pair, 12
				}
			}
			return utf8.RuneError, 6 // a lone or misordered surrogate
		}
		return r, 6
	}
	return 0, 0
}

// LoneSurrogate reports whether the escape sequence at the start of b is a
// \uXXXX of the UTF-16 surrogate range that DecodeEscape decodes on its own,
// as U+FFFD: a high surrogate not followed by the \uXXXX of a low one, or a
// low surrogate. Such an escape stands for no character, and strings that
// differ only there decode to the same value.
func LoneSurrogate(b []byte) bool {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' || !utf16.IsSurrogate(Hex4(b[2:])) {
		return false
	}
	_, n := DecodeEscape(b)
	return n == 6
}

// AppendUnescaped appends to dst the value of the string whose contents
// (between the quotes) are raw, and returns the extended slice. The escape
// sequences of raw must all be valid (as checked by Scan or EscapeLen);
// they are decoded by DecodeEscape, as encoding/json decodes them. Other
// bytes are copied as they are (and so is the backslash of an invalid
// escape sequence).
func AppendUnescaped(dst, raw []byte) []byte {
	for {
		i := bytes.IndexByte(raw, '\\')
		if i < 0 {
			return append(dst, raw...)
		}
		dst = append(dst, raw[:i]...)
		r, n := DecodeEscape(raw[i:])
		if n == 0 { // not valid: not for AppendUnescaped
			r, n = '\\', 1
		}
		dst = utf8.AppendRune(dst, r)
		raw = raw[i+n:]
	}
}
