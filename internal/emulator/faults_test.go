package emulator_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

func setFaults(t testing.TB, e *emulator.Emulator, f emulator.Faults) {
	t.Helper()
	if err := e.SetFaults(f); err != nil {
		t.Fatalf("SetFaults: %v", err)
	}
}

func TestFaultErrorRate(t *testing.T) {
	for _, applyFirst := range []bool{false, true} {
		e, _ := newEmulator(t, nil)
		setFaults(t, e, emulator.Faults{ErrorRate: 1, ApplyBeforeError: applyFirst})
		rec := serve(e, apiReq{body: exampleAdd})
		mustStatus(t, rec, 500)
		checkErrorBody(t, rec.Body.Bytes(), err500)
		if _, remaining, _ := rateHeaders(rec); remaining != "299" {
			t.Errorf("injected 500: remaining = %q, want 299 (5xx counts)", remaining)
		}
		got := e.Members("ws1", "6HNBXFm7ZS", "JKTAuqTRhC")
		if applyFirst && !slices.Equal(got, []string{"AtCxliflui", "mm1UR87z4T"}) {
			t.Errorf("ApplyBeforeError: members = %v, want the change applied", got)
		}
		if !applyFirst && got != nil {
			t.Errorf("members = %v, want no segment", got)
		}
		r := e.Requests()[0]
		if r.Fault != emulator.Fault5xx || r.Applied != applyFirst || r.Status != 500 {
			t.Errorf("record = %+v", r)
		}
		// Invalid requests still get their 400: only valid ones get the 5xx.
		mustStatus(t, serve(e, apiReq{body: "{}"}), 400)
		mustStatus(t, serve(e, apiReq{body: exampleAdd, auth: ptr("")}), 401)
	}
}

func TestFaultErrorStatusesAndPartialRate(t *testing.T) {
	e, _ := newEmulator(t, func(c *emulator.Config) { c.RateLimit = 0 })
	setFaults(t, e, emulator.Faults{ErrorRate: 0.5, ErrorStatuses: []int{502, 503, 504}})
	seen := map[int]int{}
	for range 400 {
		rec := serve(e, apiReq{body: exampleAdd})
		seen[rec.Code]++
		if rec.Code != 200 {
			checkErrorBody(t, rec.Body.Bytes(), err500)
		}
	}
	if seen[500] != 0 || seen[502] == 0 || seen[503] == 0 || seen[504] == 0 {
		t.Errorf("statuses = %v", seen)
	}
	if n := seen[200]; n < 120 || n > 280 {
		t.Errorf("%d of 400 accepted with ErrorRate 0.5", n)
	}
}

func TestFaultForce429(t *testing.T) {
	e, _ := newEmulator(t, func(c *emulator.Config) { c.RetryAfter = true })
	setFaults(t, e, emulator.Faults{Force429: 2})
	mustStatus(t, serve(e, apiReq{body: exampleAdd, auth: ptr("")}), 401) // does not use one up
	for i := range 2 {
		rec := serve(e, apiReq{body: exampleAdd})
		mustStatus(t, rec, 429)
		checkErrorBody(t, rec.Body.Bytes(), err429)
		if l, r, s := rateHeaders(rec); l != "300" || r != "0" || s != "60" || rec.Header().Get("Retry-After") != "60" {
			t.Errorf("forced 429 #%d headers: %v", i, rec.Header())
		}
		if left := e.Faults().Force429; left != 1-i {
			t.Errorf("Force429 left = %d, want %d", left, 1-i)
		}
	}
	rec := serve(e, apiReq{body: exampleAdd})
	mustStatus(t, rec, 200)
	if _, r, _ := rateHeaders(rec); r != "299" {
		t.Errorf("remaining = %q, want 299: forced 429s must not count", r)
	}
}

func TestFaultOutage(t *testing.T) {
	e, clock := newEmulator(t, nil)
	setFaults(t, e, emulator.Faults{Outage: true})
	for _, r := range []apiReq{{body: exampleAdd}, {body: "{", auth: ptr("")}, {contentType: ptr("")}} {
		rec := serve(e, r)
		mustStatus(t, rec, 503)
		checkErrorBody(t, rec.Body.Bytes(), err500)
		if l, _, _ := rateHeaders(rec); l != "" {
			t.Error("outage 503 has rate-limit headers")
		}
	}
	setFaults(t, e, emulator.Faults{OutageUntil: clock.Now().Add(5 * time.Second)})
	mustStatus(t, serve(e, apiReq{body: exampleAdd}), 503)
	clock.Advance(5 * time.Second)
	mustStatus(t, serve(e, apiReq{body: exampleAdd}), 200)
	for _, r := range e.Requests()[:4] {
		if r.Fault != emulator.FaultOutage || r.Status != 503 || r.Applied {
			t.Errorf("record = %+v", r)
		}
	}
}

func TestFaultScript(t *testing.T) {
	e, clock := newEmulator(t, func(c *emulator.Config) { c.RateLimit = 0 })
	setFaults(t, e, emulator.Faults{Script: []emulator.FaultStep{
		{After: 10 * time.Second, Duration: 10 * time.Second, Kind: emulator.Fault5xx},
		{After: 30 * time.Second, Duration: 5 * time.Second, Kind: emulator.FaultOutage},
		{After: 40 * time.Second, Duration: 5 * time.Second, Kind: emulator.Fault429},
		{After: 50 * time.Second, Kind: emulator.Fault5xx}, // open-ended
	}})
	steps := []struct {
		at   time.Duration
		want int
	}{
		{0, 200}, {9 * time.Second, 200}, {10 * time.Second, 500}, {19 * time.Second, 500}, {20 * time.Second, 200},
		{30 * time.Second, 503}, {35 * time.Second, 200}, {40 * time.Second, 429}, {45 * time.Second, 200},
		{50 * time.Second, 500}, {time.Hour, 500},
	}
	start := clock.Now()
	for _, s := range steps {
		clock.Set(start.Add(s.at))
		if got := serve(e, apiReq{body: exampleAdd}).Code; got != s.want {
			t.Errorf("at +%s: status %d, want %d", s.at, got, s.want)
		}
	}
	// Replacing the faults ends the script.
	setFaults(t, e, emulator.Faults{})
	mustStatus(t, serve(e, apiReq{body: exampleAdd}), 200)
}

// TestFaultReset runs over a real connection: the client must see a
// transport error, not a response.
func TestFaultReset(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults emulator.Faults
		apply  bool
	}{
		{"rate", emulator.Faults{ResetRate: 1}, false},
		{"rate apply first", emulator.Faults{ResetRate: 1, ApplyBeforeError: true}, true},
		{"script", emulator.Faults{Script: []emulator.FaultStep{{Kind: emulator.FaultReset}}}, false},
		{"outage", emulator.Faults{Outage: true, OutageReset: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newEmulator(t, nil)
			srv := httptest.NewServer(e)
			defer srv.Close()
			setFaults(t, e, tc.faults)
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
			resp, err := client.Do(apiReq{body: exampleAdd}.build(srv.URL))
			if err == nil {
				resp.Body.Close()
				t.Fatalf("got a response %s, want a connection error", resp.Status)
			}
			t.Logf("client error: %v", err)
			members := e.Members("ws1", "6HNBXFm7ZS", "JKTAuqTRhC")
			if tc.apply != (members != nil) {
				t.Errorf("members = %v, applied want %v", members, tc.apply)
			}
			r := e.Requests()[0]
			if r.Status != 0 || r.Applied != tc.apply || (r.Fault != emulator.FaultReset && r.Fault != emulator.FaultOutage) {
				t.Errorf("record = %+v", r)
			}
			setFaults(t, e, emulator.Faults{})
			resp, err = client.Do(apiReq{body: exampleAdd}.build(srv.URL))
			if err != nil {
				t.Fatalf("after clearing faults: %v", err)
			}
			if b := readAll(t, resp); resp.StatusCode != 200 || string(b) != successBody {
				t.Errorf("after clearing faults: %d %s", resp.StatusCode, b)
			}
		})
	}
}

// TestFaultResetUnhijackable: with a ResponseWriter that cannot be hijacked
// the emulator aborts the handler the way net/http expects.
func TestFaultResetUnhijackable(t *testing.T) {
	e, _ := newEmulator(t, nil)
	setFaults(t, e, emulator.Faults{ResetRate: 1})
	defer func() {
		if r := recover(); r != http.ErrAbortHandler {
			t.Fatalf("recovered %v, want http.ErrAbortHandler", r)
		}
	}()
	serve(e, apiReq{body: exampleAdd})
}

func TestFaultLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, err := emulator.New(emulator.Config{Credentials: testCreds, Faults: emulator.Faults{Latency: 250 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		mustStatus(t, serve(e, apiReq{body: exampleAdd}), 200)
		if d := time.Since(start); d != 250*time.Millisecond {
			t.Errorf("answered after %s, want 250ms", d)
		}
		setFaults(t, e, emulator.Faults{Latency: time.Second, LatencyJitter: time.Second})
		for range 20 {
			start = time.Now()
			serve(e, apiReq{body: exampleAdd})
			if d := time.Since(start); d < time.Second || d > 2*time.Second {
				t.Errorf("answered after %s, want within [1s, 2s]", d)
			}
		}
		if r := e.Requests()[0]; r.Latency != 250*time.Millisecond {
			t.Errorf("record latency = %s", r.Latency)
		}
	})
}

func TestFaultLatencyClientGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, err := emulator.New(emulator.Config{Credentials: testCreds, Faults: emulator.Faults{Latency: time.Minute}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req := apiReq{body: exampleAdd}.build("").WithContext(ctx)
		rec := httptest.NewRecorder()
		start := time.Now()
		e.ServeHTTP(rec, req)
		if d := time.Since(start); d != time.Second {
			t.Errorf("returned after %s, want 1s", d)
		}
		if rec.Body.Len() != 0 {
			t.Errorf("wrote %q to a client that went away", rec.Body.String())
		}
		if r := e.Requests()[0]; r.Fault != emulator.FaultCanceled || r.Status != 0 || r.Applied {
			t.Errorf("record = %+v", r)
		}
		if len(e.Segments()) != 0 {
			t.Error("a canceled request was applied")
		}
	})
}

func TestFaultsValidate(t *testing.T) {
	bad := []emulator.Faults{
		{ErrorRate: -0.1}, {ErrorRate: 1.1}, {ResetRate: 2}, {ErrorStatuses: []int{501}}, {ErrorStatuses: []int{429}},
		{Latency: -1}, {LatencyJitter: -1}, {ForbiddenVariant: "nope"}, {Force429: -1},
		{Script: []emulator.FaultStep{{Kind: "meteor"}}}, {Script: []emulator.FaultStep{{After: -1, Kind: emulator.Fault5xx}}},
		{RejectUIDs: []string{"u1", ""}}, {Script: []emulator.FaultStep{{Kind: emulator.FaultForbidden}}},
		{Script: []emulator.FaultStep{{Kind: emulator.FaultRejectUIDs}}},
		{LateRate: -0.1, LateDelay: time.Second}, {LateRate: 1.5, LateDelay: time.Second}, {LateRate: 0.5}, {LateDelay: -1},
	}
	e, _ := newEmulator(t, nil)
	for _, f := range bad {
		if err := e.SetFaults(f); err == nil {
			t.Errorf("SetFaults(%+v) accepted", f)
		}
	}
	if !reflect.DeepEqual(e.Faults(), emulator.Faults{}) {
		t.Errorf("invalid faults changed the active ones: %+v", e.Faults())
	}
}

func TestFaultsJSON(t *testing.T) {
	f := emulator.Faults{
		ErrorRate: 0.25, ErrorStatuses: []int{502}, Latency: 250 * time.Millisecond, LatencyJitter: time.Second,
		ResetRate: 0.1, Forbidden: true, ForbiddenVariant: emulator.ForbiddenBlocked, Outage: true,
		OutageUntil: windowAligned, OutageReset: true, Force429: 3, ApplyBeforeError: true,
		BadRequest: true, StatusFail: true, RejectUIDs: []string{"u1", "u2"}, LateRate: 0.05, LateDelay: 20 * time.Second,
		Script: []emulator.FaultStep{{After: time.Second, Duration: time.Minute, Kind: emulator.FaultReset}},
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"latency":"250ms"`) || !strings.Contains(string(b), `"force_429":3`) ||
		!strings.Contains(string(b), `"bad_request":true`) || !strings.Contains(string(b), `"status_fail":true`) ||
		!strings.Contains(string(b), `"reject_uids":["u1","u2"]`) || !strings.Contains(string(b), `"late_delay":"20s"`) {
		t.Errorf("JSON = %s", b)
	}
	var back emulator.Faults
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, f) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, f)
	}
	if err := json.Unmarshal([]byte(`{"latency":1000000}`), &back); err != nil || back.Latency != time.Millisecond {
		t.Errorf("numeric duration: %v %v", back.Latency, err)
	}
	if err := json.Unmarshal([]byte(`{"error_rat":1}`), &back); err == nil {
		t.Error("unknown key accepted")
	}
	if err := json.Unmarshal([]byte(`{"latency":"soon"}`), &back); err == nil {
		t.Error("bad duration accepted")
	}
}
