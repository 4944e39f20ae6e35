package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"
)

// typical is an event as the producers write it (see Encode).
var typical = Encode(Event{Action: Add, CohortID: "cohort-0042", CohortName: "Bench_Cohort_0042",
	Partner: "bench", UIDs: []string{"aB3dE5gH7j"}})

// bulk is the bulk form of typical, with ten members.
var bulk = Encode(Event{Action: Remove, CohortID: "cohort-0042", CohortName: "Bench_Cohort_0042",
	CohortDescription: "Members of the bench cohort.", Partner: "bench",
	UIDs: []string{"aB3dE5gH7j", "bC4eF6hI8k", "cD5fG7iJ9l", "dE6gH8jK0m", "eF7hI9kL1n",
		"fG8iJ0lM2o", "gH9jK1mN3p", "hI0kL2nO4q", "iJ1lM3oP5r", "jK2mN4pQ6s"}})

// escaped is typical as json.Marshal writes a cohort whose name and
// description hold characters it escapes (& < > U+2028).
var escaped = Encode(Event{Action: Add, CohortID: "cohort-0042", CohortName: "Fans & Friends",
	CohortDescription: "Fans & friends of <bench>\u2028since 2026.", Partner: "bench", UIDs: []string{"aB3dE5gH7j"}})

// fastSeeds are inputs for FuzzDecodeFast: the shapes the fast path takes
// and, around them, everything it must leave to decodeSlow.
var fastSeeds = func() []string {
	const base = `{"action":"add_members","cohort_id":"c1","cohort_name":"Name","partner":"p","uid":"u1"}`
	s := []string{
		// Producers' events.
		string(typical),
		string(bulk),
		string(Encode(Event{Action: Add, CohortID: "c", CohortName: "n", UIDs: []string{"u"},
			OccurredAt: time.Date(2026, 11, 28, 10, 0, 0, 123456789, time.UTC)})),
		string(Encode(Event{Action: Add, CohortID: "c", CohortName: "Fans & <Friends>", Partner: "p", UIDs: []string{"u"}})),
		base,
		`{"action":"add_members","cohort_id":"JKTAuqTRhC","cohort_name":"Partner_Name","cohort_description":"A cohort of users from a partner.","partner":"6HNBXFm7ZS","uid":"mm1UR87z4T","occurred_at":"2026-11-28T10:00:00Z"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"remove","cohort_id":"c","cohort_name":"n","uid":"u"}`,
		`{"action":"remove_members","cohort_id":"c","cohort_name":".n","cohort_description":"","partner":"","uid":"u"}`,

		// workspace_id.
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":"WS_1"}`,
		`{"workspace_id":"a-b_C9","action":"add","cohort_id":"c","cohort_name":"n","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":"W\u0053"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":null}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":""}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":"_W"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":"W:1"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":"W\u00e9"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":7}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":["W"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","WORKSPACE_ID":"W"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":"A","workspace_id":"B"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":"` + strings.Repeat("W", 128) + `"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":"` + strings.Repeat("W", 129) + `"}`,

		// Members.
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["a","b","a","c","b"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"a","uids":["b","a","c","b"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["b","a"],"uid":"a"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":[]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","uids":[]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["a",""]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"","uids":["a"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["a",]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["a" "b"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":[,"a"]}`,

		// White space.
		" \t\r\n{ \"action\" : \"add\" ,\n\t\"cohort_id\"\r:\"c\" , \"cohort_name\": \"n\",\"partner\":\"p\" ,\"uids\" : [ \"a\" , \"b\" ] } \n",
		"{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"uid\":\"u\"}\n",
		"\v{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"uid\":\"u\"}",
		"{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"uid\":\"u\"}\f",
		"\xef\xbb\xbf{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"uid\":\"u\"}",
		`{"action":"add","cohort_id":"c","cohort_name":" ","partner":" ","uid":" "}`,

		// Escapes in values.
		`{"action":"add","cohort_id":"c","cohort_name":"a\"b","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","cohort_description":"caf\u00e9","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"\ud83d\ude00"}`,
		`{"action":"add","cohort_id":"a\/b","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"\ud83d"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"\ude00\ud83d"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"\u0000"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["a\tb","a\u0009b"]}`,
		`{"action":"\u0061dd","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u\q"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u\u12"}`,

		// UTF-8, valid and not.
		`{"action":"add","cohort_id":"c","cohort_name":"café 😀","partner":"p","uid":"ü"}`,
		"{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"partner\":\"p\",\"uid\":\"\xff\"}",
		"{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"partner\":\"p\",\"uids\":[\"\xed\xa0\x80\",\"\xef\xbf\xbd\"]}",
		"{\"action\":\"add\",\"cohort_id\":\"c\xc3\",\"cohort_name\":\"n\",\"partner\":\"p\",\"uid\":\"u\"}",
		"{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\u2028\",\"partner\":\"p\",\"uid\":\"u\x7f\"}",
		"{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"partner\":\"p\",\"uid\":\"u\",\"x\":\"\xff\"}",
		"{\"act\xffion\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"partner\":\"p\",\"uid\":\"u\"}",
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uidſ":["a"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uıd":"a"}`,

		// Keys in other cases, with escapes, unknown.
		`{"ACTION":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","Cohort_ID":"c","cohort_name":"n","partner":"p","UID":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","Uids":["a"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","PARTNER":"p","uid":"u","OCCURRED_AT":"2026-11-28T10:00:00Z"}`,
		`{"action":"add","CohortID":"x","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"\u0061ction":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"act\"ion":"add","action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"":"","action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,

		// Duplicate keys.
		`{"action":"upsert","action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","ACTION":"remove","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","uid":"v"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["a"],"uids":["b","c"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["a"],"uids":null}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"x","occurred_at":"2026-11-28T10:00:00Z"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","x":1,"x":2}`,

		// null.
		`null`,
		`{"action":null,"cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":null,"uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","cohort_description":null,"partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":null,"uids":["a"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":null}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["a",null]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":null}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","x":null}`,

		// Wrong types.
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":7}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":true}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":"a"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":[1,"a"]}`,
		`{"action":{},"cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":["n"],"partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":{"a":1},"uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":123}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":{"t":"2026-11-28T10:00:00Z"}}`,
		`{"action":"add","cohort_id":1.5,"cohort_name":"n","partner":"p","uid":"u"}`,
		`[1,2]`,
		`"add"`,
		`0`,
		`true`,

		// Unknown fields.
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","extra":{"x":[1,{"y":null}]}}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","extra":[]}`,
		`{"action":"add","version":2,"n":-1.5e+10,"m":0,"f":0.25E-3,"b":true,"c":false,"z":null,"s":"esc\n\u0041\"\\\/\b\f\r\t","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","n":01}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","n":-}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","n":1.}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","n":.5}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","n":+1}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","n":1e}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","n":-0.0e-0}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","n":1true}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","b":tru}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","b":nulls}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","s":"\x"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","s":"\u12g4"}`,

		// Syntax.
		base + `x`,
		base + `}`,
		base + ` {}`,
		base + "\x00",
		base + `,`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u",}`,
		`{"action":"add" "cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action" "add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{action:"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{'action':'add'}`,
		"{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\x01\",\"partner\":\"p\",\"uid\":\"u\"}",
		"{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"partner\":\"p\",\"uid\":\"u\t\"}",
		"{\"act\nion\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"partner\":\"p\",\"uid\":\"u\"}",
		`{}`,
		`{ }`,
		`[]`,
		`""`,
		`{"action":`,

		// Empty values.
		``,
		` `,
		"\n\t\r ",
		"\v",
		"\xc2\xa0",
		`{"action":"","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":""}`,
		`{"action":"Add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"upsert","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","partner":"p","uid":"u"}`,

		// occurred_at.
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"2026-11-28T10:00:00Z"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"2026-11-28T10:00:00.123456789+02:00"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"2026-11-28T10:00:00-00:00"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"2026-11-28T10:00:00.5-07:30"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"2026-11-28t10:00:00z"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"2026-11-28 10:00:00Z"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"2026-02-30T10:00:00Z"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"2026-11-28T24:00:00Z"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"2026-11-28T10:00:00"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"10000-11-28T10:00:00Z"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"2026\u002d11-28T10:00:00Z"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":""}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"yesterday"}`,
	}
	// Truncated documents.
	for _, n := range []int{1, 2, 10, 11, 12, 22, 40, len(base) - 2, len(base) - 1} {
		s = append(s, base[:n])
	}
	// Forbidden characters.
	for _, c := range ForbiddenNameChars {
		name := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace("a" + string(c) + "b")
		s = append(s, `{"action":"add","cohort_id":"c","cohort_name":"`+name+`","partner":"p","uid":"u"}`)
	}
	// More members than dedupeSpans compares pairwise.
	var uids []string
	for i := range 80 {
		uids = append(uids, fmt.Sprintf("%q", fmt.Sprint("u", i%50)))
	}
	s = append(s, `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u7","uids":[`+strings.Join(uids, ",")+`]}`)

	// Every kind of escape sequence, valid or not, in every string field.
	for _, e := range escapeSeeds {
		for _, field := range []string{"action", "cohort_id", "cohort_name", "cohort_description", "partner", "uid", "uids", "occurred_at", "x"} {
			s = append(s, withEscape(field, e))
		}
	}
	// Text that encoding/json turns into U+FFFD (bytes that are not valid
	// UTF-8, lone surrogate escapes), in every string field, a key and an
	// unknown field: decodeSlow rejects it (text.go).
	for _, e := range []string{"a\xffb", "a\xfeb", "\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80", `a\ud800b`, `\udc00`, `\ud800\u0041`} {
		for _, field := range []string{"action", "cohort_id", "cohort_name", "cohort_description", "partner", "uid", "uids", "occurred_at", "x"} {
			s = append(s, withEscape(field, e))
		}
		s = append(s, `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","`+e+`":1}`,
			`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","UID":"`+e+`"}`,
			`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"`+e+`","uid":"u"}`,
			`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","x":{"`+e+`":["`+e+`"]}}`,
			`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["a",null,"`+e+`"]}`)
	}
	// Escapes that stand for a forbidden character.
	for _, c := range ForbiddenNameChars {
		for _, e := range []string{fmt.Sprintf(`\u%04x`, c), fmt.Sprintf(`\u%04X`, c)} {
			s = append(s, `{"action":"add","cohort_id":"c","cohort_name":"a`+e+`b","partner":"p","uid":"u"}`)
		}
	}
	s = append(s,
		`{"action":"add","cohort_id":"c","cohort_name":"a\\b","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"Fans \u0026 Friends \u003cVIP\u003e","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"Fans \u0026 Friends","cohort_description":"\u003cVIP\u003e","partner":"p","uid":"u"}`,
	)
	// Escapes that make members equal, or not.
	s = append(s,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["a&b","a\u0026b","a\u0026b","a\\u0026b"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"\u0061","uids":["a","\u0041","\u0061"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["\ud83d","\ufffd","\ude00","\uFFFD","�"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["\ud83d\ude00","😀","\uD83D\uDE00","\ud83d\ude01"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["\/","/","\"","\\"]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["\u0000","\u0000\u0000",""]}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"\u0000","uids":["\u0000"]}`,
	)
	uids = uids[:0]
	for i := range 80 {
		if i%3 == 0 {
			uids = append(uids, fmt.Sprintf(`"\u0075%d\u00e9"`, i%50))
		} else {
			uids = append(uids, fmt.Sprintf(`"u%dé"`, i%50))
		}
	}
	s = append(s, `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u7\u00e9","uids":[`+strings.Join(uids, ",")+`]}`)
	// Truncated inside an escape sequence.
	esc := withEscape("cohort_name", `\ud83d\ude00\u0026\n`)
	for i := strings.Index(esc, `\`); i < strings.LastIndex(esc, `\`)+3; i++ {
		s = append(s, esc[:i], esc[:i]+`","partner":"p","uid":"u"}`)
	}
	// Long escaped values, past the scratch space of decodeFast.
	s = append(s, withEscape("cohort_description", strings.Repeat(`\u00e9\ud83d\ude00&`, 40)),
		withEscape("uid", strings.Repeat(`\u2028x`, 100)))
	return s
}()

// escapeSeeds are the contents of strings with escape sequences for
// fastSeeds: valid ones, which the fast path decodes, and invalid ones,
// which it leaves to decodeSlow.
var escapeSeeds = []string{
	`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`,
	`\u0026`, `\u003c`, `\u003e`, `\u003C`, `\u003E`, `\u2028`, `\u2029`,
	`\u0041dd`, `\u0061`, `\u00e9`, `\u00E9`, `caf\u00e9 \u00c9t\u00C9`, `\u0000`, `\u001f`, `\u007f`, `\u0080`,
	`\u07ff`, `\u0800`, `\ufffd`, `\uffff`, `\uFEFF`, `\uabcd\uABCD\uAbCd`,
	`\ud83d\ude00`, `\uD83D\uDE00`, `\ud800\udc00`, `\udbff\udfff`, `x\ud83d\ude00y`,
	`\ud83d`, `\udbff`, `\ude00`, `\udfff`, `\ude00\ud83d`, `\ud83d\ud83d\ude00`, `\ud83d\u0041`,
	`\ud83dx`, `\ud83d\n`, `\ud83d\`, `\ud83d\u`, `\ud83d\ude0`, `\ud83d\udeXX`, `\ud83d\uDe00`,
	`\udc00\udc00`, `\ud800\ud800`, `a\ud800`,
	"\\u0026\xff", "\\u0026\xed\xa0\x80", "\xc3\\u0026", "é\\n😀", "\\n\x01", "\\n\t", "\\n\x7f",
	`\u12`, `\u12g4`, `\uXXXX`, `\u`, `\u-123`, `\u+123`, `\u 123`, `\U0041`, `\x41`, `\'`, `\a`, `\0`,
	`\v`, `\e`, `\ `, `\`, `a\`, `\\\`,
}

// withEscape returns an event whose field has the value "e" (with e
// inside the quotes as it is, escapes and all). uids gets e as its second
// element; x is an unknown field.
func withEscape(field, e string) string {
	vals := map[string]string{"action": "add", "cohort_id": "c", "cohort_name": "n", "partner": "p", "uid": "u"}
	var b strings.Builder
	b.WriteString("{")
	for _, k := range []string{"action", "cohort_id", "cohort_name", "cohort_description", "partner", "uid", "uids", "occurred_at", "x"} {
		v, ok := vals[k]
		if k == field {
			v, ok = e, true
		}
		switch {
		case !ok:
			continue
		case k == "uids":
			fmt.Fprintf(&b, `"uids":["a","%s"],`, v)
		case k == "occurred_at":
			fmt.Fprintf(&b, `"occurred_at":"2026-11-28T10:00:00%sZ",`, v)
		default:
			fmt.Fprintf(&b, `"%s":"%s",`, k, v)
		}
	}
	return strings.TrimSuffix(b.String(), ",") + "}"
}

// fuzzPartners are the default partners FuzzDecodeFast decodes with.
var fuzzPartners = []string{"", "default-partner"}

// FuzzDecodeFast checks the fast path against decodeSlow: whatever the fast
// path accepts, decodeSlow accepts as the same Event, and Decode and a
// Decoder return what decodeSlow returns, errors included.
func FuzzDecodeFast(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, partner := range fuzzPartners {
			want, wantErr := decodeSlow(data, partner)
			if ev, ok := decodeFast(data, partner); ok {
				if wantErr != nil {
					t.Fatalf("partner %q: the fast path accepted %q as %+v; decodeSlow: %v", partner, data, ev, wantErr)
				}
				if d := diffEvent(ev, want); d != "" {
					t.Fatalf("partner %q: for %q the fast path differs from decodeSlow: %s", partner, data, d)
				}
			}
			ev, err := Decode(data, partner)
			if d := diffResult(ev, err, want, wantErr); d != "" {
				t.Fatalf("partner %q: for %q Decode differs from decodeSlow: %s", partner, data, d)
			}
			dec := NewDecoder(partner)
			for i := range 2 { // the second time from the intern cache
				ev, err := dec.Decode(data)
				if d := diffResult(ev, err, want, wantErr); d != "" {
					t.Fatalf("partner %q: for %q Decoder.Decode (call %d) differs from decodeSlow: %s", partner, data, i+1, d)
				}
			}
		}
	})
}

// diffResult describes how (ev, err) differs from (want, wantErr), or
// returns "".
func diffResult(ev Event, err error, want Event, wantErr error) string {
	switch {
	case err == nil && wantErr == nil:
		return diffEvent(ev, want)
	case err == nil || wantErr == nil:
		return fmt.Sprintf("error %v, want %v (event %+v, want %+v)", err, wantErr, ev, want)
	}
	if errors.Is(wantErr, ErrTombstone) != errors.Is(err, ErrTombstone) {
		return fmt.Sprintf("error %v, want %v", err, wantErr)
	}
	var inv, wantInv *InvalidError
	if errors.As(err, &inv) != errors.As(wantErr, &wantInv) || err.Error() != wantErr.Error() ||
		inv != nil && (inv.Reason != wantInv.Reason || inv.Detail != wantInv.Detail) {
		return fmt.Sprintf("error %#v, want %#v", err, wantErr)
	}
	if !reflect.DeepEqual(ev, Event{}) {
		return fmt.Sprintf("event %+v with error %v", ev, err)
	}
	return ""
}

// diffEvent describes how ev differs from want, or returns "".
func diffEvent(ev, want Event) string {
	if !ev.OccurredAt.Equal(want.OccurredAt) || ev.OccurredAt.Location().String() != want.OccurredAt.Location().String() ||
		ev.OccurredAt.Format(time.RFC3339Nano) != want.OccurredAt.Format(time.RFC3339Nano) {
		return fmt.Sprintf("occurred_at %v, want %v", ev.OccurredAt, want.OccurredAt)
	}
	ev.OccurredAt, want.OccurredAt = time.Time{}, time.Time{}
	if !reflect.DeepEqual(ev, want) {
		return fmt.Sprintf("event %+v, want %+v", ev, want)
	}
	return ""
}

// TestDecodeFastTakesCommonInputs keeps the fast path from quietly leaving
// everything to decodeSlow.
func TestDecodeFastTakesCommonInputs(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Event
	}{
		{name: "typical", in: string(typical),
			want: Event{Action: Add, CohortID: "cohort-0042", CohortName: "Bench_Cohort_0042", Partner: "bench", UIDs: []string{"aB3dE5gH7j"}}},
		{name: "bulk", in: string(bulk),
			want: Event{Action: Remove, CohortID: "cohort-0042", CohortName: "Bench_Cohort_0042", CohortDescription: "Members of the bench cohort.",
				Partner: "bench", UIDs: []string{"aB3dE5gH7j", "bC4eF6hI8k", "cD5fG7iJ9l", "dE6gH8jK0m", "eF7hI9kL1n",
					"fG8iJ0lM2o", "gH9jK1mN3p", "hI0kL2nO4q", "iJ1lM3oP5r", "jK2mN4pQ6s"}}},
		{name: "white space",
			in:   " \t\r\n{ \"action\" : \"add\" ,\n\t\"cohort_id\"\r:\"c\" , \"cohort_name\": \"n\",\"partner\":\"p\" ,\"uids\" : [ \"a\" , \"b\" ] } \n",
			want: Event{Action: Add, CohortID: "c", CohortName: "n", Partner: "p", UIDs: []string{"a", "b"}}},
		{name: "uid and uids deduplicated",
			in:   `{"uids":["b","a","c","b"],"action":"remove_members","cohort_id":"c","cohort_name":"n","partner":"p","uid":"a"}`,
			want: Event{Action: Remove, CohortID: "c", CohortName: "n", Partner: "p", UIDs: []string{"a", "b", "c"}}},
		{name: "default partner", in: `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"","uid":"u"}`,
			want: Event{Action: Add, CohortID: "c", CohortName: "n", Partner: "default-partner", UIDs: []string{"u"}}},
		{name: "occurred_at",
			in: `{"action":"add_members","cohort_id":"JKTAuqTRhC","cohort_name":"Partner_Name","cohort_description":"A cohort of users from a partner.","partner":"6HNBXFm7ZS","uid":"mm1UR87z4T","occurred_at":"2026-11-28T10:00:00.5+02:00"}`,
			want: Event{Action: Add, CohortID: "JKTAuqTRhC", CohortName: "Partner_Name", CohortDescription: "A cohort of users from a partner.",
				Partner: "6HNBXFm7ZS", UIDs: []string{"mm1UR87z4T"}, OccurredAt: time.Date(2026, 11, 28, 10, 0, 0, 5e8, time.FixedZone("", 2*3600))}},
		{name: "unknown scalars skipped",
			in:   `{"version":2,"action":"add","n":-1.5e+10,"b":true,"z":null,"s":"esc\n\u00e9\"","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
			want: Event{Action: Add, CohortID: "c", CohortName: "n", Partner: "p", UIDs: []string{"u"}}},
		{name: "workspace_id", in: `{"workspace_id":"WS_1","action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
			want: Event{Action: Add, CohortID: "c", CohortName: "n", Partner: "p", UIDs: []string{"u"}, Workspace: "WS_1"}},
		{name: "UTF-8", in: `{"action":"add","cohort_id":"c","cohort_name":"café 😀","partner":"p","uid":"ü"}`,
			want: Event{Action: Add, CohortID: "c", CohortName: "café 😀", Partner: "p", UIDs: []string{"ü"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, ok := decodeFast([]byte(tc.in), "default-partner")
			if !ok {
				t.Fatal("the fast path left the input to decodeSlow")
			}
			if d := diffEvent(ev, tc.want); d != "" {
				t.Fatal(d)
			}
			want, err := decodeSlow([]byte(tc.in), "default-partner")
			if err != nil {
				t.Fatal(err)
			}
			if d := diffEvent(ev, want); d != "" {
				t.Fatalf("differs from decodeSlow: %s", d)
			}
		})
	}
}

// TestDecodeFastTakesEscapes keeps the fast path taking strings with escape
// sequences, as json.Marshal writes them (it escapes &, <, >, U+2028, U+2029,
// control characters and invalid UTF-8) and as other producers do.
func TestDecodeFastTakesEscapes(t *testing.T) {
	marshal := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name string
		in   string
		want Event
	}{
		{name: "Encode &", in: string(Encode(Event{Action: Add, CohortID: "c&1", CohortName: "Fans & Friends", Partner: "p&q", UIDs: []string{"u&1"}})),
			want: Event{Action: Add, CohortID: "c&1", CohortName: "Fans & Friends", Partner: "p&q", UIDs: []string{"u&1"}}},
		{name: "Encode escaped", in: string(escaped),
			want: Event{Action: Add, CohortID: "cohort-0042", CohortName: "Fans & Friends", CohortDescription: "Fans & friends of <bench>\u2028since 2026.",
				Partner: "bench", UIDs: []string{"aB3dE5gH7j"}}},
		{name: "json.Marshal", in: marshal(map[string]any{"action": "add_members", "cohort_id": "<c>", "cohort_name": "A & B\u2028\u2029",
			"cohort_description": "<b>\"quoted\"</b>\n\t\r\b\f\x00\x1f\x7f é 😀 \xff", "partner": "p>", "uids": []string{"<a>", "a&b", "\u2029", "\xff", "\ufffd"}}),
			want: Event{Action: Add, CohortID: "<c>", CohortName: "A & B\u2028\u2029", CohortDescription: "<b>\"quoted\"</b>\n\t\r\b\f\x00\x1f\x7f é 😀 \ufffd",
				Partner: "p>", UIDs: []string{"<a>", "a&b", "\u2029", "\ufffd"}}},
		{name: "short escapes",
			in:   `{"action":"add","cohort_id":"a\/b\\c","cohort_name":"\/\b\f\n\r\t","cohort_description":"\"\\\/","partner":"p","uid":"\"u\""}`,
			want: Event{Action: Add, CohortID: `a/b\c`, CohortName: "/\b\f\n\r\t", CohortDescription: `"\/`, Partner: "p", UIDs: []string{`"u"`}}},
		{name: "\\u, either case",
			in:   `{"action":"add","cohort_id":"caf\u00e9","cohort_name":"CAF\u00C9 \u00c9t\u00E9 \u4e16\u754C","partner":"\u0070","uid":"\u0000\u001F\u007f\uFFFF"}`,
			want: Event{Action: Add, CohortID: "café", CohortName: "CAFÉ Été 世界", Partner: "p", UIDs: []string{"\x00\x1f\x7f\uffff"}}},
		{name: "surrogate pairs", // lone surrogates: TestDecodeRejectsCollapsingText
			in: `{"action":"add","cohort_id":"\ud83d\ude00","cohort_name":"\uD83D\uDE00\ud800\udc00\udbff\udfff","cohort_description":"\ud83D\uDe00|\ufffd|\uFFFD",` +
				`"partner":"p","uids":["\ufffd","\ud83d\ude00","😀","\uFFFD"]}`,
			want: Event{Action: Add, CohortID: "😀", CohortName: "😀\U00010000\U0010ffff",
				CohortDescription: "😀|\ufffd|\ufffd", Partner: "p", UIDs: []string{"\ufffd", "😀"}}},
		{name: "uids deduplicated unescaped",
			in:   `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"a\u0026b","uids":["a&b","\u0061\u0026b","x","\u0078","a\\u0026b"]}`,
			want: Event{Action: Add, CohortID: "c", CohortName: "n", Partner: "p", UIDs: []string{"a&b", "x", `a\u0026b`}}},
		{name: "occurred_at",
			in: `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"2026\u002d11-28T10\u003a00:00.5\u002B02:00"}`,
			want: Event{Action: Add, CohortID: "c", CohortName: "n", Partner: "p", UIDs: []string{"u"},
				OccurredAt: time.Date(2026, 11, 28, 10, 0, 0, 5e8, time.FixedZone("", 2*3600))}},
		{name: "default partner", in: `{"action":"\u0061dd","cohort_id":"c","cohort_name":"\u006e","partner":"","uid":"\u0075"}`,
			want: Event{Action: Add, CohortID: "c", CohortName: "n", Partner: "default-partner", UIDs: []string{"u"}}},
		{name: "long", in: withEscape("cohort_description", strings.Repeat(`\u00e9\ud83d\ude00&`, 40)),
			want: Event{Action: Add, CohortID: "c", CohortName: "n", CohortDescription: strings.Repeat("é😀&", 40), Partner: "p", UIDs: []string{"u"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			if !strings.Contains(tc.in, `\`) {
				t.Fatalf("%s has no escape sequence", in)
			}
			want, err := decodeSlow(in, "default-partner")
			if err != nil {
				t.Fatal(err)
			}
			if d := diffEvent(want, tc.want); d != "" {
				t.Fatalf("decodeSlow: %s", d)
			}
			ev, ok := decodeFast(in, "default-partner")
			if !ok {
				t.Fatalf("the fast path left %s to decodeSlow", in)
			}
			if d := diffEvent(ev, want); d != "" {
				t.Fatalf("differs from decodeSlow: %s", d)
			}
			d := NewDecoder("default-partner")
			for i := range 2 { // the second time from the intern cache
				f, ok := scanEvent(in, nil, nil)
				if ok {
					ev, ok = d.build(&f, in)
				}
				if !ok {
					t.Fatalf("call %d: the Decoder left %s to decodeSlow", i+1, in)
				}
				if d := diffEvent(ev, want); d != "" {
					t.Fatalf("call %d: the Decoder differs from decodeSlow: %s", i+1, d)
				}
			}
		})
	}
}

// TestDecodeFastEscapeCombinations decodes members made of two or three
// pieces of strings, valid and invalid escape sequences among them, with the
// fast path and decodeSlow: they must agree, and the fast path must take
// every valid one (of valid UTF-8).
func TestDecodeFastEscapeCombinations(t *testing.T) {
	pieces := []string{`a`, `é`, "\xff", "\x01", `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\'`, `\x`, `\`,
		`\u0026`, `\u00E9`, `\u0000`, `\u12`, `\u12g4`, `\u`, `\ud83d`, `\uD83D`, `\ude00`, `\uDE00`, `\udbff`, `\udc00`, `\ufffd`}
	n, took := 0, 0
	check := func(uid string) {
		n++
		in := []byte(`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"` + uid + `"}`)
		want, wantErr := decodeSlow(in, "")
		ev, ok := decodeFast(in, "")
		switch {
		case ok && wantErr != nil:
			t.Fatalf("%s: the fast path took it; decodeSlow: %v", in, wantErr)
		case ok:
			took++
			if d := diffEvent(ev, want); d != "" {
				t.Fatalf("%s: %s", in, d)
			}
		case wantErr == nil && utf8.Valid(in):
			t.Fatalf("%s: the fast path left it to decodeSlow", in)
		}
	}
	for _, a := range pieces {
		for _, b := range pieces {
			check(a + b)
			for _, c := range pieces {
				check(a + b + c)
			}
		}
	}
	t.Logf("%d members, %d taken by the fast path", n, took)
}

// TestDecoderInternsUnescaped checks that the Decoder interns header strings
// by their values, escaped or not, and that an escaped known cohort costs no
// more than a plain one.
func TestDecoderInternsUnescaped(t *testing.T) {
	d := NewDecoder("")
	plain, err := d.Decode([]byte(`{"action":"add","cohort_id":"c&1","cohort_name":"Fans & Friends","partner":"p","uid":"u"}`))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := d.Decode(Encode(plain))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(Encode(plain)), `\u0026`) {
		t.Fatalf("Encode wrote %s", Encode(plain))
	}
	for _, s := range [][2]string{{ev.CohortID, plain.CohortID}, {ev.CohortName, plain.CohortName}} {
		if s[0] != s[1] || unsafe.StringData(s[0]) != unsafe.StringData(s[1]) {
			t.Fatalf("%q is not the interned %q", s[0], s[1])
		}
	}
	if _, err := d.Decode(escaped); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := d.Decode(escaped); err != nil {
			t.Fatal(err)
		}
	}); n != 1 {
		t.Errorf("Decode of a known escaped cohort allocates %v times, want 1 (the uid)", n)
	}
}

// TestDecodeFastLeavesToSlow lists inputs that decodeSlow accepts and the
// fast path leaves to it, each for a quirk of encoding/json.
func TestDecodeFastLeavesToSlow(t *testing.T) {
	const tail = `"cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`
	for _, in := range []string{
		`{"\u0061ction":"add",` + tail,                      // an escape in a key
		`{"ACTION":"add",` + tail,                           // a key in another case
		`{"action":"upsert","action":"add",` + tail,         // the last duplicate wins
		`{"action":"add","cohort_description":null,` + tail, // null is absence
		`{"action":"add","workspace_id":null,` + tail,       // null is absence
		`{"action":"add","x":{"y":1},` + tail,               // a nested unknown value
		`{"action":"add","uidſ":["v"],` + tail,              // ſ folds to s
	} {
		if _, err := decodeSlow([]byte(in), ""); err != nil {
			t.Fatalf("%s: decodeSlow: %v", in, err)
		}
		if _, ok := decodeFast([]byte(in), ""); ok {
			t.Errorf("%s: the fast path took it", in)
		}
	}
}

// TestFieldNames keeps fieldNames in step with the JSON names of raw.
func TestFieldNames(t *testing.T) {
	rt := reflect.TypeFor[raw]()
	var names []string
	for i := range rt.NumField() {
		names = append(names, rt.Field(i).Tag.Get("json"))
	}
	if !slices.Equal(names, fieldNames[:]) {
		t.Fatalf("raw has the JSON names %q, fieldNames %q", names, fieldNames)
	}
}

func TestDecoderInterns(t *testing.T) {
	d := NewDecoder("")
	first, err := d.Decode(bulk)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		ev, err := d.Decode(slices.Clone(bulk))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range [][2]string{{ev.Partner, first.Partner}, {ev.CohortID, first.CohortID},
			{ev.CohortName, first.CohortName}, {ev.CohortDescription, first.CohortDescription}} {
			if s[0] != s[1] || unsafe.StringData(s[0]) != unsafe.StringData(s[1]) {
				t.Fatalf("%q is not the interned %q", s[0], s[1])
			}
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := d.Decode(typical); err != nil {
			t.Fatal(err)
		}
	}); n != 1 {
		t.Errorf("Decode of a known cohort allocates %v times, want 1 (the uid)", n)
	}

	// workspace_id is interned too, and read by the fast path.
	ws := Encode(Event{Action: Add, CohortID: "cohort-0042", CohortName: "Bench_Cohort_0042",
		Partner: "bench", UIDs: []string{"aB3dE5gH7j"}, Workspace: "ABCDEFGHIJKLMNOPQRSTUVWX"})
	wsFirst, err := d.Decode(slices.Clone(ws))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := d.Decode(ws)
	if err != nil || ev.Workspace != "ABCDEFGHIJKLMNOPQRSTUVWX" || unsafe.StringData(ev.Workspace) != unsafe.StringData(wsFirst.Workspace) {
		t.Fatalf("Workspace %q (err %v) is not the interned %q", ev.Workspace, err, wsFirst.Workspace)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := d.Decode(ws); err != nil {
			t.Fatal(err)
		}
	}); n != 1 {
		t.Errorf("Decode of a known cohort and workspace allocates %v times, want 1 (the uid)", n)
	}
}

func TestDecoderInternBounded(t *testing.T) {
	d := NewDecoder("p")
	long := strings.Repeat("d", maxInternLen+1)
	for i := range 3 * maxInterned {
		in := fmt.Sprintf(`{"action":"add","cohort_id":"cohort-%d","cohort_name":"Name_%d","cohort_description":%q,"uid":"u"}`, i, i, long)
		ev, err := d.Decode([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if ev.CohortID != fmt.Sprint("cohort-", i) || ev.CohortDescription != long {
			t.Fatalf("decoded %+v", ev)
		}
		if len(d.strs) > maxInterned || d.strBytes > maxInternedBytes {
			t.Fatalf("after %d cohorts the cache holds %d strings, %d bytes", i+1, len(d.strs), d.strBytes)
		}
	}
	if _, ok := d.strs[long]; ok {
		t.Error("a string longer than maxInternLen was interned")
	}
	d = NewDecoder("p")
	name := strings.Repeat("n", maxInternLen)
	for i := range 2 * maxInternedBytes / maxInternLen {
		in := fmt.Sprintf(`{"action":"add","cohort_id":"c","cohort_name":"%s%d","uid":"u"}`, name, i)
		if _, err := d.Decode([]byte(in)); err != nil {
			t.Fatal(err)
		}
		if d.strBytes > maxInternedBytes {
			t.Fatalf("the cache holds %d bytes", d.strBytes)
		}
	}
}

// TestDecoderReusesUIDs documents the contract of Decoder.Decode on UIDs.
func TestDecoderReusesUIDs(t *testing.T) {
	d := NewDecoder("")
	ev1, err := d.Decode([]byte(`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["a","b"]}`))
	if err != nil {
		t.Fatal(err)
	}
	kept, a := slices.Clone(ev1.UIDs), ev1.UIDs[0]
	if cap(ev1.UIDs) != len(ev1.UIDs) {
		t.Errorf("cap(UIDs) = %d, len %d: appending would write into the Decoder's memory", cap(ev1.UIDs), len(ev1.UIDs))
	}
	ev2, err := d.Decode([]byte(`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":["x","y"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if &ev1.UIDs[0] != &ev2.UIDs[0] {
		t.Error("the UIDs slice was not reused")
	}
	if !slices.Equal(ev1.UIDs, []string{"x", "y"}) || !slices.Equal(kept, []string{"a", "b"}) || a != "a" {
		t.Errorf("after the next call: UIDs %q, copy %q, string %q", ev1.UIDs, kept, a)
	}
	// A shorter event clears the rest of the slice, so that the Decoder
	// does not keep the strings of earlier events alive.
	if _, err := d.Decode(typical); err != nil {
		t.Fatal(err)
	}
	if ev2.UIDs[1] != "" {
		t.Errorf("the Decoder still holds %q", ev2.UIDs[1])
	}
	// Decode itself returns a fresh slice each time.
	e1, _ := Decode(typical, "")
	e2, _ := Decode(typical, "")
	if &e1.UIDs[0] == &e2.UIDs[0] {
		t.Error("Decode reused its UIDs slice")
	}
}

// BenchmarkDecodeSlow is BenchmarkDecode with encoding/json alone.
func BenchmarkDecodeSlow(b *testing.B) {
	v := []byte(`{"action":"add_members","cohort_id":"JKTAuqTRhC","cohort_name":"Partner_Name","partner":"6HNBXFm7ZS","uid":"mm1UR87z4T","occurred_at":"2026-11-28T10:00:00Z"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		if _, err := decodeSlow(v, ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecoder(b *testing.B)     { benchmarkDecoder(b, typical) }
func BenchmarkDecoderBulk(b *testing.B) { benchmarkDecoder(b, bulk) }

// BenchmarkDecoderEscaped is BenchmarkDecoder for an event with escapes in
// its header strings, as json.Marshal writes "&", "<", ">" and U+2028.
func BenchmarkDecoderEscaped(b *testing.B) { benchmarkDecoder(b, escaped) }

func benchmarkDecoder(b *testing.B, v []byte) {
	d := NewDecoder("")
	b.ReportAllocs()
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		if _, err := d.Decode(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBulk(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(bulk)))
	for b.Loop() {
		if _, err := Decode(bulk, ""); err != nil {
			b.Fatal(err)
		}
	}
}
