package wire_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

func TestAppendBodyMatchesDocumentedExample(t *testing.T) {
	r := wire.Request{Header: wire.Header{Action: event.Add, Partner: "6HNBXFm7ZS", CohortID: "JKTAuqTRhC",
		CohortName: "Partner_Name", CohortDescription: "A cohort of users from a partner."},
		UIDs: []string{"mm1UR87z4T", "AtCxliflui"}}
	got := string(wire.AppendBody(nil, r))
	want := `{"action":"add_members","partner":"6HNBXFm7ZS","parameters":{"cohort_name":"Partner_Name","cohort_id":"JKTAuqTRhC","cohort_description":"A cohort of users from a partner.","members":[{"uid":"mm1UR87z4T"},{"uid":"AtCxliflui"}]}}`
	if got != want {
		t.Fatalf("body:\n got %s\nwant %s", got, want)
	}
	if n := wire.Size(r); n != len(want) {
		t.Fatalf("Size = %d, want %d", n, len(want))
	}
}

func TestDescriptionOmittedWhenEmpty(t *testing.T) {
	r := wire.Request{Header: wire.Header{Action: event.Remove, Partner: "p", CohortID: "c", CohortName: "n"}, UIDs: []string{"u"}}
	got := string(wire.AppendBody(nil, r))
	if strings.Contains(got, "cohort_description") {
		t.Fatalf("empty description must be omitted: %s", got)
	}
	if wire.Size(r) != len(got) {
		t.Fatalf("Size = %d, len = %d", wire.Size(r), len(got))
	}
}

func TestQuotedMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "nl\n\r\t", "\x00\x1f", "ünï", "\u2028\u2029", "bad\xffutf8", "<&>"} {
		got := wire.AppendQuoted(nil, s)
		if len(got) != wire.QuotedLen(s) {
			t.Errorf("%q: QuotedLen %d != len %d", s, wire.QuotedLen(s), len(got))
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q: not valid JSON %s: %v", s, got, err)
		}
		want, _ := json.Marshal(s)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("%q: round trip %q, encoding/json gives %q", s, back, wantBack)
		}
	}
}

func FuzzBodySize(f *testing.F) {
	f.Add("add_members", "p", "c", "n", "d", "u1", "u\"2")
	f.Add("remove_members", "", "", "", "", "\xff", "\u2028")
	f.Add("add_members", "\x01\x02", "\xff\xfe", "\u2029", "\"\\", "\x00", "\x1f\x1f\x1f")
	f.Add("\x00", "\x01", "\x02", "\x03", "\x04", "\x05", "\x06") // every byte escaped: the bound is tight
	f.Fuzz(func(t *testing.T, action, partner, id, name, desc, u1, u2 string) {
		r := wire.Request{Header: wire.Header{Action: event.Action(action), Partner: partner, CohortID: id,
			CohortName: name, CohortDescription: desc}, UIDs: []string{u1, u2}}
		body := wire.AppendBody(nil, r)
		if len(body) != wire.Size(r) {
			t.Fatalf("Size %d != encoded %d", wire.Size(r), len(body))
		}
		one := r
		one.UIDs = []string{u2}
		if exact, bound := len(wire.AppendBody(nil, one)), wire.SingleBodyBound(r.Header, u2); bound < exact {
			t.Fatalf("SingleBodyBound %d < encoded %d", bound, exact)
		} else if !wire.Fits(r.Header, u2, exact) || wire.Fits(r.Header, u2, exact-1) {
			t.Fatalf("Fits disagrees with the encoded size %d", exact)
		}
		var v struct {
			Action     string `json:"action"`
			Parameters struct {
				Members []struct {
					UID string `json:"uid"`
				} `json:"members"`
			} `json:"parameters"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("invalid JSON %s: %v", body, err)
		}
		if len(v.Parameters.Members) != 2 {
			t.Fatalf("members = %d", len(v.Parameters.Members))
		}
	})
}

func BenchmarkAppendBody(b *testing.B) {
	r := wire.Request{Header: wire.Header{Action: event.Add, Partner: "6HNBXFm7ZS", CohortID: "JKTAuqTRhC", CohortName: "Partner_Name"}}
	for i := range 5000 {
		r.UIDs = append(r.UIDs, strings.Repeat("x", 4)+string(rune('a'+i%26))+"12345")
	}
	buf := make([]byte, 0, 128000)
	b.ReportAllocs()
	b.SetBytes(int64(wire.Size(r)))
	for b.Loop() {
		buf = wire.AppendBody(buf[:0], r)
	}
}

// TestFits: Fits(h, uid, max) is exactly whether the encoded body of the
// request with h and uid alone is at most max bytes, at the boundary, on
// both sides of SingleBodyBound's shortcut, and with escaping.
func TestFits(t *testing.T) {
	for _, h := range []wire.Header{
		{Action: event.Add, Partner: "p", CohortID: "c", CohortName: "n"},
		{Action: event.Remove, Partner: "\x01\"", CohortID: "\u2028", CohortName: "é", CohortDescription: "d\n"},
	} {
		for _, uid := range []string{"", "u", strings.Repeat("x", 500), strings.Repeat("\x01", 200), strings.Repeat("é\"", 100)} {
			size := len(wire.AppendBody(nil, wire.Request{Header: h, UIDs: []string{uid}}))
			for _, max := range []int{size - 1, size, size + 1, wire.SingleBodyBound(h, uid), wire.DefaultMaxBodyBytes} {
				if got, want := wire.Fits(h, uid, max), size <= max; got != want {
					t.Errorf("Fits(%+v, %d-byte uid, %d) = %v, body is %d bytes", h, len(uid), max, got, size)
				}
			}
		}
	}
	if wire.DefaultMaxBodyBytes != 128000 {
		t.Errorf("DefaultMaxBodyBytes = %d, want 128000 (BATCH_MAX_BYTES's default)", wire.DefaultMaxBodyBytes)
	}
}

// The workspace names the credentials, never the body: the body, its size
// and the fit check are those of the same request without a workspace.
func TestWorkspaceNotInBody(t *testing.T) {
	const ws = "WS_secret_workspace_7"
	h := wire.Header{Workspace: ws, Action: event.Add, Partner: "p", CohortID: "c", CohortName: "n", CohortDescription: "d"}
	r := wire.Request{Header: h, UIDs: []string{"u1", "u2"}}
	bare := r
	bare.Workspace = ""
	got := string(wire.AppendBody(nil, r))
	if strings.Contains(got, ws) || strings.Contains(got, "workspace") {
		t.Fatalf("the body names the workspace: %s", got)
	}
	if want := string(wire.AppendBody(nil, bare)); got != want {
		t.Fatalf("body with a workspace:\n got %s\nwant %s", got, want)
	}
	if wire.Size(r) != len(got) || wire.EnvelopeSize(h) != wire.EnvelopeSize(bare.Header) {
		t.Fatalf("sizes: Size %d len %d, envelope %d vs %d", wire.Size(r), len(got), wire.EnvelopeSize(h), wire.EnvelopeSize(bare.Header))
	}
	max := wire.Size(wire.Request{Header: bare.Header, UIDs: []string{"u1"}})
	if !wire.Fits(h, "u1", max) || wire.Fits(h, "u1", max-1) {
		t.Fatalf("Fits counts the workspace (cap %d)", max)
	}
}
