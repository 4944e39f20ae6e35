package emulator_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

func startServer(t *testing.T, mutate func(*emulator.Config)) (*emulator.Emulator, *httptest.Server, *emulator.AdminClient) {
	t.Helper()
	e, _ := newEmulator(t, mutate)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return e, srv, &emulator.AdminClient{BaseURL: srv.URL + "/", HTTPClient: srv.Client()}
}

func post(t *testing.T, srv *httptest.Server, a apiReq) int {
	t.Helper()
	resp, err := srv.Client().Do(a.build(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	return resp.StatusCode
}

func TestAdminClient(t *testing.T) {
	ctx := t.Context()
	_, srv, c := startServer(t, nil)
	if err := c.Healthz(ctx); err != nil {
		t.Fatal(err)
	}

	if got := post(t, srv, apiReq{body: body("add_members", "p", "c1", "b", "a"), header: map[string]string{
		"User-Agent": "worker/1.0", "X-Cohortsync-Replica": "replica-7"}}); got != 200 {
		t.Fatalf("status %d", got)
	}
	post(t, srv, apiReq{body: body("remove_members", "p", "c2", "x")})
	post(t, srv, apiReq{body: "{}"})

	segs, err := c.Segments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != 2 || segs[0].CohortID != "c1" || !slices.Equal(segs[0].Members, []string{"a", "b"}) ||
		segs[1].CohortID != "c2" || segs[1].Members == nil || len(segs[1].Members) != 0 {
		t.Errorf("segments = %+v", segs)
	}
	members, err := c.Members(ctx, "ws1", "p", "c1")
	if err != nil || !slices.Equal(members, []string{"a", "b"}) {
		t.Errorf("Members = %v, %v", members, err)
	}
	if members, err := c.Members(ctx, "ws1", "p", "nope"); err != nil || members != nil {
		t.Errorf("Members(unknown) = %v, %v", members, err)
	}

	reqs, err := c.Requests(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 3 {
		t.Fatalf("requests = %+v", reqs)
	}
	r := reqs[0]
	if r.Seq != 1 || r.UserAgent != "worker/1.0" || r.Replica != "replica-7" || r.Workspace != "ws1" || !r.AuthOK ||
		r.Status != 200 || r.Action != "add_members" || r.Partner != "p" || r.CohortID != "c1" || r.CohortName != "Name_c1" ||
		!slices.Equal(r.Members, []string{"b", "a"}) || r.BodyBytes == 0 || !requestIDRe.MatchString(r.RequestID) ||
		!strings.HasPrefix(r.RemoteAddr, "127.0.0.1:") || !r.Applied || !r.Counted || r.Method != "POST" || r.Path != emulator.APIPath {
		t.Errorf("record = %+v", r)
	}
	if reqs[2].Status != 400 || reqs[2].Attribute != "action" || reqs[2].ErrorType != "MissingAttributeError" {
		t.Errorf("record = %+v", reqs[2])
	}
	since, err := c.Requests(ctx, 2)
	if err != nil || len(since) != 1 || since[0].Seq != 3 {
		t.Errorf("Requests(since 2) = %+v, %v", since, err)
	}

	f := emulator.Faults{ErrorRate: 1, ErrorStatuses: []int{503}, Latency: time.Millisecond}
	if err := c.SetFaults(ctx, f); err != nil {
		t.Fatal(err)
	}
	got, err := c.Faults(ctx)
	if err != nil || got.ErrorRate != 1 || !slices.Equal(got.ErrorStatuses, []int{503}) || got.Latency != time.Millisecond {
		t.Errorf("Faults = %+v, %v", got, err)
	}
	if code := post(t, srv, apiReq{body: exampleAdd}); code != 503 {
		t.Errorf("status with faults = %d", code)
	}
	if err := c.SetFaults(ctx, emulator.Faults{ErrorRate: 3}); err == nil || !strings.Contains(err.Error(), "error rate") {
		t.Errorf("invalid faults: %v", err)
	}

	if err := c.SeedUsers(ctx, "ws1", []string{"known"}, true); err != nil {
		t.Fatal(err)
	}
	if err := c.SetFaults(ctx, emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	post(t, srv, apiReq{body: body("add_members", "p", "c3", "known", "ghost")})
	if members, _ := c.Members(ctx, "ws1", "p", "c3"); !slices.Equal(members, []string{"known"}) {
		t.Errorf("members with user store = %v", members)
	}
	if err := c.DisableUserStore(ctx); err != nil {
		t.Fatal(err)
	}
	post(t, srv, apiReq{body: body("add_members", "p", "c3", "ghost")})
	if members, _ := c.Members(ctx, "ws1", "p", "c3"); !slices.Equal(members, []string{"ghost", "known"}) {
		t.Errorf("members without user store = %v", members)
	}

	if err := c.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if segs, _ := c.Segments(ctx); len(segs) != 0 {
		t.Errorf("segments after reset = %+v", segs)
	}
	if reqs, _ := c.Requests(ctx, 0); len(reqs) != 0 {
		t.Errorf("requests after reset = %+v", reqs)
	}
	post(t, srv, apiReq{body: exampleAdd})
	if reqs, _ := c.Requests(ctx, 0); len(reqs) != 1 || reqs[0].Seq != 7 {
		t.Errorf("after reset, requests = %+v (Seq keeps increasing)", reqs)
	}
}

func TestAdminResetClearsRateWindowsAndFaults(t *testing.T) {
	e, _ := newEmulator(t, func(c *emulator.Config) {
		c.RateLimit = 1
		c.Faults = emulator.Faults{Force429: 1}
	})
	mustStatus(t, serve(e, apiReq{body: exampleAdd}), 429) // configured fault
	mustStatus(t, serve(e, apiReq{body: exampleAdd}), 200)
	mustStatus(t, serve(e, apiReq{body: exampleAdd}), 429) // window full
	setFaults(t, e, emulator.Faults{Forbidden: true})
	e.Reset()
	if f := e.Faults(); f.Forbidden || f.Force429 != 1 {
		t.Errorf("faults after reset = %+v, want the configured ones", f)
	}
	mustStatus(t, serve(e, apiReq{body: exampleAdd}), 429) // configured fault again
	mustStatus(t, serve(e, apiReq{body: exampleAdd}), 200) // window cleared
}

func TestAdminHTTP(t *testing.T) {
	e, _ := newEmulator(t, nil)
	mustStatus(t, serve(e, apiReq{body: body("add_members", "p", "c1", "a")}), 200)
	mustStatus(t, serve(e, apiReq{body: body("add_members", "q", "c2", "a")}), 200)
	tests := []struct {
		method, path, body string
		status             int
		contains           string
		allow              string
	}{
		{"GET", "/_emulator/healthz", "", 200, `{"status":"ok"}`, ""},
		{"GET", "/_emulator/segments?partner=q", "", 200, `"cohort_id":"c2"`, ""},
		{"GET", "/_emulator/segments?workspace=ws2", "", 200, `{"segments":[]}`, ""},
		{"GET", "/_emulator/segments?cohort_id=c1&partner=p&workspace=ws1", "", 200, `"members":["a"]`, ""},
		{"GET", "/_emulator/requests?since=1", "", 200, `"last_seq":2`, ""},
		{"GET", "/_emulator/requests?since=x", "", 400, `"error"`, ""},
		{"GET", "/_emulator/faults", "", 200, `"error_rate":0`, ""},
		{"PUT", "/_emulator/faults", `{"force_429":2,"latency":"0s"}`, 200, `"force_429":2`, ""},
		{"PUT", "/_emulator/faults", `{"force_429":-2}`, 400, `negative`, ""},
		{"PUT", "/_emulator/faults", `{"typo":1}`, 400, `unknown field`, ""},
		{"POST", "/_emulator/faults", `{}`, 405, `"error"`, "GET, PUT"},
		{"GET", "/_emulator/reset", "", 405, `"error"`, "POST"},
		{"POST", "/_emulator/users", `{"workspace_id":"ws1","uids":["a","b"]}`, 200, `"enabled":true`, ""},
		{"POST", "/_emulator/users", `{"uids":["a"]}`, 400, `workspace_id`, ""},
		{"GET", "/_emulator/users", "", 200, `"ws1":["a","b"]`, ""},
		{"DELETE", "/_emulator/users", "", 200, `"enabled":false`, ""},
		{"GET", "/_emulator/nope", "", 404, `"error"`, ""},
		{"GET", "/_emulator", "", 404, `"error"`, ""},
		{"POST", "/_emulator/reset", "", 200, `{"status":"ok"}`, ""},
		{"GET", "/_emulator/segments", "", 200, `{"segments":[]}`, ""},
	}
	for _, tc := range tests {
		req := httptest.NewRequest(tc.method, "http://emulator"+tc.path, strings.NewReader(tc.body))
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.contains) || rec.Header().Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d %s (Allow %q), want %d containing %s", tc.method, tc.path, rec.Code, rec.Body.String(),
				rec.Header().Get("Allow"), tc.status, tc.contains)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Errorf("%s %s: body is not JSON: %s", tc.method, tc.path, rec.Body.String())
		}
	}
	// Admin calls are not API requests.
	if n := len(e.Requests()); n != 0 {
		t.Errorf("request log has %d records after reset and admin calls", n)
	}
}

func TestAdminClientErrors(t *testing.T) {
	c := &emulator.AdminClient{BaseURL: "http://127.0.0.1:1"}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.Healthz(ctx); err == nil {
		t.Error("Healthz against a closed port succeeded")
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	c = &emulator.AdminClient{BaseURL: srv.URL}
	if _, err := c.Segments(ctx); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Segments against a non-emulator: %v", err)
	}
}
