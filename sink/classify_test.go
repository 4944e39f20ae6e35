package sink

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"testing"
	"time"
)

// TestClassify: every class of answer, and what follows from it.
func TestClassify(t *testing.T) {
	se := func(code int, typ, attr string) *StatusError {
		return &StatusError{Code: code, Type: typ, Attribute: attr, Message: "m"}
	}
	withDelay := func(e *StatusError, d time.Duration) *StatusError { e.RetryAfter = d; return e }
	timeoutErr := &url.Error{Op: "Post", URL: "https://x", Err: context.DeadlineExceeded}
	resetErr := &url.Error{Op: "Post", URL: "https://x", Err: &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}}
	for _, tc := range []struct {
		name string
		serr *StatusError
		err  error
		want decision
	}{
		{"lease expired before the write", nil, fmt.Errorf("sink: %w", errLeaseExpired), decision{kind: retryNow, reason: "lease"}},
		{"attempt timeout", nil, timeoutErr, decision{kind: retryBackoff, reason: "timeout"}},
		{"connection reset", nil, resetErr, decision{kind: retryBackoff, reason: "network"}},
		{"200 status fail", se(200, "Bad Request", ""), nil, decision{kind: retryBackoff, reason: "status_fail"}},
		{"202 status fail, Retry-After", withDelay(se(202, "", ""), time.Second), nil, decision{kind: retryBackoff, reason: "status_fail", delay: time.Second}},
		{"429", withDelay(se(429, "Rate Limits Exceeded", ""), 7*time.Second), nil, decision{kind: retryPause, reason: "rate_limited", delay: 7 * time.Second}},
		{"429 no delay", se(429, "", ""), nil, decision{kind: retryPause, reason: "rate_limited"}},
		{"408", se(408, "", ""), nil, decision{kind: retryBackoff, reason: "timeout"}},
		{"500", se(500, "Server Error", ""), nil, decision{kind: retryBackoff, reason: "server_error"}},
		{"503 Retry-After", withDelay(se(503, "", ""), 2*time.Second), nil, decision{kind: retryBackoff, reason: "server_error", delay: 2 * time.Second}},
		{"401", se(401, "Authentication required", ""), nil, decision{kind: stopLine, reason: "auth", stop: stopAuth}},
		{"403", se(403, "Account Suspended", ""), nil, decision{kind: stopLine, reason: "auth", stop: stopAuth}},
		{"409 Authentication Mismatch", se(409, "Authentication Mismatch", ""), nil, decision{kind: stopLine, reason: "auth", stop: stopAuth}},
		{"400 Authentication required, attribute uid", se(400, "Authentication required", "uid"), nil, decision{kind: stopLine, reason: "auth", stop: stopAuth}},
		{"415", se(415, "Unsupported media type", ""), nil, decision{kind: stopLine, reason: "auth", stop: stopConfig}},
		{"404", se(404, "", ""), nil, decision{kind: stopLine, reason: "auth", stop: stopConfig}},
		{"405", se(405, "", ""), nil, decision{kind: stopLine, reason: "auth", stop: stopConfig}},
		{"302", se(302, "", ""), nil, decision{kind: stopLine, reason: "auth", stop: stopConfig}},
		{"200 not the API's body", &StatusError{Code: 200, NotAPI: true}, nil, decision{kind: stopLine, reason: "auth", stop: stopConfig}},
		{"400 attribute MOE-APPKEY", se(400, "MissingAttributeError", "MOE-APPKEY"), nil, decision{kind: stopLine, reason: "auth", stop: stopConfig}},
		{"400 attribute content-type", se(400, "Missing header value", "Content-Type"), nil, decision{kind: stopLine, reason: "auth", stop: stopConfig}},
		{"413", se(413, "Payload too large", ""), nil, decision{kind: splitHalves, reason: "too_large"}},
		{"400 cohort_name", se(400, "Bad Request", "cohort_name"), nil, decision{kind: rejectAll, reason: "invalid"}},
		{"400 cohort_id", se(400, "Bad Request", "cohort_id"), nil, decision{kind: rejectAll, reason: "invalid"}},
		{"400 partner", se(400, "Bad Request", "partner"), nil, decision{kind: rejectAll, reason: "invalid"}},
		{"400 action", se(400, "MissingAttributeError", "action"), nil, decision{kind: rejectAll, reason: "invalid"}},
		{"400 parameters", se(400, "Bad Request", "parameters"), nil, decision{kind: rejectAll, reason: "invalid"}},
		{"400 cohort_description", se(400, "Bad Request", "cohort_description"), nil, decision{kind: rejectAll, reason: "invalid"}},
		{"400 uid", se(400, "InvalidAttributeError", "uid"), nil, decision{kind: isolate, reason: "invalid", member: true}},
		{"422 members", se(422, "Bad Request", "members"), nil, decision{kind: isolate, reason: "invalid", member: true}},
		{"400 Malformed JSON, no attribute", se(400, "Malformed JSON", ""), nil, decision{kind: isolate, reason: "invalid"}},
		{"400 unknown attribute", se(400, "MissingAttributeError", "identifiers"), nil, decision{kind: isolate, reason: "invalid"}},
		{"409 no attribute", se(409, "", ""), nil, decision{kind: isolate, reason: "invalid"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.serr, tc.err); got != tc.want {
				t.Fatalf("classify = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestSuccessBody: which 2xx bodies are an acceptance, the error
// envelope, or not the API's answer at all.
func TestSuccessBody(t *testing.T) {
	for body, want := range map[string]successOutcome{
		`{"status":"success","message":"Your request has been accepted and will be processed soon."}`: accepted,
		`{"status":" Success ","request_id":"x","extra":[1]}`:                                         accepted,
		`{"status":"fail","error":{"message":"Malformed JSON","type":"Bad Request"}}`:                 saysFail,
		`{"status": "FAIL"}`:                saysFail,
		`{"message":"status"}`:              notAPI,
		`{"status":["fail"]}`:               notAPI,
		`{"status":"queued"}`:               notAPI,
		`{"status":null}`:                   notAPI,
		`not json "status"`:                 notAPI,
		``:                                  notAPI,
		`null`:                              notAPI,
		`<html><body>Sign in</body></html>`: notAPI,
		`[{"status":"success"}]`:            notAPI,
		`{"error":{"status":"fail"}}`:       notAPI,
		`{"status":"success"} trailing`:     notAPI,
	} {
		if got := successBody([]byte(body)); got != want {
			t.Errorf("successBody(%s) = %v, want %v", body, got, want)
		}
	}
}
