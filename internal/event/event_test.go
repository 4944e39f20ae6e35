package event_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/workspace"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		partner string
		want    event.Event
		reason  event.Reason
	}{
		{name: "documented example",
			in:   `{"action":"add_members","cohort_id":"JKTAuqTRhC","cohort_name":"Partner_Name","cohort_description":"A cohort of users from a partner.","partner":"6HNBXFm7ZS","uid":"mm1UR87z4T","occurred_at":"2026-11-28T10:00:00Z"}`,
			want: event.Event{Action: event.Add, CohortID: "JKTAuqTRhC", CohortName: "Partner_Name", CohortDescription: "A cohort of users from a partner.", Partner: "6HNBXFm7ZS", UIDs: []string{"mm1UR87z4T"}}},
		{name: "alias add", in: `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
			want: event.Event{Action: event.Add, CohortID: "c", CohortName: "n", Partner: "p", UIDs: []string{"u"}}},
		{name: "alias remove", in: `{"action":"remove","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
			want: event.Event{Action: event.Remove, CohortID: "c", CohortName: "n", Partner: "p", UIDs: []string{"u"}}},
		{name: "bulk uids deduplicated, uid first", in: `{"action":"remove_members","cohort_id":"c","cohort_name":"n","partner":"p","uid":"a","uids":["b","a","c","b"]}`,
			want: event.Event{Action: event.Remove, CohortID: "c", CohortName: "n", Partner: "p", UIDs: []string{"a", "b", "c"}}},
		{name: "partner default", in: `{"action":"add","cohort_id":"c","cohort_name":"n","uid":"u"}`, partner: "dflt",
			want: event.Event{Action: event.Add, CohortID: "c", CohortName: "n", Partner: "dflt", UIDs: []string{"u"}}},
		{name: "unknown fields ignored", in: `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","extra":{"x":1}}`,
			want: event.Event{Action: event.Add, CohortID: "c", CohortName: "n", Partner: "p", UIDs: []string{"u"}}},
		{name: "workspace_id", in: `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":"WS_1"}`,
			want: event.Event{Action: event.Add, CohortID: "c", CohortName: "n", Partner: "p", UIDs: []string{"u"}, Workspace: "WS_1"}},
		{name: "workspace_id invalid", in: `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","workspace_id":"WS 1"}`,
			reason: event.ReasonInvalidField},
		{name: "leading period passes through", in: `{"action":"add","cohort_id":"c","cohort_name":".n","partner":"p","uid":"u"}`,
			want: event.Event{Action: event.Add, CohortID: "c", CohortName: ".n", Partner: "p", UIDs: []string{"u"}}},
		{name: "malformed", in: `{"action":`, reason: event.ReasonMalformed},
		{name: "not an object", in: `[1,2]`, reason: event.ReasonInvalidField},
		{name: "not UTF-8", in: "{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"partner\":\"p\",\"uid\":\"a\xffb\"}", reason: event.ReasonInvalidField},
		{name: "lone surrogate", in: `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"a\ud800b"}`, reason: event.ReasonInvalidField},
		{name: "missing action", in: `{"cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`, reason: event.ReasonMissingField},
		{name: "bad action", in: `{"action":"upsert","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`, reason: event.ReasonInvalidAction},
		{name: "missing cohort_id", in: `{"action":"add","cohort_name":"n","partner":"p","uid":"u"}`, reason: event.ReasonMissingField},
		{name: "empty cohort_id", in: `{"action":"add","cohort_id":"","cohort_name":"n","partner":"p","uid":"u"}`, reason: event.ReasonInvalidField},
		{name: "missing cohort_name", in: `{"action":"add","cohort_id":"c","partner":"p","uid":"u"}`, reason: event.ReasonMissingField},
		{name: "missing partner without default", in: `{"action":"add","cohort_id":"c","cohort_name":"n","uid":"u"}`, reason: event.ReasonMissingField},
		{name: "no members", in: `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p"}`, reason: event.ReasonMissingField},
		{name: "empty uids", in: `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uids":[]}`, reason: event.ReasonMissingField},
		{name: "empty uid", in: `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":""}`, reason: event.ReasonInvalidField},
		{name: "uid not a string", in: `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":7}`, reason: event.ReasonInvalidField},
		{name: "bad occurred_at", in: `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"yesterday"}`, reason: event.ReasonInvalidField},
	}
	for _, c := range event.ForbiddenNameChars {
		tests = append(tests, struct {
			name    string
			in      string
			partner string
			want    event.Event
			reason  event.Reason
		}{name: "forbidden " + string(c),
			in:     `{"action":"add","cohort_id":"c","partner":"p","uid":"u","cohort_name":` + quote("a"+string(c)+"b") + `}`,
			reason: event.ReasonForbiddenChar})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := event.Decode([]byte(tc.in), tc.partner)
			if tc.reason != "" {
				var inv *event.InvalidError
				if !errors.As(err, &inv) || inv.Reason != tc.reason {
					t.Fatalf("err = %v, want reason %s", err, tc.reason)
				}
				if inv.Detail == "" {
					t.Fatal("no detail")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.OccurredAt = tc.want.OccurredAt
			if strings.Join(got.UIDs, ",") != strings.Join(tc.want.UIDs, ",") {
				t.Fatalf("uids %v, want %v", got.UIDs, tc.want.UIDs)
			}
			got.UIDs, tc.want.UIDs = nil, nil
			if got.Action != tc.want.Action || got.CohortID != tc.want.CohortID || got.CohortName != tc.want.CohortName ||
				got.CohortDescription != tc.want.CohortDescription || got.Partner != tc.want.Partner || got.Workspace != tc.want.Workspace {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestDecodeWorkspace: workspace_id is read by Decode and by a Decoder
// alike (fast path or not): a valid ID is the Event's Workspace; absent or
// null names none; anything else is invalid_field, naming the field.
func TestDecodeWorkspace(t *testing.T) {
	const head = `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"`
	long := strings.Repeat("W", 128)
	for _, tc := range []struct {
		name, field string // field: what follows head, after a comma
		want        string // the Workspace; "" with detail: rejected
		detail      string // a part of the error's detail
	}{
		{name: "valid", field: `"workspace_id":"ABC123_DEBUG"`, want: "ABC123_DEBUG"},
		{name: "dash", field: `"workspace_id":"w-1"`, want: "w-1"},
		{name: "escaped", field: `"workspace_id":"W\u0041_1"`, want: "WA_1"},
		{name: "128 bytes", field: `"workspace_id":"` + long + `"`, want: long},
		{name: "other case key", field: `"Workspace_ID":"W_2"`, want: "W_2"}, // encoding/json folds keys
		{name: "absent", field: `"x":"y"`},
		{name: "null", field: `"workspace_id":null`},
		{name: "empty", field: `"workspace_id":""`, detail: "workspace_id is empty"},
		{name: "too long", field: `"workspace_id":"` + long + `W"`, detail: "is not a workspace ID"},
		{name: "white space", field: `"workspace_id":"W 1"`, detail: `workspace_id "W 1" is not a workspace ID`},
		{name: "colon", field: `"workspace_id":"W:1"`, detail: "is not a workspace ID"},
		{name: "dot", field: `"workspace_id":"W.1"`, detail: "is not a workspace ID"},
		{name: "leading underscore", field: `"workspace_id":"_W"`, detail: "is not a workspace ID"},
		{name: "non-ASCII", field: `"workspace_id":"Wé"`, detail: "is not a workspace ID"},
		{name: "escaped space", field: `"workspace_id":"W\u0020"`, detail: "is not a workspace ID"},
		{name: "number", field: `"workspace_id":12`, detail: "workspace_id must be a string, not a JSON number"},
		{name: "bool", field: `"workspace_id":true`, detail: "workspace_id must be a string, not a JSON boolean"},
		{name: "object", field: `"workspace_id":{"id":"W"}`, detail: "workspace_id must be a string, not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := head + "," + tc.field + "}"
			dec := event.NewDecoder("")
			for i, decode := range []func([]byte) (event.Event, error){
				func(v []byte) (event.Event, error) { return event.Decode(v, "") }, dec.Decode, dec.Decode,
			} {
				ev, err := decode([]byte(in))
				if tc.detail == "" {
					if err != nil || ev.Workspace != tc.want {
						t.Fatalf("decoder %d: %s: Workspace %q, err %v; want %q", i, in, ev.Workspace, err, tc.want)
					}
					continue
				}
				var inv *event.InvalidError
				if !errors.As(err, &inv) || inv.Reason != event.ReasonInvalidField || !strings.Contains(inv.Detail, tc.detail) {
					t.Fatalf("decoder %d: %s: err %v; want invalid_field with %q", i, in, err, tc.detail)
				}
			}
		})
	}
}

// TestDecodeRejectsCollapsingText: text that encoding/json would replace with
// U+FFFD, so that distinct values became one ("a\xffb" and "a\xfeb" both
// "a\uFFFDb"), is rejected by Decode and a Decoder alike, naming the field;
// in a key or an unknown field it makes the record malformed.
func TestDecodeRejectsCollapsingText(t *testing.T) {
	const head = `{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p",`
	tests := []struct {
		in     string
		reason event.Reason
		detail string // a part of the detail
	}{
		{head + "\"uid\":\"a\xffb\"}", event.ReasonInvalidField, "uid is not valid UTF-8"},
		{head + "\"uid\":\"a\xfeb\"}", event.ReasonInvalidField, "uid is not valid UTF-8"},
		{head + "\"uid\":\"\xed\xa0\x80\"}", event.ReasonInvalidField, "uid is not valid UTF-8"}, // an encoded surrogate
		{head + "\"uid\":\"\xc3\"}", event.ReasonInvalidField, "uid is not valid UTF-8"},
		{head + "\"uids\":[\"a\",null,\"\\u00e9\xff\"]}", event.ReasonInvalidField, "uids[2] is not valid UTF-8"},
		{head + "\"UID\":\"a\xffb\"}", event.ReasonInvalidField, "uid is not valid UTF-8"},
		{head + "\"uid\":\"a\xffb\",\"uid\":\"u\"}", event.ReasonInvalidField, "uid is not valid UTF-8"},
		{"{\"action\":\"add\xff\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"partner\":\"p\",\"uid\":\"u\"}", event.ReasonInvalidField, "action is not valid UTF-8"},
		{"{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\xff\",\"partner\":\"p\",\"uid\":\"u\"}", event.ReasonInvalidField, "cohort_name is not valid UTF-8"},
		{"{\"action\":\"add\",\"cohort_id\":\"c\",\"cohort_name\":\"n\",\"partner\":\"p\xff\",\"uid\":\"u\"}", event.ReasonInvalidField, "partner is not valid UTF-8"},
		{head + "\"cohort_description\":\"\xff\",\"uid\":\"u\"}", event.ReasonInvalidField, "cohort_description is not valid UTF-8"},
		{head + "\"uid\":\"u\",\"occurred_at\":\"2026\xff\"}", event.ReasonInvalidField, "occurred_at is not valid UTF-8"},
		{head + `"uid":"a\ud800b"}`, event.ReasonInvalidField, `uid has the escape \ud800 of a lone UTF-16 surrogate`},
		{head + `"uid":"a\uDC00b"}`, event.ReasonInvalidField, `uid has the escape \uDC00 of a lone UTF-16 surrogate`},
		{head + `"uids":["\ud83d\ude00","\ud83d\u0041"]}`, event.ReasonInvalidField, `uids[1] has the escape \ud83d of a lone`},
		{head + `"cohort_description":"\ude00\ud83d","uid":"u"}`, event.ReasonInvalidField, `cohort_description has the escape \ude00`},
		{head + "\"uid\":\"u\",\"x\":\"\xff\"}", event.ReasonMalformed, `unknown field "x" is not valid UTF-8`},
		{head + "\"uid\":\"u\",\"x\":{\"y\":[\"\xff\"]}}", event.ReasonMalformed, `unknown field "x" is not valid UTF-8`},
		{head + "\"uid\":\"u\",\"\xff\":1}", event.ReasonMalformed, "a key is not valid UTF-8"},
	}
	for _, tc := range tests {
		for name, decode := range map[string]func([]byte) (event.Event, error){
			"Decode":  func(v []byte) (event.Event, error) { return event.Decode(v, "") },
			"Decoder": event.NewDecoder("").Decode,
		} {
			ev, err := decode([]byte(tc.in))
			var inv *event.InvalidError
			if !errors.As(err, &inv) || inv.Reason != tc.reason || !strings.Contains(inv.Detail, tc.detail) {
				t.Errorf("%s(%q) = %+v, %v; want %s: ...%s...", name, tc.in, ev, err, tc.reason, tc.detail)
			}
		}
	}

	// What stays valid: U+FFFD itself, surrogate pairs, and a lone
	// surrogate where it is ignored (an unknown field).
	for _, tc := range []struct{ in, uid string }{
		{head + "\"uid\":\"a\uFFFDb\"}", "a\uFFFDb"},
		{head + `"uid":"a\ufffdb"}`, "a\uFFFDb"},
		{head + `"uid":"a\ud83d\ude00b"}`, "a😀b"},
		{head + `"uid":"u","x":"\ud800"}`, "u"},
	} {
		ev, err := event.Decode([]byte(tc.in), "")
		if err != nil || len(ev.UIDs) != 1 || ev.UIDs[0] != tc.uid {
			t.Errorf("Decode(%q) = %q, %v; want %q", tc.in, ev.UIDs, err, tc.uid)
		}
	}
}

// TestDecodeErrorsAreBounded: an error detail quotes at most a few dozen
// bytes of a value of the record, with its length, in valid UTF-8, however
// large the value.
func TestDecodeErrorsAreBounded(t *testing.T) {
	big := strings.Repeat("é", 450000) // 900 KB
	for _, in := range []string{
		`{"action":"` + big + `","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","occurred_at":"` + big + `"}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","` + big + "\xff" + `":1}`,
		`{"action":"add","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u","` + big + `":"\xff"}`,
	} {
		_, err := event.Decode([]byte(in), "")
		var inv *event.InvalidError
		if !errors.As(err, &inv) {
			t.Fatalf("%v, want an *InvalidError", err)
		}
		if len(err.Error()) > 300 || !utf8.ValidString(err.Error()) || !strings.Contains(err.Error(), "(900000 bytes)") && inv.Reason != event.ReasonMalformed {
			t.Errorf("detail of %d bytes: %.400q", len(err.Error()), err.Error())
		}
	}
}

// TestDecodeTypeErrorsSpeakJSON: a value of the wrong type is described in
// JSON's words, never Go's.
func TestDecodeTypeErrorsSpeakJSON(t *testing.T) {
	for in, want := range map[string]string{
		`[1,2]`:                  "the record is a JSON array; an event must be a JSON object",
		`"add"`:                  "the record is a JSON string; an event must be a JSON object",
		`7`:                      "the record is a JSON number; an event must be a JSON object",
		`{"uid":7}`:              "uid must be a string, not a JSON number",
		`{"action":{}}`:          "action must be a string, not a JSON object",
		`{"uids":"a"}`:           "uids must be an array of strings, not a JSON string",
		`{"uids":[true]}`:        "uids must be an array of strings; it holds a JSON boolean",
		`{"workspace_id":7}`:     "workspace_id must be a string, not a JSON number",
		`{"workspace_id":["W"]}`: "workspace_id must be a string, not a JSON array",
	} {
		_, err := event.Decode([]byte(in), "")
		var inv *event.InvalidError
		if !errors.As(err, &inv) || inv.Reason != event.ReasonInvalidField || inv.Detail != want {
			t.Errorf("Decode(%s) = %v; want %s", in, err, want)
		}
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":                            `""`,
		"a\xffb":                      `"a\xffb"`,
		strings.Repeat("x", 64):       `"` + strings.Repeat("x", 64) + `"`,
		strings.Repeat("x", 65):       `"` + strings.Repeat("x", 64) + `"… (65 bytes)`,
		"x" + strings.Repeat("é", 40): `"x` + strings.Repeat("é", 31) + `"… (81 bytes)`, // cut at a character
	} {
		if got := event.Quote(in); got != want || !utf8.ValidString(got) {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func TestTombstone(t *testing.T) {
	for _, v := range []string{"", "  \n"} {
		if _, err := event.Decode([]byte(v), ""); !errors.Is(err, event.ErrTombstone) {
			t.Fatalf("%q: %v", v, err)
		}
	}
	if _, err := event.Decode(nil, ""); !errors.Is(err, event.ErrTombstone) {
		t.Fatal(err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	for _, ev := range []event.Event{
		{Action: event.Add, Partner: "p", CohortID: "c", CohortName: "n", UIDs: []string{"u"}},
		{Action: event.Remove, Partner: "p", CohortID: "c", CohortName: "n", CohortDescription: "d", UIDs: []string{"a", "b"}},
		{Action: event.Add, Partner: "p", CohortID: "c", CohortName: "n", UIDs: []string{"u"}, Workspace: "WS_1"},
	} {
		got, err := event.Decode(event.Encode(ev), "")
		if err != nil {
			t.Fatal(err)
		}
		if got.Action != ev.Action || strings.Join(got.UIDs, ",") != strings.Join(ev.UIDs, ",") || got.CohortDescription != ev.CohortDescription ||
			got.Workspace != ev.Workspace {
			t.Fatalf("round trip %+v -> %+v", ev, got)
		}
	}
}

// FuzzDecode: Decode never panics; an accepted event satisfies every rule
// and survives an Encode/Decode round trip unchanged.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"action":"add_members","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`))
	f.Add([]byte(`{"action":"remove","cohort_id":"c","cohort_name":"n","uids":["a","b","a"]}`))
	f.Add([]byte(`{"action":"add","cohort_id":"c","cohort_name":"a|b","uid":"u"}`))
	f.Add([]byte(`{"action":`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"action":"add","cohort_id":"c","cohort_name":"n","uid":"u","workspace_id":"WS_1"}`))
	f.Add([]byte(`{"action":"add","cohort_id":"c","cohort_name":"n","uid":"u","workspace_id":null}`))
	f.Add([]byte(`{"action":"add","cohort_id":"c","cohort_name":"n","uid":"u","workspace_id":""}`))
	f.Add([]byte(`{"action":"add","cohort_id":"c","cohort_name":"n","uid":"u","workspace_id":"a:b"}`))
	f.Add([]byte(`{"action":"add","cohort_id":"c","cohort_name":"n","uid":"u","workspace_id":1}`))
	f.Add([]byte(`{"action":"add","cohort_id":"c","cohort_name":"n","uid":"u","Workspace_ID":"W\u0041"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := event.Decode(data, "default-partner")
		if err != nil {
			var inv *event.InvalidError
			if !errors.Is(err, event.ErrTombstone) && !errors.As(err, &inv) {
				t.Fatalf("error of unexpected type %T: %v", err, err)
			}
			return
		}
		if ev.Action != event.Add && ev.Action != event.Remove {
			t.Fatalf("action %q", ev.Action)
		}
		if ev.CohortID == "" || ev.CohortName == "" || ev.Partner == "" || len(ev.UIDs) == 0 {
			t.Fatalf("accepted an incomplete event %+v", ev)
		}
		if strings.ContainsAny(ev.CohortName, event.ForbiddenNameChars) {
			t.Fatalf("accepted forbidden name %q", ev.CohortName)
		}
		seen := map[string]bool{}
		for _, u := range ev.UIDs {
			if u == "" || seen[u] {
				t.Fatalf("uids %q", ev.UIDs)
			}
			seen[u] = true
		}
		if ev.Workspace != "" && !workspace.ValidID(ev.Workspace) {
			t.Fatalf("accepted workspace_id %q", ev.Workspace)
		}
		back, err := event.Decode(event.Encode(ev), "")
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if strings.Join(back.UIDs, "\x00") != strings.Join(ev.UIDs, "\x00") || back.CohortName != ev.CohortName ||
			back.Workspace != ev.Workspace {
			t.Fatalf("round trip changed %+v into %+v", ev, back)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	v := []byte(`{"action":"add_members","cohort_id":"JKTAuqTRhC","cohort_name":"Partner_Name","partner":"6HNBXFm7ZS","uid":"mm1UR87z4T","occurred_at":"2026-11-28T10:00:00Z"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		if _, err := event.Decode(v, ""); err != nil {
			b.Fatal(err)
		}
	}
}
