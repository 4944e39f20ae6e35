package emulator_test

import (
	"bytes"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

// Verbatim messages of contract §7.3, repeated here as literals (not the
// package constants) so that a wrong constant fails the tests.
const (
	msgMalformed   = "Could not decode the request body. The JSON was incorrect or not encoded as UTF-8."
	msgAuthHeader  = "Authentication Header Required"
	msgSecret      = "App Secret key mismatch. Please login to the dashboard to verify key"
	msgAppKey      = "App key mismatch in params and authentication"
	msgSuspended   = "Your account is suspended. Please contact MoEngage team."
	msgTemp        = "Your account is temporarily suspended. Please contact MoEngage team."
	msgTooLarge    = "Payload can not exceed 128KB"
	msgMedia       = "Content type is not supported"
	msgRateLimited = "Rate limits for customers exceeded. Please Try After Some Time"
	msgServerError = "An unexpected error was encountered while processing this request. Please contact MoEngage Team"
)

var (
	errMalformed = wantErr{typ: "Malformed JSON", message: msgMalformed}
	errMedia     = wantErr{typ: "Unsupported media type", message: msgMedia}
	errTooLarge  = wantErr{typ: "Payload too large", message: msgTooLarge}
	errAuthHdr   = wantErr{typ: "Authentication required", message: msgAuthHeader}
	errSecret    = wantErr{typ: "Authentication required", message: msgSecret}
	errAppKey    = wantErr{typ: "Authentication Mismatch", message: msgAppKey}
	err429       = wantErr{typ: "Rate Limits Exceeded", message: msgRateLimited}
	err500       = wantErr{typ: "Server Error", message: msgServerError}
)

func missing(name string) wantErr {
	return wantErr{typ: "MissingAttributeError", message: name + " is not found in the payload", attribute: name}
}

func bad(name, message string) wantErr {
	return wantErr{typ: "Bad Request", message: message, attribute: name}
}

// params wraps a parameters object into an otherwise valid body.
func params(p string) string {
	return `{"action":"add_members","partner":"p","parameters":` + p + `}`
}

// withMembers wraps a members value into an otherwise valid body.
func withMembers(m string) string {
	return params(`{"cohort_name":"N","cohort_id":"c","members":` + m + `}`)
}

func TestAPIChecks(t *testing.T) {
	valid := body("add_members", "p", "c1", "u1")
	big := strings.Repeat(" ", emulator.DefaultMaxBodyBytes+1)
	tests := []struct {
		name   string
		req    apiReq
		status int
		want   *wantErr // nil: success
		allow  string
	}{
		// 1. method and path
		{name: "GET on path", req: apiReq{method: http.MethodGet}, status: 405, allow: "POST",
			want: &wantErr{typ: "Method Not Allowed", message: "The method is not allowed for the requested URL"}},
		{name: "PUT on path", req: apiReq{method: http.MethodPut, body: valid}, status: 405, allow: "POST",
			want: &wantErr{typ: "Method Not Allowed", message: "The method is not allowed for the requested URL"}},
		{name: "DELETE on path without auth", req: apiReq{method: http.MethodDelete, auth: ptr("")}, status: 405, allow: "POST",
			want: &wantErr{typ: "Method Not Allowed", message: "The method is not allowed for the requested URL"}},
		{name: "trailing slash", req: apiReq{path: emulator.APIPath + "/", body: valid}, status: 404,
			want: &wantErr{typ: "Not Found", message: "The requested resource was not found"}},
		{name: "other path", req: apiReq{path: "/v1/integrations/other", body: valid}, status: 404,
			want: &wantErr{typ: "Not Found", message: "The requested resource was not found"}},
		{name: "root", req: apiReq{path: "/", method: http.MethodGet}, status: 404,
			want: &wantErr{typ: "Not Found", message: "The requested resource was not found"}},

		// 2. content type
		{name: "no content type", req: apiReq{body: valid, contentType: ptr("")}, status: 415, want: &errMedia},
		{name: "text/plain", req: apiReq{body: valid, contentType: ptr("text/plain")}, status: 415, want: &errMedia},
		{name: "application/jsonx", req: apiReq{body: valid, contentType: ptr("application/jsonx")}, status: 415, want: &errMedia},
		{name: "latin1 charset", req: apiReq{body: valid, contentType: ptr("application/json; charset=iso-8859-1")}, status: 415, want: &errMedia},
		{name: "unparsable content type", req: apiReq{body: valid, contentType: ptr("application/json; charset")}, status: 415, want: &errMedia},
		{name: "charset utf-8", req: apiReq{body: valid, contentType: ptr("application/json; charset=utf-8")}, status: 200},
		{name: "upper case", req: apiReq{body: valid, contentType: ptr("Application/JSON; Charset=UTF-8")}, status: 200},
		{name: "415 before 401", req: apiReq{body: valid, contentType: ptr("text/plain"), auth: ptr("")}, status: 415, want: &errMedia},

		// 3. size
		{name: "413 before 401", req: apiReq{body: big, auth: ptr("")}, status: 413, want: &errTooLarge},

		// 4. authentication
		{name: "no Authorization", req: apiReq{body: valid, auth: ptr("")}, status: 401, want: &errAuthHdr},
		{name: "bearer", req: apiReq{body: valid, auth: ptr("Bearer abc")}, status: 401, want: &errAuthHdr},
		{name: "basic not base64", req: apiReq{body: valid, auth: ptr("Basic !!!")}, status: 401, want: &errAuthHdr},
		{name: "wrong key", req: apiReq{body: valid, auth: ptr(basic("ws1", "nope"))}, status: 401, want: &errSecret},
		{name: "key of other workspace", req: apiReq{body: valid, auth: ptr(basic("ws1", "key2"))}, status: 401, want: &errSecret},
		{name: "unknown workspace", req: apiReq{body: valid, auth: ptr(basic("ws9", "key1")), appKey: ptr("ws9")}, status: 401, want: &errSecret},
		{name: "MOE-APPKEY missing", req: apiReq{body: valid, appKey: ptr("")}, status: 400, want: ptr(missing("MOE-APPKEY"))},
		{name: "MOE-APPKEY mismatch", req: apiReq{body: valid, appKey: ptr("ws2")}, status: 401, want: &errAppKey},
		{name: "401 before body checks", req: apiReq{body: "{", auth: ptr("")}, status: 401, want: &errAuthHdr},
		{name: "second workspace", req: apiReq{body: valid, auth: ptr(basic("ws2", "key2")), appKey: ptr("ws2")}, status: 200},

		// 7. malformed
		{name: "empty body", req: apiReq{body: ""}, status: 400, want: &errMalformed},
		{name: "truncated", req: apiReq{body: valid[:len(valid)-1]}, status: 400, want: &errMalformed},
		{name: "array", req: apiReq{body: "[]"}, status: 400, want: &errMalformed},
		{name: "null", req: apiReq{body: "null"}, status: 400, want: &errMalformed},
		{name: "string", req: apiReq{body: `"x"`}, status: 400, want: &errMalformed},
		{name: "trailing data", req: apiReq{body: valid + "{}"}, status: 400, want: &errMalformed},
		{name: "invalid UTF-8", req: apiReq{body: strings.Replace(valid, "u1", "u\xff", 1)}, status: 400, want: &errMalformed},
		{name: "trailing whitespace ok", req: apiReq{body: "\n " + valid + " \r\n\t"}, status: 200},

		// 8. required attributes
		{name: "empty object", req: apiReq{body: "{}"}, status: 400, want: ptr(missing("action"))},
		{name: "action null", req: apiReq{body: `{"action":null,"partner":"p"}`}, status: 400, want: ptr(missing("action"))},
		{name: "keys are case sensitive", req: apiReq{body: strings.Replace(valid, `"action"`, `"Action"`, 1)}, status: 400, want: ptr(missing("action"))},
		{name: "partner missing", req: apiReq{body: `{"action":"add_members","parameters":{}}`}, status: 400, want: ptr(missing("partner"))},
		{name: "parameters missing", req: apiReq{body: `{"action":"add_members","partner":"p"}`}, status: 400, want: ptr(missing("parameters"))},
		{name: "cohort_name missing", req: apiReq{body: params(`{"cohort_id":"c","members":[{"uid":"u"}]}`)}, status: 400, want: ptr(missing("cohort_name"))},
		{name: "cohort_id missing", req: apiReq{body: params(`{"cohort_name":"N","members":[{"uid":"u"}]}`)}, status: 400, want: ptr(missing("cohort_id"))},
		{name: "members missing", req: apiReq{body: params(`{"cohort_name":"N","cohort_id":"c"}`)}, status: 400, want: ptr(missing("members"))},
		{name: "members null", req: apiReq{body: withMembers(`null`)}, status: 400, want: ptr(missing("members"))},
		{name: "uid missing", req: apiReq{body: withMembers(`[{"uid":"a"},{}]`)}, status: 400, want: ptr(missing("uid"))},
		{name: "uid null", req: apiReq{body: withMembers(`[{"uid":null}]`)}, status: 400, want: ptr(missing("uid"))},

		// 8. invalid values and types
		{name: "action unknown", req: apiReq{body: strings.Replace(valid, "add_members", "add", 1)}, status: 400,
			want: ptr(bad("action", "action must be one of add_members, remove_members"))},
		{name: "action empty", req: apiReq{body: strings.Replace(valid, "add_members", "", 1)}, status: 400,
			want: ptr(bad("action", "action must be one of add_members, remove_members"))},
		{name: "action number", req: apiReq{body: `{"action":1}`}, status: 400, want: ptr(bad("action", "action must be a string"))},
		{name: "partner number", req: apiReq{body: `{"action":"remove_members","partner":7}`}, status: 400, want: ptr(bad("partner", "partner must be a string"))},
		{name: "partner empty", req: apiReq{body: `{"action":"remove_members","partner":""}`}, status: 400, want: ptr(bad("partner", "partner must not be empty"))},
		{name: "parameters string", req: apiReq{body: params(`"x"`)}, status: 400, want: ptr(bad("parameters", "parameters must be an object"))},
		{name: "parameters array", req: apiReq{body: params(`[]`)}, status: 400, want: ptr(bad("parameters", "parameters must be an object"))},
		{name: "cohort_name empty", req: apiReq{body: params(`{"cohort_name":"","cohort_id":"c","members":[{"uid":"u"}]}`)}, status: 400,
			want: ptr(bad("cohort_name", "cohort_name must not be empty"))},
		{name: "cohort_name bool", req: apiReq{body: params(`{"cohort_name":true,"cohort_id":"c","members":[{"uid":"u"}]}`)}, status: 400,
			want: ptr(bad("cohort_name", "cohort_name must be a string"))},
		{name: "leading period rejected by default", req: apiReq{body: params(`{"cohort_name":".N","cohort_id":"c","members":[{"uid":"u"}]}`)}, status: 400,
			want: ptr(bad("cohort_name", "cohort_name must not start with a period (.)"))},
		{name: "cohort_id empty", req: apiReq{body: params(`{"cohort_name":"N","cohort_id":"","members":[{"uid":"u"}]}`)}, status: 400,
			want: ptr(bad("cohort_id", "cohort_id must not be empty"))},
		{name: "cohort_id number", req: apiReq{body: params(`{"cohort_name":"N","cohort_id":12,"members":[{"uid":"u"}]}`)}, status: 400,
			want: ptr(bad("cohort_id", "cohort_id must be a string"))},
		{name: "description number", req: apiReq{body: params(`{"cohort_name":"N","cohort_id":"c","cohort_description":1,"members":[{"uid":"u"}]}`)}, status: 400,
			want: ptr(bad("cohort_description", "cohort_description must be a string"))},
		{name: "description null ok", req: apiReq{body: params(`{"cohort_name":"N","cohort_id":"c","cohort_description":null,"members":[{"uid":"u"}]}`)}, status: 200},
		{name: "description absent ok", req: apiReq{body: params(`{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}]}`)}, status: 200},
		{name: "members empty", req: apiReq{body: withMembers(`[]`)}, status: 400, want: ptr(bad("members", "members must not be empty"))},
		{name: "members object", req: apiReq{body: withMembers(`{"uid":"u"}`)}, status: 400, want: ptr(bad("members", "members must be an array"))},
		{name: "member string", req: apiReq{body: withMembers(`[{"uid":"a"},"b"]`)}, status: 400, want: ptr(bad("members", "members[1] must be an object"))},
		{name: "uid number", req: apiReq{body: withMembers(`[{"uid":12}]`)}, status: 400, want: ptr(bad("uid", "uid must be a string"))},
		{name: "uid empty", req: apiReq{body: withMembers(`[{"uid":""}]`)}, status: 400, want: ptr(bad("uid", "uid must not be empty"))},
		{name: "unknown member key ignored", req: apiReq{body: withMembers(`[{"uid":"a","anonymous_id":"x"}]`)}, status: 200},
		{name: "parentheses accepted", req: apiReq{body: params(`{"cohort_name":"N (x)","cohort_id":"c","members":[{"uid":"u"}]}`)}, status: 200},
		{name: "brackets accepted", req: apiReq{body: params(`{"cohort_name":"[Amplitude][Cohort]","cohort_id":"c","members":[{"uid":"u"}]}`)}, status: 200},
		{name: "unknown top-level key ignored", req: apiReq{body: `{"extra":1,` + valid[1:]}, status: 200},
		{name: "action is checked before partner", req: apiReq{body: `{"action":"x"}`}, status: 400,
			want: ptr(bad("action", "action must be one of add_members, remove_members"))},

		// 9. success
		{name: "documented add example", req: apiReq{body: exampleAdd}, status: 200},
		{name: "documented remove example", req: apiReq{body: exampleRemove}, status: 200},
	}
	for _, c := range `|*?\:<>=$"` {
		name := "Bad" + string(c) + "Name"
		b, _ := jsonString(name)
		tests = append(tests, struct {
			name   string
			req    apiReq
			status int
			want   *wantErr
			allow  string
		}{
			name:   "forbidden char " + string(c),
			req:    apiReq{body: params(`{"cohort_name":` + b + `,"cohort_id":"c","members":[{"uid":"u"}]}`)},
			status: 400,
			want:   ptr(bad("cohort_name", `cohort_name must not contain any of the characters | * ? \ : < > = $ "`)),
		})
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newEmulator(t, nil)
			rec := serve(e, tc.req)
			mustStatus(t, rec, tc.status)
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if tc.allow != rec.Header().Get("Allow") {
				t.Errorf("Allow = %q, want %q", rec.Header().Get("Allow"), tc.allow)
			}
			if tc.want == nil {
				if got := rec.Body.String(); got != successBody {
					t.Errorf("body = %s, want %s", got, successBody)
				}
				return
			}
			id := checkErrorBody(t, rec.Body.Bytes(), *tc.want)
			reqs := e.Requests()
			if len(reqs) != 1 {
				t.Fatalf("request log has %d records, want 1", len(reqs))
			}
			if r := reqs[0]; r.RequestID != id || r.Status != tc.status || r.ErrorType != tc.want.typ || r.Applied {
				t.Errorf("record = %+v, want request_id %s status %d type %q not applied", r, id, tc.status, tc.want.typ)
			}
			if len(e.Segments()) != 0 {
				t.Errorf("a rejected request created segments: %+v", e.Segments())
			}
		})
	}
}

func jsonString(s string) (string, error) {
	var b bytes.Buffer
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String(), nil
}

// TestErrorBodyVerbatim checks the exact bytes of an error body against the
// documented example (contract §7.3), with the request_id masked.
func TestErrorBodyVerbatim(t *testing.T) {
	e, _ := newEmulator(t, nil)
	rec := serve(e, apiReq{body: `{"partner":"p"}`})
	mustStatus(t, rec, 400)
	re := regexp.MustCompile(`^\{"status":"fail","error":\{"attribute":"action","message":"action is not found in the payload","type":"MissingAttributeError","request_id":"[A-Za-z]{8}"\}\}$`)
	if !re.Match(rec.Body.Bytes()) {
		t.Errorf("body = %s", rec.Body.String())
	}
	rec = serve(e, apiReq{body: `{`})
	re = regexp.MustCompile(`^\{"status":"fail","error":\{"message":"Could not decode the request body. The JSON was incorrect or not encoded as UTF-8.","type":"Malformed JSON","request_id":"[A-Za-z]{8}"\}\}$`)
	if !re.Match(rec.Body.Bytes()) {
		t.Errorf("body = %s", rec.Body.String())
	}
}

func TestRequestIDsDiffer(t *testing.T) {
	e, _ := newEmulator(t, nil)
	seen := map[string]bool{}
	for range 50 {
		rec := serve(e, apiReq{body: "{"})
		id := checkErrorBody(t, rec.Body.Bytes(), errMalformed)
		if seen[id] {
			t.Fatalf("request_id %s repeated", id)
		}
		seen[id] = true
	}
}

func TestLeadingPeriodPolicy(t *testing.T) {
	dotted := params(`{"cohort_name":".N","cohort_id":"c","members":[{"uid":"u"}]}`)
	plain := params(`{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}]}`)
	tests := []struct {
		policy        string
		dotted, plain int
		dottedMsg     string
	}{
		{policy: "", dotted: 400, plain: 200, dottedMsg: "cohort_name must not start with a period (.)"},
		{policy: emulator.LeadingPeriodReject, dotted: 400, plain: 200, dottedMsg: "cohort_name must not start with a period (.)"},
		{policy: emulator.LeadingPeriodRequire, dotted: 200, plain: 400},
		{policy: emulator.LeadingPeriodIgnore, dotted: 200, plain: 200},
	}
	for _, tc := range tests {
		t.Run("policy="+tc.policy, func(t *testing.T) {
			e, _ := newEmulator(t, func(c *emulator.Config) { c.LeadingPeriod = tc.policy })
			rec := serve(e, apiReq{body: dotted})
			mustStatus(t, rec, tc.dotted)
			if tc.dotted == 400 {
				checkErrorBody(t, rec.Body.Bytes(), bad("cohort_name", tc.dottedMsg))
			}
			rec = serve(e, apiReq{body: plain})
			mustStatus(t, rec, tc.plain)
			if tc.plain == 400 {
				checkErrorBody(t, rec.Body.Bytes(), bad("cohort_name", "cohort_name must start with a period (.)"))
			}
		})
	}
}

func TestStrictMembers(t *testing.T) {
	e, _ := newEmulator(t, func(c *emulator.Config) { c.StrictMembers = true })
	rec := serve(e, apiReq{body: withMembers(`[{"uid":"a"},{"uid":"b","anonymous_id":"x"}]`)})
	mustStatus(t, rec, 400)
	checkErrorBody(t, rec.Body.Bytes(), bad("members", `members[1] has unknown attribute "anonymous_id"`))

	rec = serve(e, apiReq{body: params(`{"cohort_name":"N (x)","cohort_id":"c","members":[{"uid":"u"}]}`)})
	mustStatus(t, rec, 400)
	checkErrorBody(t, rec.Body.Bytes(), bad("cohort_name", "cohort_name must not contain parentheses"))

	mustStatus(t, serve(e, apiReq{body: exampleAdd}), 200)
}

func TestForbiddenVariants(t *testing.T) {
	tests := []struct {
		variant string
		want    wantErr
	}{
		{"", wantErr{typ: "Account Suspended", message: msgSuspended}},
		{emulator.ForbiddenSuspended, wantErr{typ: "Account Suspended", message: msgSuspended}},
		{emulator.ForbiddenBlocked, wantErr{typ: "BlockedClient", message: msgSuspended}},
		{emulator.ForbiddenTemporarilySuspended, wantErr{typ: "Account Temporarily Suspended", message: msgTemp}},
	}
	for _, tc := range tests {
		t.Run(tc.variant, func(t *testing.T) {
			e, _ := newEmulator(t, nil)
			if err := e.SetFaults(emulator.Faults{Forbidden: true, ForbiddenVariant: tc.variant}); err != nil {
				t.Fatal(err)
			}
			rec := serve(e, apiReq{body: exampleAdd})
			mustStatus(t, rec, 403)
			checkErrorBody(t, rec.Body.Bytes(), tc.want)
			if rec.Header().Get("X-Ratelimit-Limit") != "300" {
				t.Errorf("403 lacks rate-limit headers: %v", rec.Header())
			}
			// Authentication still comes first.
			mustStatus(t, serve(e, apiReq{body: exampleAdd, auth: ptr(basic("ws1", "bad"))}), 401)
			if len(e.Segments()) != 0 {
				t.Error("a forbidden request was applied")
			}
		})
	}
}

func TestMaxBodyBoundary(t *testing.T) {
	for _, limit := range []int{0, 300} { // 0: the default, 131072
		e, _ := newEmulator(t, func(c *emulator.Config) { c.MaxBodyBytes = limit })
		if limit == 0 {
			limit = 131072
		}
		base := body("add_members", "p", "c", "u1", "u2")
		exact := base + strings.Repeat(" ", limit-len(base))
		if len(exact) != limit {
			t.Fatalf("test body has %d bytes, want %d", len(exact), limit)
		}
		rec := serve(e, apiReq{body: exact})
		mustStatus(t, rec, 200)
		rec = serve(e, apiReq{body: exact + " "})
		mustStatus(t, rec, 413)
		checkErrorBody(t, rec.Body.Bytes(), errTooLarge)
		reqs := e.Requests()
		if got := reqs[1].BodyBytes; got != limit+1 {
			t.Errorf("413 record BodyBytes = %d, want %d (read at most limit+1)", got, limit+1)
		}
		// Far larger bodies are cut off at limit+1 bytes too.
		serve(e, apiReq{body: strings.Repeat("x", 3*limit)})
		if got := e.Requests()[2].BodyBytes; got != limit+1 {
			t.Errorf("BodyBytes = %d, want %d", got, limit+1)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  emulator.Config
		ok   bool
	}{
		{"no credentials", emulator.Config{}, false},
		{"minimal", emulator.Config{Credentials: testCreds}, true},
		{"default", func() emulator.Config { c := emulator.DefaultConfig(); c.Credentials = testCreds; return c }(), true},
		{"empty workspace", emulator.Config{Credentials: map[string]string{"": "k"}}, false},
		{"colon in workspace", emulator.Config{Credentials: map[string]string{"a:b": "k"}}, false},
		{"colon in key ok", emulator.Config{Credentials: map[string]string{"a": "k:k"}}, true},
		{"empty key", emulator.Config{Credentials: map[string]string{"a": ""}}, false},
		{"negative body", emulator.Config{Credentials: testCreds, MaxBodyBytes: -1}, false},
		{"negative rate", emulator.Config{Credentials: testCreds, RateLimit: -1}, false},
		{"negative window", emulator.Config{Credentials: testCreds, RateWindow: -1}, false},
		{"bad reset header", emulator.Config{Credentials: testCreds, ResetHeader: "rfc1123"}, false},
		{"bad leading period", emulator.Config{Credentials: testCreds, LeadingPeriod: "maybe"}, false},
		{"bad faults", emulator.Config{Credentials: testCreds, Faults: emulator.Faults{ErrorRate: 2}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			_, err = emulator.New(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("New() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if d := emulator.DefaultConfig(); d.MaxBodyBytes != 131072 || d.RateLimit != 300 || !d.CountRejected ||
		d.RateWindow.Seconds() != 60 || d.ResetHeader != "delta" || d.RetryAfter || d.LeadingPeriod != "reject" {
		t.Errorf("DefaultConfig() = %+v", d)
	}
}
