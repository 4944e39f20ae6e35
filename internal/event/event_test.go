package event_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/event"
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
		{name: "leading period passes through", in: `{"action":"add","cohort_id":"c","cohort_name":".n","partner":"p","uid":"u"}`,
			want: event.Event{Action: event.Add, CohortID: "c", CohortName: ".n", Partner: "p", UIDs: []string{"u"}}},
		{name: "malformed", in: `{"action":`, reason: event.ReasonMalformed},
		{name: "not an object", in: `[1,2]`, reason: event.ReasonInvalidField},
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
				got.CohortDescription != tc.want.CohortDescription || got.Partner != tc.want.Partner {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
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
	} {
		got, err := event.Decode(event.Encode(ev), "")
		if err != nil {
			t.Fatal(err)
		}
		if got.Action != ev.Action || strings.Join(got.UIDs, ",") != strings.Join(ev.UIDs, ",") || got.CohortDescription != ev.CohortDescription {
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
		back, err := event.Decode(event.Encode(ev), "")
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if strings.Join(back.UIDs, "\x00") != strings.Join(ev.UIDs, "\x00") || back.CohortName != ev.CohortName {
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
