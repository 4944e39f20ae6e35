package emulator_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// windowAligned is a time at the start of a 60-second window.
var windowAligned = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

var testCreds = map[string]string{"ws1": "key1", "ws2": "key2"}

// newEmulator returns an emulator with DefaultConfig, two workspaces and a
// fake clock at windowAligned, after applying mutate.
func newEmulator(t testing.TB, mutate func(*emulator.Config)) (*emulator.Emulator, *fakeClock) {
	t.Helper()
	clock := newClock(windowAligned)
	cfg := emulator.DefaultConfig()
	cfg.Credentials = testCreds
	cfg.Now = clock.Now
	cfg.Seed = 1
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := emulator.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e, clock
}

// apiReq describes one request to the API; zero fields get valid defaults
// (POST, APIPath, JSON content type, ws1 credentials).
type apiReq struct {
	method      string
	path        string
	body        string
	contentType *string
	auth        *string // full Authorization header value; "" removes it
	appKey      *string // MOE-APPKEY; "" removes it
	header      map[string]string
}

func ptr[T any](v T) *T { return &v }

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func (a apiReq) build(base string) *http.Request {
	method := a.method
	if method == "" {
		method = http.MethodPost
	}
	path := a.path
	if path == "" {
		path = emulator.APIPath
	}
	req := httptest.NewRequest(method, "http://emulator"+path, strings.NewReader(a.body))
	if base != "" {
		var err error
		req, err = http.NewRequest(method, base+path, strings.NewReader(a.body))
		if err != nil {
			panic(err)
		}
	}
	ct := "application/json"
	if a.contentType != nil {
		ct = *a.contentType
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	auth := basic("ws1", "key1")
	if a.auth != nil {
		auth = *a.auth
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	appKey := "ws1"
	if a.appKey != nil {
		appKey = *a.appKey
	}
	if appKey != "" {
		req.Header.Set("MOE-APPKEY", appKey)
	}
	for k, v := range a.header {
		req.Header.Set(k, v)
	}
	return req
}

// serve runs one request in process.
func serve(h http.Handler, a apiReq) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, a.build(""))
	return rec
}

// body builds a request body.
func body(action, partner, cohortID string, uids ...string) string {
	members := make([]map[string]string, len(uids))
	for i, u := range uids {
		members[i] = map[string]string{"uid": u}
	}
	b, err := json.Marshal(map[string]any{
		"action":  action,
		"partner": partner,
		"parameters": map[string]any{
			"cohort_name":        "Name_" + cohortID,
			"cohort_id":          cohortID,
			"cohort_description": "desc",
			"members":            members,
		},
	})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// The two request examples of contract §9.1, verbatim.
const (
	exampleAdd    = `{"action": "add_members", "partner": "6HNBXFm7ZS", "parameters": {"cohort_name": "Partner_Name", "cohort_id": "JKTAuqTRhC", "cohort_description": "A cohort of users from a partner.", "members": [{"uid": "mm1UR87z4T"}, {"uid": "AtCxliflui"}]}}`
	exampleRemove = `{"action": "remove_members", "partner": "6HNBXFm7ZS", "parameters": {"cohort_name": "Partner_Name", "cohort_id": "JKTAuqTRhC", "cohort_description": "A cohort of users from a partner.", "members": [{"uid": "mm1UR87z4T"}]}}`
)

// successBody is the documented 200 body, byte for byte as the emulator
// writes it (compact JSON in the documented key order).
const successBody = `{"status":"success","message":"Your request has been accepted and will be processed soon."}`

var requestIDRe = regexp.MustCompile(`^[A-Za-z]{8}$`)

// wantErr is an expected error response.
type wantErr struct {
	typ, message, attribute string
}

// checkErrorBody decodes an error body strictly: exactly the documented
// keys, "status":"fail", an 8-letter request_id, and "attribute" present
// only when expected. It returns the request_id.
func checkErrorBody(t testing.TB, raw []byte, want wantErr) string {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatalf("error body is not a JSON object: %v: %s", err, raw)
	}
	if got := slices.Sorted(maps.Keys(top)); !slices.Equal(got, []string{"error", "status"}) {
		t.Fatalf("top-level keys = %v, want [error status]; body %s", got, raw)
	}
	if string(top["status"]) != `"fail"` {
		t.Errorf("status = %s, want \"fail\"", top["status"])
	}
	var detail map[string]any
	if err := json.Unmarshal(top["error"], &detail); err != nil {
		t.Fatalf("error is not an object: %s", raw)
	}
	wantKeys := []string{"message", "request_id", "type"}
	if want.attribute != "" {
		wantKeys = []string{"attribute", "message", "request_id", "type"}
	}
	if got := slices.Sorted(maps.Keys(detail)); !slices.Equal(got, wantKeys) {
		t.Errorf("error keys = %v, want %v; body %s", got, wantKeys, raw)
	}
	if detail["type"] != want.typ {
		t.Errorf("type = %q, want %q", detail["type"], want.typ)
	}
	if detail["message"] != want.message {
		t.Errorf("message = %q, want %q", detail["message"], want.message)
	}
	if want.attribute != "" && detail["attribute"] != want.attribute {
		t.Errorf("attribute = %q, want %q", detail["attribute"], want.attribute)
	}
	id, _ := detail["request_id"].(string)
	if !requestIDRe.MatchString(id) {
		t.Errorf("request_id = %q, want 8 ASCII letters", id)
	}
	return id
}

// readAll reads and closes a response body.
func readAll(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return b
}

func mustStatus(t testing.TB, rec *httptest.ResponseRecorder, want int) {
	t.Helper()
	if rec.Code != want {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, want, rec.Body.String())
	}
}

func uids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%04d", prefix, i)
	}
	return out
}
