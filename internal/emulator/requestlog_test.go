package emulator_test

import (
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

func TestRequestLogBounded(t *testing.T) {
	e, _ := newEmulator(t, func(c *emulator.Config) { c.RequestLogSize = 3; c.RateLimit = 0 })
	for i := range 10 {
		serve(e, apiReq{body: body("add_members", "p", "c", uids("u", i+1)...)})
	}
	reqs := e.Requests()
	if len(reqs) != 3 || reqs[0].Seq != 8 || reqs[2].Seq != 10 || len(reqs[2].Members) != 10 {
		t.Fatalf("requests = %+v", reqs)
	}
	if got := e.RequestsSince(9); len(got) != 1 || got[0].Seq != 10 {
		t.Errorf("RequestsSince(9) = %+v", got)
	}
	if got := e.RequestsSince(100); len(got) != 0 {
		t.Errorf("RequestsSince(100) = %+v", got)
	}
	if last, dropped := e.RequestLogStats(); last != 10 || dropped != 7 {
		t.Errorf("stats = %d, %d", last, dropped)
	}
	// Returned records are copies.
	reqs[2].Members[0] = "mutated"
	if e.Requests()[2].Members[0] == "mutated" {
		t.Error("Requests shares member slices with the log")
	}
}

func TestRequestLogMemberBound(t *testing.T) {
	e, _ := newEmulator(t, func(c *emulator.Config) { c.RequestLogMaxMembers = 25; c.RateLimit = 0 })
	for range 5 {
		serve(e, apiReq{body: body("add_members", "p", "c", uids("u", 10)...)})
	}
	reqs := e.Requests()
	if len(reqs) != 2 || reqs[0].Seq != 4 {
		t.Fatalf("kept %d records (first %d), want the newest 2", len(reqs), reqs[0].Seq)
	}
	// A single record over the bound is dropped too.
	serve(e, apiReq{body: body("add_members", "p", "c", uids("u", 30)...)})
	if reqs := e.Requests(); len(reqs) != 0 {
		t.Errorf("kept %d records", len(reqs))
	}
}

func TestRequestLogDisabled(t *testing.T) {
	e, _ := newEmulator(t, func(c *emulator.Config) { c.RequestLogSize = -1 })
	serve(e, apiReq{body: exampleAdd})
	if len(e.Requests()) != 0 {
		t.Error("disabled log kept records")
	}
	if last, dropped := e.RequestLogStats(); last != 1 || dropped != 1 {
		t.Errorf("stats = %d, %d", last, dropped)
	}
	if e.Members("ws1", "6HNBXFm7ZS", "JKTAuqTRhC") == nil {
		t.Error("request not applied")
	}
}

func TestRequestLogFailures(t *testing.T) {
	e, _ := newEmulator(t, nil)
	serve(e, apiReq{body: exampleAdd, auth: ptr(basic("ws2", "wrong")), appKey: ptr("ws2")})
	serve(e, apiReq{body: exampleAdd, auth: ptr(""), appKey: ptr("wsX")})
	serve(e, apiReq{body: `{"action":"add_members","partner":"p","parameters":{"cohort_id":"c"}}`})
	reqs := e.Requests()
	if r := reqs[0]; r.Workspace != "ws2" || r.AuthOK || r.Status != 401 || r.Counted {
		t.Errorf("record = %+v", r)
	}
	if r := reqs[1]; r.Workspace != "wsX" || r.AuthOK {
		t.Errorf("record = %+v", r)
	}
	if r := reqs[2]; !r.AuthOK || r.Action != "add_members" || r.Partner != "p" || r.Attribute != "cohort_name" || r.Members != nil {
		t.Errorf("record = %+v", r)
	}
}
