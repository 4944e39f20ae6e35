package emulator_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

func TestStateAddRemove(t *testing.T) {
	e, clock := newEmulator(t, func(c *emulator.Config) { c.RateLimit = 0 })
	steps := []struct {
		body string
		want []string
	}{
		{body("add_members", "p", "c1", "a", "b", "c"), []string{"a", "b", "c"}},
		{body("add_members", "p", "c1", "b", "d", "d"), []string{"a", "b", "c", "d"}}, // duplicates are harmless
		{body("remove_members", "p", "c1", "a", "zz"), []string{"b", "c", "d"}},       // removing a non-member is a no-op
		{body("remove_members", "p", "c1", "a"), []string{"b", "c", "d"}},
		{body("add_members", "p", "c1", "a"), []string{"a", "b", "c", "d"}},
		{body("remove_members", "p", "c1", "a", "b", "c", "d"), []string{}},
	}
	for i, s := range steps {
		clock.Advance(time.Second)
		mustStatus(t, serve(e, apiReq{body: s.body}), 200)
		if got := e.Members("ws1", "p", "c1"); !slices.Equal(got, s.want) {
			t.Fatalf("step %d: members = %v, want %v", i, got, s.want)
		}
	}
	seg, ok := e.Segment("ws1", "p", "c1")
	if !ok || seg.Requests != len(steps) || !seg.CreatedAt.Equal(windowAligned.Add(time.Second)) ||
		!seg.UpdatedAt.Equal(windowAligned.Add(time.Duration(len(steps))*time.Second)) {
		t.Errorf("segment = %+v", seg)
	}
}

func TestStateSegmentCreatedByFirstRemove(t *testing.T) {
	e, _ := newEmulator(t, nil)
	if e.Members("ws1", "p", "c9") != nil {
		t.Fatal("unknown segment has non-nil members")
	}
	mustStatus(t, serve(e, apiReq{body: body("remove_members", "p", "c9", "a")}), 200)
	seg, ok := e.Segment("ws1", "p", "c9")
	if !ok {
		t.Fatal("first remove_members did not create the segment")
	}
	if seg.Name != "Name_c9" || seg.Description != "desc" || len(seg.Members) != 0 || seg.Members == nil {
		t.Errorf("segment = %+v", seg)
	}
}

func TestStateKeysAndNames(t *testing.T) {
	e, _ := newEmulator(t, nil)
	ws2 := apiReq{auth: ptr(basic("ws2", "key2")), appKey: ptr("ws2")}
	reqs := []apiReq{
		{body: params(`{"cohort_name":"First","cohort_id":"c","cohort_description":"d1","members":[{"uid":"a"}]}`)},
		{body: `{"action":"add_members","partner":"q","parameters":{"cohort_name":"Other","cohort_id":"c","members":[{"uid":"b"}]}}`},
		{body: params(`{"cohort_name":"Renamed","cohort_id":"c","members":[{"uid":"c"}]}`)}, // no description: kept
		{body: params(`{"cohort_name":"Renamed","cohort_id":"c","cohort_description":"","members":[{"uid":"d"}]}`)},
	}
	for _, r := range reqs {
		mustStatus(t, serve(e, r), 200)
	}
	ws2.body = params(`{"cohort_name":"W2","cohort_id":"c","members":[{"uid":"z"}]}`)
	mustStatus(t, serve(e, ws2), 200)

	got := e.Segments()
	want := []emulator.Segment{
		{Workspace: "ws1", Partner: "p", CohortID: "c", Name: "Renamed", Description: "", Members: []string{"a", "c", "d"}, Requests: 3},
		{Workspace: "ws1", Partner: "q", CohortID: "c", Name: "Other", Members: []string{"b"}, Requests: 1},
		{Workspace: "ws2", Partner: "p", CohortID: "c", Name: "W2", Members: []string{"z"}, Requests: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("segments = %+v", got)
	}
	for i := range want {
		g := got[i]
		g.CreatedAt, g.UpdatedAt = time.Time{}, time.Time{}
		if g.Workspace != want[i].Workspace || g.Partner != want[i].Partner || g.CohortID != want[i].CohortID ||
			g.Name != want[i].Name || g.Description != want[i].Description || g.Requests != want[i].Requests ||
			!slices.Equal(g.Members, want[i].Members) {
			t.Errorf("segment %d = %+v, want %+v", i, g, want[i])
		}
	}
	// Description: set by the first call, kept when absent, replaced when present.
	mustStatus(t, serve(e, apiReq{body: params(`{"cohort_name":"X","cohort_id":"k","cohort_description":"d1","members":[{"uid":"a"}]}`)}), 200)
	mustStatus(t, serve(e, apiReq{body: params(`{"cohort_name":"X","cohort_id":"k","members":[{"uid":"a"}]}`)}), 200)
	if s, _ := e.Segment("ws1", "p", "k"); s.Description != "d1" {
		t.Errorf("description = %q, want d1 kept", s.Description)
	}
}

func TestUserStore(t *testing.T) {
	e, _ := newEmulator(t, func(c *emulator.Config) {
		c.Users = map[string][]string{"ws1": {"known1", "known2"}}
	})
	mustStatus(t, serve(e, apiReq{body: body("add_members", "p", "c", "known1", "ghost", "known2")}), 200)
	if got := e.Members("ws1", "p", "c"); !slices.Equal(got, []string{"known1", "known2"}) {
		t.Fatalf("members = %v", got)
	}
	reqs := e.Requests()
	if r := reqs[len(reqs)-1]; r.DroppedUnknown != 1 || !slices.Equal(r.Members, []string{"known1", "ghost", "known2"}) {
		t.Errorf("record = %+v", r)
	}
	// A workspace missing from an enabled store knows nobody.
	mustStatus(t, serve(e, apiReq{body: body("add_members", "p", "c", "known1"), auth: ptr(basic("ws2", "key2")), appKey: ptr("ws2")}), 200)
	if got := e.Members("ws2", "p", "c"); len(got) != 0 {
		t.Errorf("ws2 members = %v, want none", got)
	}
	e.SeedUsers("ws1", []string{"ghost"}, false)
	mustStatus(t, serve(e, apiReq{body: body("add_members", "p", "c", "ghost")}), 200)
	if got := e.Members("ws1", "p", "c"); !slices.Equal(got, []string{"ghost", "known1", "known2"}) {
		t.Fatalf("members after seeding = %v", got)
	}
	e.SeedUsers("ws1", []string{"only"}, true)
	if got := e.Users(); !slices.Equal(got["ws1"], []string{"only"}) {
		t.Errorf("users = %v", got)
	}
	// Removal ignores the store.
	mustStatus(t, serve(e, apiReq{body: body("remove_members", "p", "c", "known1")}), 200)
	if got := e.Members("ws1", "p", "c"); !slices.Equal(got, []string{"ghost", "known2"}) {
		t.Fatalf("members after remove = %v", got)
	}
	e.DisableUserStore()
	if e.Users() != nil {
		t.Error("Users() not nil after disabling")
	}
	mustStatus(t, serve(e, apiReq{body: body("add_members", "p", "c", "anyone")}), 200)
	if got := e.Members("ws1", "p", "c"); !slices.Contains(got, "anyone") {
		t.Errorf("members = %v, want anyone added with the store disabled", got)
	}
	// Reset restores the configured store.
	e.Reset()
	if got := e.Users(); !slices.Equal(got["ws1"], []string{"known1", "known2"}) {
		t.Errorf("users after reset = %v", got)
	}
}

// TestStateDiscardMembers: with DiscardMembers, requests are answered and
// logged as usual and segments count them, but no member is kept; with a
// user store, unknown uids are still counted as dropped.
func TestStateDiscardMembers(t *testing.T) {
	e, _ := newEmulator(t, func(c *emulator.Config) { c.RateLimit = 0; c.DiscardMembers = true })
	mustStatus(t, serve(e, apiReq{body: body("add_members", "p", "c1", "a", "b")}), 200)
	mustStatus(t, serve(e, apiReq{body: body("remove_members", "p", "c1", "a")}), 200)
	mustStatus(t, serve(e, apiReq{body: `{"action":"add_members"}`}), 400) // still validated
	seg, ok := e.Segment("ws1", "p", "c1")
	if !ok || seg.Requests != 2 || seg.Name != "Name_c1" || len(seg.Members) != 0 {
		t.Fatalf("segment = %+v, %v; want 2 requests and no members", seg, ok)
	}
	if got := e.Members("ws1", "p", "c1"); len(got) != 0 {
		t.Fatalf("members = %v, want none", got)
	}
	if rs := e.Requests(); len(rs) != 3 || !rs[0].Applied || len(rs[0].Members) != 2 {
		t.Fatalf("request log = %+v, want 3 records, the first applied with its 2 members", rs)
	}

	e, _ = newEmulator(t, func(c *emulator.Config) {
		c.RateLimit = 0
		c.DiscardMembers = true
		c.Users = map[string][]string{"ws1": {"a"}}
	})
	mustStatus(t, serve(e, apiReq{body: body("add_members", "p", "c1", "a", "b", "c")}), 200)
	if rs := e.Requests(); len(rs) != 1 || rs[0].DroppedUnknown != 2 {
		t.Fatalf("request log = %+v, want 2 unknown uids dropped", rs)
	}
	if got := e.Members("ws1", "p", "c1"); len(got) != 0 {
		t.Fatalf("members = %v, want none", got)
	}
}
