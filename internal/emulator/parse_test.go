package emulator

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// validators are every validation policy: each leading-period rule, with
// and without strict mode.
var validators = func() []validator {
	var out []validator
	for _, strict := range []bool{false, true} {
		for _, lp := range []string{LeadingPeriodReject, LeadingPeriodRequire, LeadingPeriodIgnore} {
			out = append(out, validator{leadingPeriod: lp, strict: strict})
		}
	}
	return out
}()

// checkParse checks the contract of parseFast and parse against parseSlow
// for body under v: when parseFast succeeds, parseSlow accepts the body and
// returns the same request; parse always returns what parseSlow returns.
// It reports whether parseFast succeeded, and parseSlow's error.
func checkParse(t *testing.T, v validator, body []byte) (fastOK bool, slowErr *apiError) {
	t.Helper()
	slowReq, slowErr := v.parseSlow(body)
	fastReq, ok := v.parseFast(body)
	if ok {
		if slowErr != nil {
			t.Fatalf("%+v: parseFast accepted a body parseSlow rejects (%+v): %q", v, *slowErr, body)
		}
		if !reflect.DeepEqual(fastReq, slowReq) {
			t.Fatalf("%+v: parseFast = %#v, parseSlow = %#v for %q", v, fastReq, slowReq, body)
		}
	} else if !reflect.DeepEqual(fastReq, cohortRequest{}) {
		t.Fatalf("%+v: parseFast failed but returned %#v", v, fastReq)
	}
	req, aerr := v.parse(body)
	if !reflect.DeepEqual(req, slowReq) {
		t.Fatalf("%+v: parse = %#v, parseSlow = %#v for %q", v, req, slowReq, body)
	}
	if (aerr == nil) != (slowErr == nil) || aerr != nil && *aerr != *slowErr {
		t.Fatalf("%+v: parse error = %+v, parseSlow error = %+v for %q", v, aerr, slowErr, body)
	}
	return ok, slowErr
}

// appendBody encodes r as the worker does.
func appendBody(r wire.Request) []byte { return wire.AppendBody(nil, r) }

// wireRequests are requests whose bodies parseFast must decode: plain
// ones, and ones with every escape AppendQuoted writes and non-ASCII text
// in each string field (cohort_name cannot hold '"' or '\\', which are
// forbidden characters).
var wireRequests = []wire.Request{
	{Header: wire.Header{Action: event.Add, Partner: "6HNBXFm7ZS", CohortID: "JKTAuqTRhC", CohortName: "Partner_Name",
		CohortDescription: "A cohort of users from a partner."}, UIDs: []string{"mm1UR87z4T", "AtCxliflui"}},
	{Header: wire.Header{Action: event.Remove, Partner: "p", CohortID: "c", CohortName: "n"}, UIDs: []string{"u"}},
	{Header: wire.Header{Action: event.Add, Partner: `p"a\r` + "\n\t\x00\x1f\x7f", CohortID: "id/\u2028\u2029", CohortName: "N\n\t\x01 (x) [y] ünï 😀",
		CohortDescription: "d\"\\\b\f\xff\xfe end"}, UIDs: []string{`"`, `\`, "\xff", "ü", "😀", "\u2028", "a\x00b", "</script>"}},
	{Header: wire.Header{Action: event.Add, Partner: "p", CohortID: "c", CohortName: "\xc3\x28"}, UIDs: []string{"\xed\xa0\x80", "\xf4\x90\x80\x80"}},
}

// TestParseFastTakesAppendBody checks that parseFast, not the fallback,
// decodes what the worker sends, to the request that was encoded.
func TestParseFastTakesAppendBody(t *testing.T) {
	v := validator{leadingPeriod: LeadingPeriodReject}
	for _, r := range wireRequests {
		body := appendBody(r)
		req, ok := v.parseFast(body)
		if !ok {
			t.Fatalf("parseFast gave up on AppendBody output %q", body)
		}
		checkParse(t, v, body)
		// AppendQuoted sends invalid UTF-8 as U+FFFD.
		dec := decodeLikeAppendQuoted
		want := cohortRequest{Action: string(r.Action), Partner: dec(r.Partner), CohortID: dec(r.CohortID),
			CohortName: dec(r.CohortName), Description: dec(r.CohortDescription), HasDescription: r.CohortDescription != ""}
		for _, u := range r.UIDs {
			want.Members = append(want.Members, dec(u))
		}
		if !reflect.DeepEqual(req, want) {
			t.Errorf("parseFast(%q)\n = %#v\nwant %#v", body, req, want)
		}
	}

	// The full-size body of the benchmark, under every policy that accepts
	// its cohort_name.
	body := appendBody(benchRequest(rand.New(rand.NewPCG(1, 2)), event.Add, "c1"))
	for _, v := range validators {
		if ok, slowErr := checkParse(t, v, body); !ok && slowErr == nil {
			t.Errorf("%+v: parseFast gave up on a full AppendBody body", v)
		}
	}
	dotted := appendBody(wire.Request{Header: wire.Header{Action: event.Add, Partner: "p", CohortID: "c", CohortName: ".N"}, UIDs: []string{"u"}})
	if ok, _ := checkParse(t, validator{leadingPeriod: LeadingPeriodRequire}, dotted); !ok {
		t.Error("parseFast gave up on a leading period the policy requires")
	}
}

// decodeLikeAppendQuoted is what s reads back as after AppendQuoted, with
// encoding/json: each byte of invalid UTF-8 becomes U+FFFD.
func decodeLikeAppendQuoted(s string) string {
	var back string
	if err := json.Unmarshal(wire.AppendQuoted(nil, s), &back); err != nil {
		panic(err)
	}
	return back
}

// TestParseDoesNotRetainBody checks that the request does not share memory
// with the body, whose buffer the emulator reuses.
func TestParseDoesNotRetainBody(t *testing.T) {
	v := validator{leadingPeriod: LeadingPeriodReject}
	for _, r := range wireRequests {
		body := appendBody(r)
		req, aerr := v.parse(body)
		if aerr != nil {
			t.Fatalf("parse(%q): %+v", body, *aerr)
		}
		want, _ := v.parseSlow(body)
		for i := range body {
			body[i] = 'x'
		}
		if !reflect.DeepEqual(req, want) {
			t.Fatalf("request changed with its body: %#v, want %#v", req, want)
		}
	}
}

// TestParseFastFallsBack checks bodies that parseFast leaves to parseSlow
// although some are valid, so that the test notices if it starts to take
// them without FuzzParseFast having run.
func TestParseFastFallsBack(t *testing.T) {
	v := validator{leadingPeriod: LeadingPeriodReject}
	for _, s := range []string{
		"{}",
		`{"action":"add_members","action":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}]}}`,
		`{"\u0061ction":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}]}}`,
		`{"action":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","cohort_description":null,"members":[{"uid":"u"}]}}`,
		`{"action":"add_members","partner":"p","extra":1,"parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}]}}`,
		`{"action":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u","x":1}]}}`,
		`{"action":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u","uid":"v"}]}}`,
		`{"action":"add_members","partner":"p","parameters":{"cohort_name":".N","cohort_id":"c","members":[{"uid":"u"}]}}`,
		`{"action":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[]}}`,
	} {
		if _, ok := v.parseFast([]byte(s)); ok {
			t.Errorf("parseFast took %s", s)
		}
		checkParse(t, v, []byte(s))
	}
}

// fuzzBody builds a body in AppendBody's shape from raw JSON values.
func fuzzBody(action, partner, name, id, members string) string {
	return `{"action":` + action + `,"partner":` + partner + `,"parameters":{"cohort_name":` + name +
		`,"cohort_id":` + id + `,"members":` + members + `}}`
}

// fuzzParams and fuzzWithMembers mirror params and withMembers of the
// external tests, for the seeds of FuzzRequest.
func fuzzParams(p string) string {
	return `{"action":"add_members","partner":"p","parameters":` + p + `}`
}

func fuzzWithMembers(m string) string {
	return fuzzParams(`{"cohort_name":"N","cohort_id":"c","members":` + m + `}`)
}

// parseSeeds are the seeds of FuzzParseFast.
func parseSeeds() []string {
	const (
		exampleAdd    = `{"action": "add_members", "partner": "6HNBXFm7ZS", "parameters": {"cohort_name": "Partner_Name", "cohort_id": "JKTAuqTRhC", "cohort_description": "A cohort of users from a partner.", "members": [{"uid": "mm1UR87z4T"}, {"uid": "AtCxliflui"}]}}`
		exampleRemove = `{"action": "remove_members", "partner": "6HNBXFm7ZS", "parameters": {"cohort_name": "Partner_Name", "cohort_id": "JKTAuqTRhC", "cohort_description": "A cohort of users from a partner.", "members": [{"uid": "mm1UR87z4T"}]}}`
		fuzzMaxBody   = 2048
	)
	// The seeds of FuzzRequest.
	seeds := []string{
		exampleAdd, exampleRemove, "", "{}", "null", "[]", `{"action":"add_members"}`,
		fuzzWithMembers(`[]`), fuzzWithMembers(`[{"uid":""}]`), fuzzWithMembers(`[{"uid":"a","x":1}]`), fuzzWithMembers(`[{"uid":1}]`),
		fuzzParams(`{"cohort_name":".N","cohort_id":"c","members":[{"uid":"u"}]}`),
		fuzzParams(`{"cohort_name":"a|b","cohort_id":"c","members":[{"uid":"u"}]}`),
		fuzzParams(`{"cohort_name":"N","cohort_id":"c","cohort_description":null,"members":[{"uid":"u"}]}`),
		`{"action":"add_members","action":"nope","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}]}}`,
		`{"ACTION":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}]}}`,
		exampleAdd + " {}", "\xff", strings.Replace(exampleAdd, "mm1", "m\xc3m", 1), `{"x":1e999}`,
		strings.Repeat("[", 100), exampleAdd + strings.Repeat(" ", fuzzMaxBody),
	}

	// AppendBody output, pretty-printed and truncated.
	for _, r := range wireRequests {
		b := appendBody(r)
		seeds = append(seeds, string(b))
		var ind bytes.Buffer
		if err := json.Indent(&ind, b, "\r\n", "\t"); err == nil {
			seeds = append(seeds, " \n"+ind.String()+"\n\t ")
		}
		for _, n := range []int{1, len(b) / 3, len(b) / 2, len(b) - 3, len(b) - 1} {
			seeds = append(seeds, string(b[:n]))
		}
	}

	ok := `"ok"`
	members := `[{"uid":"u1"},{"uid":"u2"}]`
	seeds = append(seeds,
		// Key orders and whitespace.
		`{"parameters":{"members":[{"uid":"u"}],"cohort_id":"c","cohort_description":"","cohort_name":"N"},"partner":"p","action":"remove_members"}`,
		"\t{ \"action\" :\r\"add_members\" ,\n\"partner\":\"p\",\"parameters\":{ \"cohort_name\":\"N\" , \"cohort_id\":\"c\",\"members\":[ { \"uid\" : \"u\" } , {\"uid\":\"v\"} ] } }\n",
		// Escapes, unicode and surrogates in every field.
		fuzzBody(`"add_m\u0065mbers"`, `"p\"\\\/\b\f\n\r\t"`, `"N\u00fc\u2028"`, `"\ud83d\ude00"`, `[{"uid":"\ud800"},{"uid":"\udc00\ud800"},{"uid":"\ud800\u0041"},{"uid":"\ud800\ud800\udc00"},{"uid":"\uD83D\uDE00x"},{"uid":"\u0000"}]`),
		fuzzBody(`"add_members"`, ok, `"N"`, ok, `[{"uid":"\'"}]`),
		fuzzBody(`"add_members"`, ok, `"N"`, ok, `[{"uid":"\u12"}]`),
		fuzzBody(`"add_members"`, ok, `"N"`, ok, `[{"uid":"\x41"}]`),
		fuzzBody(`"add_members"`, ok, `"N"`, ok, `[{"uid":"\ud800\u"}]`),
		fuzzBody(`"add_members"`, ok, "\"N\t\"", ok, members),
		fuzzBody(`"add_members"`, ok, "\"ü😀\u2028\"", ok, members),
		fuzzBody(`"add_members"`, ok, "\"\xef\xbf\xbd\"", ok, `[{"uid":"\xed\xa0\x80"}]`),
		fuzzBody(`"add_members"`, ok, `"a\u007cb"`, ok, members),
		fuzzBody(`"add_members"`, ok, `"\u002eN"`, ok, members),
		fuzzBody(`"add_members"`, ok, `"N (x)"`, ok, members),
		fuzzBody(`"add_members"`, ok, `"\u0028N)"`, ok, members),
		fuzzBody(`"add_members"`, ok, `".N"`, ok, members),
		// Duplicate keys.
		`{"action":"remove_members","partner":"p","partner":"q","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}]}}`,
		`{"action":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}]},"parameters":{"cohort_name":"M","cohort_id":"d","members":[{"uid":"v"}]}}`,
		`{"action":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}],"members":[{"uid":"v"}]}}`,
		fuzzWithMembers(`[{"uid":"u","uid":"v"}]`),
		fuzzWithMembers(`[{"uid":"u","uid":null}]`),
		// Nulls and wrong types.
		fuzzBody(`null`, ok, `"N"`, ok, members),
		fuzzBody(`"add_members"`, `null`, `"N"`, ok, members),
		fuzzBody(`"add_members"`, `7`, `"N"`, ok, members),
		fuzzBody(`"add_members"`, ok, `true`, ok, members),
		fuzzBody(`"add_members"`, ok, `"N"`, `["c"]`, members),
		fuzzBody(`"add_members"`, ok, `"N"`, ok, `{}`),
		fuzzBody(`"add_members"`, ok, `"N"`, ok, `[{"uid":"u"},"v"]`),
		fuzzBody(`"add_members"`, ok, `"N"`, ok, `[{"uid":"u"},[]]`),
		fuzzParams(`{"cohort_name":"N","cohort_id":"c","cohort_description":7,"members":[{"uid":"u"}]}`),
		`{"action":"add_members","partner":"p","parameters":null}`,
		`{"action":"add_members","partner":"p","parameters":"x"}`,
		// Empty values.
		fuzzBody(`""`, ok, `"N"`, ok, members),
		fuzzBody(`"add_members"`, `""`, `"N"`, ok, members),
		fuzzBody(`"add_members"`, ok, `""`, ok, members),
		fuzzBody(`"add_members"`, ok, `"N"`, `""`, members),
		// Extra keys at each level.
		`{"x":{"y":[1,2.5e3,true,false,null,"s"]},"action":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}]}}`,
		fuzzParams(`{"cohort_name":"N","cohort_id":"c","extra":"e","members":[{"uid":"u"}]}`),
		fuzzWithMembers(`[{"anonymous_id":"x","uid":"u"}]`),
		fuzzWithMembers(`[{"uid":"u"},{"uid":"v","x":{}}]`),
		// Trailing data, a byte order mark, bad bytes outside strings.
		fuzzWithMembers(`[{"uid":"u"}]`)+"x",
		fuzzWithMembers(`[{"uid":"u"}]`)+",",
		"\xef\xbb\xbf"+fuzzWithMembers(`[{"uid":"u"}]`),
		fuzzWithMembers(`[{"uid":"u"}]`)+"\xff",
		fuzzWithMembers(`[{"uid":"u"},]`),
		fuzzWithMembers(`[,{"uid":"u"}]`),
	)
	return seeds
}

// FuzzParseFast checks, for any body and every validation policy, that a
// success of parseFast is a success of parseSlow with the same request, and
// that parse answers exactly as parseSlow.
func FuzzParseFast(f *testing.F) {
	for _, s := range parseSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range validators {
			checkParse(t, v, body)
		}
	})
}

// FuzzParseFastWire encodes requests made of arbitrary strings with
// AppendBody and checks that parseFast decodes every one that parseSlow
// accepts, to the same request.
func FuzzParseFastWire(f *testing.F) {
	for _, r := range wireRequests {
		u2 := ""
		if len(r.UIDs) > 1 {
			u2 = r.UIDs[1]
		}
		f.Add(r.Action == event.Add, r.Partner, r.CohortID, r.CohortName, r.CohortDescription, r.UIDs[0], u2)
	}
	f.Add(false, "p", "c", ".N", "", "u", "")
	f.Add(true, "p", "c", "N (x)", "d", "u", "")
	f.Fuzz(func(t *testing.T, add bool, partner, id, name, desc, u1, u2 string) {
		r := wire.Request{Header: wire.Header{Action: event.Remove, Partner: partner, CohortID: id, CohortName: name,
			CohortDescription: desc}, UIDs: []string{u1}}
		if add {
			r.Action = event.Add
		}
		if u2 != "" {
			r.UIDs = append(r.UIDs, u2)
		}
		body := appendBody(r)
		for _, v := range validators {
			if ok, slowErr := checkParse(t, v, body); !ok && slowErr == nil {
				t.Fatalf("%+v: parseFast gave up on valid AppendBody output %q", v, body)
			}
		}
	})
}
