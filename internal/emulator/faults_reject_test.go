package emulator_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

var errRejectUIDs = wantErr{typ: "Bad Request", message: "The request parameters are invalid"}

// rejectFaultCase is one of the faults that reject a valid request without
// applying it.
type rejectFaultCase struct {
	name   string
	faults emulator.Faults
	status int     // the answer to exampleAdd
	want   wantErr // its error body
	fault  string  // RequestRecord.Fault
}

var rejectFaultCases = []rejectFaultCase{
	{"bad_request", emulator.Faults{BadRequest: true}, 400, errMalformed, emulator.FaultBadRequest},
	{"status_fail", emulator.Faults{StatusFail: true}, 200, err500, emulator.FaultStatusFail},
	{"reject_uids", emulator.Faults{RejectUIDs: []string{"AtCxliflui"}}, 400, errRejectUIDs, emulator.FaultRejectUIDs},
	{"reject_uids map", emulator.Faults{RejectUIDs: append(uids("x", 20), "AtCxliflui")}, 400, errRejectUIDs, emulator.FaultRejectUIDs},
	{"bad_request script", emulator.Faults{Script: []emulator.FaultStep{{Kind: emulator.FaultBadRequest}}}, 400, errMalformed, emulator.FaultBadRequest},
	{"status_fail script", emulator.Faults{Script: []emulator.FaultStep{{Kind: emulator.FaultStatusFail}}}, 200, err500, emulator.FaultStatusFail},
}

// TestFaultRejects: each fault answers a valid request as documented,
// without an attribute, does not apply it, logs it with its fault and
// counts it toward the rate limit only with CountRejected.
func TestFaultRejects(t *testing.T) {
	for _, tc := range rejectFaultCases {
		for _, countRejected := range []bool{true, false} {
			t.Run(tc.name+"/count_rejected="+strconv.FormatBool(countRejected), func(t *testing.T) {
				e, _ := newEmulator(t, func(c *emulator.Config) { c.CountRejected = countRejected })
				setFaults(t, e, tc.faults)
				rec := serve(e, apiReq{body: exampleAdd})
				mustStatus(t, rec, tc.status)
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
				id := checkErrorBody(t, rec.Body.Bytes(), tc.want) // no attribute
				if strings.Contains(rec.Body.String(), "AtCxliflui") || strings.Contains(rec.Body.String(), "mm1UR87z4T") {
					t.Errorf("the body names a member: %s", rec.Body)
				}
				want := "300"
				if countRejected {
					want = "299"
				}
				if l, remaining, _ := rateHeaders(rec); l != "300" || remaining != want {
					t.Errorf("rate headers limit %q remaining %q, want 300 and %s", l, remaining, want)
				}
				if got := e.Members("ws1", "6HNBXFm7ZS", "JKTAuqTRhC"); got != nil || len(e.Segments()) != 0 {
					t.Errorf("applied: members = %v", got)
				}
				r := e.Requests()[0]
				if r.Fault != tc.fault || r.Status != tc.status || r.Applied || r.Counted != countRejected ||
					r.ErrorType != tc.want.typ || r.ErrorMessage != tc.want.message || r.Attribute != "" ||
					r.RequestID != id || len(r.Members) != 2 || !r.AuthOK {
					t.Errorf("record = %+v", r)
				}

				// Checks before step 9 still answer first.
				mustStatus(t, serve(e, apiReq{body: "{}"}), 400)
				if r := e.Requests()[1]; r.Fault != "" || r.ErrorType != "MissingAttributeError" {
					t.Errorf("an invalid request got the fault: %+v", r)
				}
				mustStatus(t, serve(e, apiReq{body: exampleAdd, auth: ptr(basic("ws1", "wrong"))}), 401)
				f := tc.faults
				f.Forbidden = true
				setFaults(t, e, f)
				mustStatus(t, serve(e, apiReq{body: exampleAdd}), 403)

				// They decide before an injected 5xx or reset, with no ApplyBeforeError.
				f = tc.faults
				f.ErrorRate, f.ResetRate, f.ApplyBeforeError = 1, 1, true
				setFaults(t, e, f)
				rec = serve(e, apiReq{body: exampleAdd})
				mustStatus(t, rec, tc.status)
				if got := e.Members("ws1", "6HNBXFm7ZS", "JKTAuqTRhC"); got != nil {
					t.Errorf("applied with ApplyBeforeError: members = %v", got)
				}

				// Cleared: accepted and applied.
				setFaults(t, e, emulator.Faults{})
				rec = serve(e, apiReq{body: exampleAdd})
				mustStatus(t, rec, 200)
				if rec.Body.String() != successBody {
					t.Errorf("after clearing: %s", rec.Body)
				}
				if got := e.Members("ws1", "6HNBXFm7ZS", "JKTAuqTRhC"); len(got) != 2 {
					t.Errorf("after clearing: members = %v", got)
				}
			})
		}
	}
}

// TestFaultRejectsAfterRateLimit: a request that finds the window full gets
// 429, not the injected rejection; with CountRejected the rejections fill
// the window.
func TestFaultRejectsAfterRateLimit(t *testing.T) {
	for _, tc := range rejectFaultCases {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newEmulator(t, func(c *emulator.Config) { c.RateLimit = 2 })
			setFaults(t, e, tc.faults)
			mustStatus(t, serve(e, apiReq{body: exampleAdd}), tc.status)
			mustStatus(t, serve(e, apiReq{body: exampleAdd}), tc.status)
			rec := serve(e, apiReq{body: exampleAdd})
			mustStatus(t, rec, 429)
			checkErrorBody(t, rec.Body.Bytes(), err429)
			if r := e.Requests()[2]; r.Fault != "" || r.Counted {
				t.Errorf("429 record = %+v", r)
			}
			// Forced 429s come first as well.
			f := tc.faults
			f.Force429 = 1
			e2, _ := newEmulator(t, nil)
			setFaults(t, e2, f)
			mustStatus(t, serve(e2, apiReq{body: exampleAdd}), 429)
			mustStatus(t, serve(e2, apiReq{body: exampleAdd}), tc.status)
		})
	}
}

// TestFaultRejectUIDsOnlyThoseMembers: only requests holding a listed uid
// are rejected, whatever their action and position; the rest are applied.
func TestFaultRejectUIDsOnlyThoseMembers(t *testing.T) {
	for _, n := range []int{1, 50} { // the list and the set lookups
		t.Run(fmt.Sprint(n, " uids"), func(t *testing.T) {
			e, _ := newEmulator(t, func(c *emulator.Config) { c.RateLimit = 0 })
			bad := uids("bad", n)
			setFaults(t, e, emulator.Faults{RejectUIDs: bad})
			members := uids("u", 1000)
			last := bad[len(bad)-1]
			for _, tc := range []struct {
				body   string
				status int
			}{
				{body("add_members", "p", "c1", members...), 200},
				{body("add_members", "p", "c1", append(append([]string{}, members...), last)...), 400},
				{body("add_members", "p", "c1", append([]string{last}, members[:10]...)...), 400},
				{body("remove_members", "p", "c1", bad[0]), 400},
				{body("add_members", "p", "c2", "bad", "bad0", strings.ToUpper(bad[0])), 200}, // exact matches only
				{body("remove_members", "p", "c1", members[:500]...), 200},
			} {
				rec := serve(e, apiReq{body: tc.body})
				mustStatus(t, rec, tc.status)
				if tc.status == 400 {
					checkErrorBody(t, rec.Body.Bytes(), errRejectUIDs)
				}
			}
			if got := e.Members("ws1", "p", "c1"); len(got) != 500 || got[0] != "u0500" {
				t.Errorf("c1 has %d members, want u0500..u0999", len(got))
			}
			if got := e.Members("ws1", "p", "c2"); len(got) != 3 {
				t.Errorf("c2 members = %v", got)
			}
			for _, r := range e.Requests() {
				if (r.Status == 400) != (r.Fault == emulator.FaultRejectUIDs) || (r.Status == 400) == r.Applied {
					t.Errorf("record %d: status %d fault %q applied %v", r.Seq, r.Status, r.Fault, r.Applied)
				}
			}
		})
	}
}

// TestFaultRejectsOrder: BadRequest wins over RejectUIDs, which wins over
// StatusFail.
func TestFaultRejectsOrder(t *testing.T) {
	e, _ := newEmulator(t, nil)
	setFaults(t, e, emulator.Faults{BadRequest: true, StatusFail: true, RejectUIDs: []string{"AtCxliflui"}})
	checkErrorBody(t, serve(e, apiReq{body: exampleAdd}).Body.Bytes(), errMalformed)
	setFaults(t, e, emulator.Faults{StatusFail: true, RejectUIDs: []string{"AtCxliflui"}})
	rec := serve(e, apiReq{body: exampleAdd})
	mustStatus(t, rec, 400)
	checkErrorBody(t, rec.Body.Bytes(), errRejectUIDs)
	rec = serve(e, apiReq{body: exampleRemove}) // no listed member
	mustStatus(t, rec, 200)
	checkErrorBody(t, rec.Body.Bytes(), err500)
	for i, want := range []string{emulator.FaultBadRequest, emulator.FaultRejectUIDs, emulator.FaultStatusFail} {
		if r := e.Requests()[i]; r.Fault != want || r.Applied {
			t.Errorf("record %d: fault %q applied %v, want %q", i, r.Fault, r.Applied, want)
		}
	}
}

// TestFaultRejectsScriptWindow: scripted bad_request and status_fail steps
// hold for their window only.
func TestFaultRejectsScriptWindow(t *testing.T) {
	e, clock := newEmulator(t, func(c *emulator.Config) { c.RateLimit = 0 })
	setFaults(t, e, emulator.Faults{Script: []emulator.FaultStep{
		{After: 10 * time.Second, Duration: 10 * time.Second, Kind: emulator.FaultBadRequest},
		{After: 30 * time.Second, Duration: 5 * time.Second, Kind: emulator.FaultStatusFail},
	}})
	start := clock.Now()
	for _, s := range []struct {
		at    time.Duration
		want  int
		fault string
	}{
		{0, 200, ""}, {10 * time.Second, 400, emulator.FaultBadRequest}, {19 * time.Second, 400, emulator.FaultBadRequest},
		{20 * time.Second, 200, ""}, {30 * time.Second, 200, emulator.FaultStatusFail}, {35 * time.Second, 200, ""},
	} {
		clock.Set(start.Add(s.at))
		rec := serve(e, apiReq{body: exampleAdd})
		recs := e.Requests()
		if r := recs[len(recs)-1]; rec.Code != s.want || r.Fault != s.fault {
			t.Errorf("at +%s: status %d fault %q, want %d %q", s.at, rec.Code, r.Fault, s.want, s.fault)
		}
	}
}

// TestFaultRejectsAdmin: the faults are set and read back through the admin
// API with snake_case keys, and take effect over HTTP.
func TestFaultRejectsAdmin(t *testing.T) {
	e, _ := newEmulator(t, nil)
	srv := httptest.NewServer(e)
	defer srv.Close()
	put := func(body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/_emulator/faults", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, got := put(`{"bad_request":true,"status_fail":true,"reject_uids":["AtCxliflui"]}`)
	if code != 200 || !strings.Contains(got, `"bad_request":true`) || !strings.Contains(got, `"status_fail":true`) ||
		!strings.Contains(got, `"reject_uids":["AtCxliflui"]`) {
		t.Fatalf("PUT: %d %s", code, got)
	}
	if f := e.Faults(); !f.BadRequest || !f.StatusFail || !reflect.DeepEqual(f.RejectUIDs, []string{"AtCxliflui"}) {
		t.Errorf("faults = %+v", f)
	}
	resp, err := http.DefaultClient.Do(apiReq{body: exampleAdd}.build(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, resp); resp.StatusCode != 400 {
		t.Errorf("API answer %d %s", resp.StatusCode, b)
	} else {
		checkErrorBody(t, b, errMalformed)
	}
	if code, got := put(`{"reject_uids":[""]}`); code != 400 || !strings.Contains(got, "empty") {
		t.Errorf("empty reject uid: %d %s", code, got)
	}
	if code, got := put(`{"script":[{"kind":"bad_request","duration":"10s"}]}`); code != 200 || !strings.Contains(got, `"kind":"bad_request"`) {
		t.Errorf("scripted bad_request: %d %s", code, got)
	}
	if code, got := put(`{}`); code != 200 || !strings.Contains(got, `"reject_uids":[]`) || !strings.Contains(got, `"bad_request":false`) {
		t.Errorf("cleared: %d %s", code, got)
	}
	if f := e.Faults(); f.RejectUIDs != nil {
		t.Errorf("cleared faults keep reject uids %v", f.RejectUIDs)
	}
}

// TestFaultRejectsJSON: the new fields round-trip, and SetFaults copies the
// uid list.
func TestFaultRejectsJSON(t *testing.T) {
	f := emulator.Faults{BadRequest: true, StatusFail: true, RejectUIDs: []string{"a", "b"},
		Script: []emulator.FaultStep{{Kind: emulator.FaultStatusFail, Duration: time.Second}}}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"bad_request":true`, `"status_fail":true`, `"reject_uids":["a","b"]`, `"kind":"status_fail"`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("JSON %s lacks %s", b, s)
		}
	}
	var back emulator.Faults
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, f) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, f)
	}
	e, _ := newEmulator(t, nil)
	setFaults(t, e, f)
	f.RejectUIDs[0] = "changed"
	if got := e.Faults().RejectUIDs; got[0] != "a" {
		t.Errorf("SetFaults kept the caller's slice: %v", got)
	}
	got := e.Faults()
	got.RejectUIDs[1] = "changed"
	if e.Faults().RejectUIDs[1] != "b" {
		t.Error("Faults returned the emulator's slice")
	}
}
