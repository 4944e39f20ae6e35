package jsonstr

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestHex4(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want rune
	}{
		{"0000", 0},
		{"0041", 'A'},
		{"00e9", 0xe9},
		{"00E9", 0xe9},
		{"aBcD", 0xabcd},
		{"FFFF", 0xffff},
		{"d83D", 0xd83d},
		{"12345", 0x1234}, // only the first four count
		{"123", -1},
		{"", -1},
		{"12g4", -1},
		{"-123", -1},
		{"+123", -1},
		{" 123", -1},
		{"0x12", -1},
		{"123G", -1},
		{"\x00123", -1},
	} {
		if got := Hex4([]byte(tc.in)); got != tc.want {
			t.Errorf("Hex4(%q) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

func TestEscapeLen(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{`\"`, 2},
		{`\\`, 2},
		{`\/`, 2},
		{`\b`, 2},
		{`\f`, 2},
		{`\n`, 2},
		{`\r`, 2},
		{`\t`, 2},
		{`\nabc`, 2},
		{`\u0000`, 6},
		{`\u00e9x`, 6},
		{`\uD83D\uDE00`, 6},
		{`\uFFFF`, 6},
		{`\`, 0},
		{``, 0},
		{`\u`, 0},
		{`\u123`, 0},
		{`\u12G4`, 0},
		{`\U0041`, 0},
		{`\'`, 0},
		{`\a`, 0},
		{`\x41`, 0},
		{`\0`, 0},
		{"\\\n", 0},
		{`\ `, 0},
	} {
		if got := EscapeLen([]byte(tc.in)); got != tc.want {
			t.Errorf("EscapeLen(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestScan(t *testing.T) {
	for _, tc := range []struct {
		in      string
		n       int
		escaped bool
		ok      bool
	}{
		{`"`, 0, false, true},
		{`abc"`, 3, false, true},
		{`abc"def"`, 3, false, true},
		{`a\"b"`, 4, true, true},
		{`\u00e9"`, 6, true, true},
		{"é\"", 2, false, true},
		{"\u2028\"", 3, false, true},
		{`\uD83D\uDE00"`, 12, true, true},
		{`\uD83D"`, 6, true, true}, // a lone surrogate is valid syntax
		{``, 0, false, false},
		{`abc`, 0, false, false},
		{`abc\"`, 0, false, false},
		{`\`, 0, false, false},
		{`\u12"`, 0, false, false},
		{`\x"`, 0, false, false},
		{"a\x00\"", 0, false, false},
		{"a\x1f\"", 0, false, false},
		{"a\t\"", 0, false, false},
		{"\xff\"", 0, false, false},
		{"\xc3\"", 0, false, false},
		{"\xed\xa0\x80\"", 0, false, false}, // an encoded surrogate
		{"\x7f\"", 1, false, true},          // DEL is not a control character in JSON
	} {
		n, escaped, ok := Scan([]byte(tc.in))
		if ok != tc.ok || ok && (n != tc.n || escaped != tc.escaped) {
			t.Errorf("Scan(%q) = %d, %v, %v; want %d, %v, %v", tc.in, n, escaped, ok, tc.n, tc.escaped, tc.ok)
		}
	}
}

// unescapeSeeds are string contents for FuzzAppendUnescaped: every escape
// kind, surrogate pairs, lone and misordered surrogates, and invalid or
// truncated escapes (which the target skips, as Scan rejects them).
var unescapeSeeds = []string{
	``,
	`plain`,
	`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`,
	`a\"b\\c\/d\be\ff\ng\rh\ti`,
	`\u0000`, `a\u0000b`,
	`\u0041`, `\u00e9`, `\u00E9`, `\u2028\u2029`, `\u0026\u003c\u003e`,
	`\uFFFD`, `\uFFFF`, `\uFEFF`,
	`\uD83D\uDE00`, `\ud83d\ude00`, `x\uD83D\uDE00y`, `\uDBFF\uDFFF`, `\uD800\uDC00`,
	`\uD83D`, `\uDE00`, `\uD83Dx`, `\uD83D\n`, `\uD83D\u0041`,
	`\uDE00\uD83D`, `\uD83D\uD83D\uDE00`, `\uD83D\uD83D`, `\uDE00\uDE00`,
	`\uD83D\uDE`, `\uD83D\u`, `\uD83D\`, `\uD83D\\uDE00`,
	`\uD83D\uDEG0`,
	`\u12`, `\u`, `\`, `\u12G4`, `\x41`, `\'`, `\U0041`, `\0`,
	"é", "日本", "\u2028", "\xff", "\xed\xa0\x80", "a\x00", "a\x1f", `"`,
}

// FuzzAppendUnescaped checks AppendUnescaped against encoding/json for the
// string contents Scan accepts (after adding the closing quote), and that
// Scan accepts exactly what encoding/json accepts, except invalid UTF-8,
// which Scan rejects.
func FuzzAppendUnescaped(f *testing.F) {
	for _, s := range unescapeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		quoted := make([]byte, 0, len(raw)+2)
		quoted = append(append(append(quoted, '"'), raw...), '"')
		var want string
		jsonErr := json.Unmarshal(quoted, &want)

		n, escaped, ok := Scan(quoted[1:])
		accepted := ok && n == len(raw)
		switch {
		case accepted && jsonErr != nil:
			t.Fatalf("Scan accepts %q, encoding/json: %v", raw, jsonErr)
		case !accepted && jsonErr == nil && utf8.Valid(raw):
			t.Fatalf("Scan rejects %q (%d, %v), encoding/json accepts it", raw, n, ok)
		}

		// The validation the brief names: escapes valid by EscapeLen, no
		// raw control characters or quotes. It must agree with Scan on
		// valid UTF-8.
		valid := true
		for i := 0; i < len(raw); {
			switch c := raw[i]; {
			case c == '\\':
				e := EscapeLen(raw[i:])
				if e == 0 {
					valid = false
				}
				if _, n := DecodeEscape(raw[i:]); n != e && !(e == 6 && n == 12) {
					t.Fatalf("at %d of %q: EscapeLen %d, DecodeEscape %d", i, raw, e, n)
				}
				i += max(e, 1)
			case c < 0x20 || c == '"':
				valid = false
				i++
			default:
				i++
			}
			if !valid {
				break
			}
		}
		if utf8.Valid(raw) && valid != accepted {
			t.Fatalf("EscapeLen validation %v, Scan %v for %q", valid, accepted, raw)
		}
		if !valid {
			return
		}
		if jsonErr != nil {
			t.Fatalf("valid %q, encoding/json: %v", raw, jsonErr)
		}
		if accepted && escaped != (bytes.IndexByte(raw, '\\') >= 0) {
			t.Fatalf("Scan(%q): escaped %v", raw, escaped)
		}

		prefix := []byte("pre")
		got := AppendUnescaped(prefix, raw)
		if !bytes.HasPrefix(got, prefix) {
			t.Fatalf("AppendUnescaped lost dst: %q", got)
		}
		got = got[len(prefix):]
		if utf8.Valid(raw) {
			if string(got) != want {
				t.Fatalf("AppendUnescaped(%q) = %q, encoding/json %q", raw, got, want)
			}
			return
		}
		// encoding/json replaces invalid UTF-8 with U+FFFD, AppendUnescaped
		// copies it: compare after the same replacement.
		if !sameReplaced(got, want) {
			t.Fatalf("AppendUnescaped(%q) = %q, encoding/json %q", raw, got, want)
		}
	})
}

// sameReplaced reports whether got, with each invalid byte replaced by
// U+FFFD (as encoding/json does, byte by byte), is want.
func sameReplaced(got []byte, want string) bool {
	var b []byte
	for len(got) > 0 {
		r, size := utf8.DecodeRune(got)
		if r == utf8.RuneError && size == 1 {
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, got[:size]...)
		}
		got = got[size:]
	}
	return string(b) == want
}

func TestDecodeEscape(t *testing.T) {
	for _, tc := range []struct {
		in string
		r  rune
		n  int
	}{
		{`\"`, '"', 2},
		{`\\`, '\\', 2},
		{`\/`, '/', 2},
		{`\b`, '\b', 2},
		{`\f`, '\f', 2},
		{`\n`, '\n', 2},
		{`\r`, '\r', 2},
		{`\t`, '\t', 2},
		{`\u0000`, 0, 6},
		{`\u00e9`, 0xe9, 6},
		{`\uD83D\uDE00`, 0x1f600, 12},
		{`\uD83D\uDE00x`, 0x1f600, 12},
		{`\uD83D`, utf8.RuneError, 6},
		{`\uD83D\uDE0`, utf8.RuneError, 6},
		{`\uD83D\u0041`, utf8.RuneError, 6},
		{`\uD83D\uD83D`, utf8.RuneError, 6},
		{`\uDE00\uD83D`, utf8.RuneError, 6},
		{`\uD83D\n`, utf8.RuneError, 6},
		{`\`, 0, 0},
		{`\u12`, 0, 0},
		{`\u12G4`, 0, 0},
		{`\'`, 0, 0},
		{`\x41`, 0, 0},
	} {
		if r, n := DecodeEscape([]byte(tc.in)); r != tc.r && tc.n != 0 || n != tc.n {
			t.Errorf("DecodeEscape(%q) = %#x, %d; want %#x, %d", tc.in, r, n, tc.r, tc.n)
		}
	}
}

func TestAppendUnescapedSeeds(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{`a\"b\\c\/d\be\ff\ng\rh\ti`, "a\"b\\c/d\be\ff\ng\rh\ti"},
		{`\u0000`, "\x00"},
		{`\u00e9\u00E9`, "éé"},
		{`\uD83D\uDE00`, "😀"},
		{`\uD83D`, "\uFFFD"},
		{`\uDE00\uD83D`, "\uFFFD\uFFFD"},
		{`\uD83D\uD83D\uDE00`, "\uFFFD😀"},
		{`\uD83D\u0041`, "\uFFFDA"},
		{`\uD83Dx\uDE00`, "\uFFFDx\uFFFD"},
	} {
		if got := AppendUnescaped(nil, []byte(tc.raw)); string(got) != tc.want {
			t.Errorf("AppendUnescaped(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}

func TestLoneSurrogate(t *testing.T) {
	for in, want := range map[string]bool{
		`\ud800`: true, `\uDFFF`: true, `\ud83d"`: true, `\ud83dx`: true, `\ud83d\u0041`: true,
		`\ud83d\ud83d\ude00`: true, `\ude00\ud83d`: true, `\ud83d\`: true, `\ud83d\ude0`: true,
		`\ud83d\ude00`: false, `\uD800\uDC00`: false, `\ufffd`: false, `\u0041`: false, `\uD7FF`: false,
		`\uE000`: false, `\ud80`: false, `\n`: false, `x`: false, ``: false,
	} {
		if got := LoneSurrogate([]byte(in)); got != want {
			t.Errorf("LoneSurrogate(%s) = %v, want %v", in, got, want)
		}
		if r, n := DecodeEscape([]byte(in)); want && (r != utf8.RuneError || n != 6) {
			t.Errorf("DecodeEscape(%s) = %q, %d: a lone surrogate is U+FFFD", in, r, n)
		}
	}
}
