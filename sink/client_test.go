package sink_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestRequestHeadersAndBody checks one request on the wire: method, path
// under a base-URL prefix, every documented header, and the exact body.
func TestRequestHeadersAndBody(t *testing.T) {
	for _, tc := range []struct {
		name, ua, replica, wantUA string
	}{
		{name: "defaults", wantUA: "cohortsync-worker"},
		{name: "custom", ua: "cohortsync-worker/1.2.3", replica: "host-42", wantUA: "cohortsync-worker/1.2.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &api{}
			srv := httptest.NewServer(a)
			defer srv.Close()
			c, err := sink.New(sink.Config{BaseURL: srv.URL + "/proxy/", WorkspaceID: testWorkspace, APIKey: testKey,
				UserAgent: tc.ua, ReplicaID: tc.replica, Metrics: metrics.NewMetrics(nil)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseIdleConnections()
			req := request(3)
			if _, err := c.Send(t.Context(), req); err != nil {
				t.Fatal(err)
			}
			calls := a.got()
			if len(calls) != 1 {
				t.Fatalf("%d requests", len(calls))
			}
			got := calls[0]
			if got.method != http.MethodPost || got.path != "/proxy/v1/integrations/cohortsync" {
				t.Fatalf("%s %s, want POST /proxy/v1/integrations/cohortsync", got.method, got.path)
			}
			if want := wire.AppendBody(nil, req); string(got.body) != string(want) {
				t.Fatalf("body\n got %s\nwant %s", got.body, want)
			}
			h := got.header
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			auth := h.Get("Authorization")
			enc, found := strings.CutPrefix(auth, "Basic ")
			if !found {
				t.Fatalf("Authorization %q is not Basic", auth)
			}
			dec, err := base64.StdEncoding.DecodeString(enc)
			if err != nil || string(dec) != testWorkspace+":"+testKey {
				t.Fatalf("Basic credentials decode to %q (%v)", dec, err)
			}
			if v := h.Values("Moe-Appkey"); len(v) != 1 || v[0] != testWorkspace {
				t.Fatalf("MOE-APPKEY %q, want the workspace ID", v)
			}
			if ua := h.Get("User-Agent"); ua != tc.wantUA {
				t.Fatalf("User-Agent %q, want %q", ua, tc.wantUA)
			}
			if r := h.Get("X-Cohortsync-Replica"); r != tc.replica {
				t.Fatalf("X-Cohortsync-Replica %q, want %q", r, tc.replica)
			}
			if _, sent := h["Moe-Destination-Partner"]; sent {
				t.Fatal("MOE-DESTINATION-PARTNER must never be sent")
			}
			if got.header.Get("Content-Length") != fmt.Sprint(len(got.body)) {
				t.Fatalf("Content-Length %q for %d bytes", got.header.Get("Content-Length"), len(got.body))
			}
		})
	}
}

// TestAPIKeyNeverLeaks runs failures of every kind, with a server that
// echoes the key back, and scans every log line, error and rejection.
func TestAPIKeyNeverLeaks(t *testing.T) {
	cred := base64.StdEncoding.EncodeToString([]byte(testWorkspace + ":" + testKey))
	echo := func(status int, attr string) reply {
		return fail(status, "Authentication required "+testKey, "bad key "+testKey+" / "+cred, attr)
	}
	modes(t, func(t *testing.T, mode string) {
		var texts []string
		check := func(t *testing.T, what, s string) {
			t.Helper()
			texts = append(texts, s)
			if strings.Contains(s, testKey) || strings.Contains(s, cred) {
				t.Errorf("%s leaks the API key: %s", what, s)
			}
		}
		maxElapsed := 2 * time.Second
		if mode == "http" {
			maxElapsed = 200 * time.Millisecond
		}
		scenarios := []func(n int, c call) reply{
			func(n int, c call) reply { // auth failures, then success
				if n < 2 {
					return echo(401, "")
				}
				return ok()
			},
			func(n int, c call) reply { return echo(400, "uid") }, // rejections, isolated
			func(n int, c call) reply { // server errors until giving up
				if n%2 == 0 {
					return reply{reset: true}
				}
				return echo(503, "")
			},
			func(n int, c call) reply { return echo(413, "") },
		}
		for i, respond := range scenarios {
			e := newEnv(t, mode, respond, func(c *sink.Config) { c.MaxElapsed = maxElapsed })
			rej, err := e.client.Send(t.Context(), request(4))
			if err != nil {
				check(t, fmt.Sprintf("scenario %d error", i), err.Error())
				var se *sink.StatusError
				if errors.As(err, &se) {
					check(t, "StatusError fields", se.Type+se.Message+se.Attribute+se.RequestID)
				}
			}
			for _, r := range rej {
				check(t, fmt.Sprintf("scenario %d rejection", i), r.Reason)
			}
			check(t, fmt.Sprintf("scenario %d logs", i), e.logs.String())
		}
		// The test must have seen the failures it scans.
		all := strings.Join(texts, "\n")
		for _, want := range []string{"[REDACTED]", "401", "400", "503", "413", "sink: gave up"} {
			if !strings.Contains(all, want) {
				t.Fatalf("scanned texts lack %q; the scenarios did not run as intended:\n%s", want, all)
			}
		}
	})
	// Configuration errors.
	for _, cfg := range []sink.Config{
		{BaseURL: "https://" + testWorkspace + ":" + testKey + "@api-01.moengage.com", WorkspaceID: testWorkspace, APIKey: testKey},
		{BaseURL: "https://api-01.moengage.com?key=" + testKey, WorkspaceID: testWorkspace, APIKey: testKey},
		{BaseURL: "ftp://x?key=" + testKey, WorkspaceID: testWorkspace, APIKey: testKey},
		{BaseURL: "https://api-01.moengage.com#" + testKey, WorkspaceID: testWorkspace, APIKey: testKey},
		{BaseURL: "http://[::1" + testKey, WorkspaceID: testWorkspace, APIKey: testKey},
		{BaseURL: "https://api-01.moengage.com", WorkspaceID: "a:b", APIKey: testKey},
		{BaseURL: "https://api-01.moengage.com", WorkspaceID: testWorkspace, APIKey: testKey, MaxBodyBytes: -1},
	} {
		err := cfg.Validate()
		if err == nil {
			t.Fatalf("Validate(%+v) = nil", cfg.BaseURL)
		}
		if strings.Contains(err.Error(), testKey) || strings.Contains(err.Error(), cred) {
			t.Errorf("Validate error leaks the key: %v", err)
		}
	}
}

// TestMaxBodyBytesBoundary: a body of exactly MaxBodyBytes goes in one
// request; one byte more is split into two, each within the cap.
func TestMaxBodyBytesBoundary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		req := request(7)
		size := wire.Size(req)
		for _, tc := range []struct {
			max, requests int
		}{{size, 1}, {size - 1, 2}} {
			e := newEnv(t, "mem", nil, func(c *sink.Config) { c.MaxBodyBytes = tc.max })
			if rej, err := e.client.Send(t.Context(), req); err != nil || len(rej) != 0 {
				t.Fatalf("max %d: rejections %v, err %v", tc.max, rej, err)
			}
			calls := e.api.got()
			if len(calls) != tc.requests {
				t.Fatalf("max %d (body %d): %d requests, want %d", tc.max, size, len(calls), tc.requests)
			}
			checkBodies(t, calls, req)
			var uids []string
			for _, c := range calls {
				if len(c.body) > tc.max {
					t.Fatalf("a %d-byte body was sent with MaxBodyBytes %d", len(c.body), tc.max)
				}
				uids = append(uids, c.req.UIDs...)
			}
			if !slices.Equal(uids, req.UIDs) {
				t.Fatalf("members sent %v, want %v", uids, req.UIDs)
			}
			if e.retries("too_large") != 0 {
				t.Fatal("a split before sending is not a retry")
			}
		}
	})
}

// TestMemberTooLargeAlone: a member whose request alone exceeds the cap is
// rejected without being sent; the others are sent.
func TestMemberTooLargeAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		req := request(4)
		req.UIDs[2] = strings.Repeat("x", 500)
		e := newEnv(t, "mem", nil, func(c *sink.Config) { c.MaxBodyBytes = 400 })
		rej, err := e.client.Send(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if len(rej) != 1 || rej[0].UID != req.UIDs[2] || !strings.Contains(rej[0].Reason, "too large") {
			t.Fatalf("rejections %+v", rej)
		}
		var sent []string
		for _, c := range e.api.got() {
			sent = append(sent, c.req.UIDs...)
		}
		if want := []string{"u0", "u1", "u3"}; !slices.Equal(sent, want) {
			t.Fatalf("sent %v, want %v", sent, want)
		}
	})
}

func TestSendNoMembers(t *testing.T) {
	e := newEnv(t, "http", nil, nil)
	req := request(0)
	if rej, err := e.client.Send(t.Context(), req); err != nil || rej != nil {
		t.Fatalf("rejections %v, err %v", rej, err)
	}
	if n := len(e.api.got()); n != 0 {
		t.Fatalf("%d requests for no members", n)
	}
}

// TestRetryLogDeduplicated: a repeating failure is logged once, with the
// documented keys; a different one is logged again; recovery is logged.
func TestRetryLogDeduplicated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", func(n int, _ call) reply {
			switch {
			case n < 5: // the request_id differs on each answer
				r := fail(500, "Server Error", "boom", "")
				r.body = strings.Replace(r.body, "ReqIdAbc", fmt.Sprintf("Req%05d", n), 1)
				return r
			case n < 7:
				return reply{status: 502}
			case n < 8:
				return reply{reset: true}
			}
			return ok()
		}, nil)
		if _, err := e.client.Send(t.Context(), request(3)); err != nil {
			t.Fatal(err)
		}
		lines := e.logs.lines(t, "failed; retrying")
		if len(lines) != 3 {
			t.Fatalf("%d retry log lines, want 3 (500, 502, reset):\n%s", len(lines), e.logs)
		}
		for i, want := range []float64{500, 502, 0} {
			if lines[i]["status"] != want {
				t.Fatalf("line %d status %v, want %v", i, lines[i]["status"], want)
			}
		}
		for _, k := range []string{"err", "status", "attempt", "delay", "cohort_id", "action", "members", "component"} {
			if _, ok := lines[0][k]; !ok {
				t.Fatalf("retry log line lacks %q: %v", k, lines[0])
			}
		}
		if lines[0]["component"] != "sink" || lines[0]["cohort_id"] != "JKTAuqTRhC" || lines[0]["action"] != "add_members" ||
			lines[0]["members"] != 3.0 || lines[1]["attempt"] != 6.0 {
			t.Fatalf("unexpected values: %v / %v", lines[0], lines[1])
		}
		if lines[0]["level"] != "WARN" {
			t.Fatalf("level %v", lines[0]["level"])
		}
		if n := len(e.logs.lines(t, "succeeded after retrying")); n != 1 {
			t.Fatalf("%d recovery lines, want 1", n)
		}
	})
}

// TestResponseBodiesDrained: error answers with bodies larger than what is
// parsed still leave the connection reusable: one connection serves every
// request.
func TestResponseBodiesDrained(t *testing.T) {
	big := `{"status":"fail","error":{"type":"Server Error","message":"` + strings.Repeat("x", 100<<10) + `"}}`
	var n atomic.Int64
	a := &api{respond: func(i int, _ call) reply {
		if i%2 == 0 {
			return reply{status: 500, body: big}
		}
		return reply{status: 200, body: big}
	}}
	srv := httptest.NewUnstartedServer(a)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c, err := sink.New(sink.Config{BaseURL: srv.URL, WorkspaceID: testWorkspace, APIKey: testKey,
		InitialInterval: time.Millisecond, Metrics: metrics.NewMetrics(nil),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	for range 5 {
		if _, err := c.Send(t.Context(), request(2)); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(a.got()); got != 10 {
		t.Fatalf("%d requests, want 10", got)
	}
	if got := n.Load(); got != 1 {
		t.Fatalf("%d connections for 10 sequential requests, want 1 (bodies not drained?)", got)
	}
}

// TestCallerHTTPClientDoesNotFollowRedirects: even a caller's client, which
// would follow a 302 (as a GET), gets the 3xx as an answer; the caller's
// client itself is left unchanged.
func TestCallerHTTPClientDoesNotFollowRedirects(t *testing.T) {
	var redirects atomic.Int64
	a := &api{respond: func(n int, c call) reply {
		if n == 0 {
			redirects.Add(1)
			return reply{status: 302, header: map[string]string{"Location": "/elsewhere"}}
		}
		return ok()
	}}
	srv := httptest.NewServer(a)
	defer srv.Close()
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	defer hc.CloseIdleConnections()
	c, err := sink.New(sink.Config{BaseURL: srv.URL, WorkspaceID: testWorkspace, APIKey: testKey,
		AuthRetryInterval: time.Millisecond, HTTPClient: hc, Metrics: metrics.NewMetrics(nil),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(t.Context(), request(2)); err != nil {
		t.Fatal(err)
	}
	calls := a.got()
	if len(calls) != 2 || calls[1].method != http.MethodPost || calls[1].path != sink.Path {
		t.Fatalf("calls %d, second %s %s; want the POST retried, not the redirect followed", len(calls), calls[1].method, calls[1].path)
	}
	if hc.CheckRedirect != nil {
		t.Fatal("the caller's client was modified")
	}
}

// TestConcurrentSendsShareAuthState: the auth state is the client's, not a
// Send's: one Send's 2xx clears it for all.
func TestConcurrentSendsShareAuthState(t *testing.T) {
	var mu sync.Mutex
	accept := false
	e := newEnv(t, "http", func(int, call) reply {
		mu.Lock()
		defer mu.Unlock()
		if accept {
			return ok()
		}
		return fail(401, "Authentication required", "Authentication Header Required", "")
	}, nil)
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			req := request(2)
			req.CohortID = fmt.Sprint("c", i)
			_, err := e.client.Send(t.Context(), req)
			errs <- err
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for !e.client.AuthFailing() {
		if time.Now().After(deadline) {
			t.Fatal("AuthFailing never became true")
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	accept = true
	mu.Unlock()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if e.client.AuthFailing() {
		t.Fatal("AuthFailing still true")
	}
}

func TestConfigValidate(t *testing.T) {
	good := sink.Config{BaseURL: "https://api-01.moengage.com", WorkspaceID: "WS", APIKey: "k"}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, mod := range map[string]func(*sink.Config){
		"no base URL":      func(c *sink.Config) { c.BaseURL = "" },
		"relative URL":     func(c *sink.Config) { c.BaseURL = "api-01.moengage.com" },
		"bad scheme":       func(c *sink.Config) { c.BaseURL = "ftp://api-01.moengage.com" },
		"unparsable":       func(c *sink.Config) { c.BaseURL = "http://[::1" },
		"query":            func(c *sink.Config) { c.BaseURL = "https://h/?a=b" },
		"userinfo":         func(c *sink.Config) { c.BaseURL = "https://u:p@h" },
		"no workspace":     func(c *sink.Config) { c.WorkspaceID = "" },
		"colon workspace":  func(c *sink.Config) { c.WorkspaceID = "a:b" },
		"newline in ws":    func(c *sink.Config) { c.WorkspaceID = "a\nb" },
		"no key":           func(c *sink.Config) { c.APIKey = "" },
		"negative bytes":   func(c *sink.Config) { c.MaxBodyBytes = -1 },
		"negative timeout": func(c *sink.Config) { c.AttemptTimeout = -time.Second },
		"negative elapsed": func(c *sink.Config) { c.MaxElapsed = -time.Second },
		"negative auth":    func(c *sink.Config) { c.AuthRetryInterval = -time.Second },
		"control in UA":    func(c *sink.Config) { c.UserAgent = "a\r\nX-Evil: 1" },
	} {
		c := good
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil", name)
		} else if _, err2 := sink.New(c); err2 == nil {
			t.Errorf("%s: New accepted an invalid config", name)
		}
	}
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		h    map[string]string
		want time.Duration
	}{
		{nil, 0},
		{map[string]string{"Retry-After": "5"}, 5 * time.Second},
		{map[string]string{"Retry-After": " 1.5 "}, 1500 * time.Millisecond},
		{map[string]string{"Retry-After": "0"}, 0},
		{map[string]string{"Retry-After": "-3"}, 0},
		{map[string]string{"Retry-After": "soon"}, 0},
		{map[string]string{"Retry-After": now.Add(9 * time.Second).Format(http.TimeFormat)}, 9 * time.Second},
		{map[string]string{"Retry-After": now.Add(-9 * time.Second).Format(http.TimeFormat)}, 0},
		{map[string]string{"Retry-After": "86400"}, 15 * time.Minute},
		{map[string]string{"X-Ratelimit-Reset": "30"}, 30 * time.Second},
		{map[string]string{"X-Ratelimit-Reset": fmt.Sprint(now.Unix() + 42)}, 42 * time.Second},
		{map[string]string{"X-Ratelimit-Reset": fmt.Sprint(now.Unix() - 42)}, 0},
		{map[string]string{"X-Ratelimit-Reset": fmt.Sprint(now.UnixMilli())}, 15 * time.Minute},
		{map[string]string{"Retry-After": "2", "X-Ratelimit-Reset": "30"}, 2 * time.Second},
		{map[string]string{"Retry-After": "junk", "X-Ratelimit-Reset": "30"}, 30 * time.Second},
	} {
		h := http.Header{}
		for k, v := range tc.h {
			h.Set(k, v)
		}
		if got := sink.RetryAfter(h, now); got != tc.want {
			t.Errorf("RetryAfter(%v) = %v, want %v", tc.h, got, tc.want)
		}
	}
}

func TestStatusErrorText(t *testing.T) {
	e := &sink.StatusError{Code: 400, Type: "MissingAttributeError", Message: "action is not found in the payload",
		Attribute: "action", RequestID: "sYsoPuzf"}
	want := "cohortsync API answered 400 MissingAttributeError: action is not found in the payload (attribute action, request_id sYsoPuzf)"
	if e.Error() != want {
		t.Fatalf("got  %s\nwant %s", e.Error(), want)
	}
	e = &sink.StatusError{Code: 429, RetryAfter: 3 * time.Second}
	if want := "cohortsync API answered 429 Too Many Requests: no error message retry after 3s"; e.Error() != want {
		t.Fatalf("got  %s\nwant %s", e.Error(), want)
	}
}

// TestStatusErrorFromEnvelope: the fields reach the StatusError, a string
// "error" is tolerated, and long messages are truncated.
func TestStatusErrorFromEnvelope(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bodies := []string{
			`{"status":"fail","error":{"attribute":"uid","message":"m","type":"T","request_id":"RID","extra":1}}`,
			`{"status":"fail","error":"plain text"}`,
			`{"status":"fail","error":{"message":"` + strings.Repeat("é", 2000) + `","type":"T"}}`,
		}
		for i, body := range bodies {
			e := newEnv(t, "mem", func(int, call) reply { return reply{status: 503, body: body} },
				func(c *sink.Config) { c.MaxElapsed = time.Second })
			_, err := e.client.Send(context.Background(), request(1))
			var se *sink.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("body %d: err %v", i, err)
			}
			switch i {
			case 0:
				if se.Attribute != "uid" || se.Message != "m" || se.Type != "T" || se.RequestID != "RID" || se.Code != 503 {
					t.Fatalf("%+v", se)
				}
			case 1:
				if se.Message != "plain text" {
					t.Fatalf("%+v", se)
				}
			case 2:
				if len(se.Message) > 600 || !strings.HasPrefix(se.Message, "éé") || !strings.HasSuffix(se.Message, "…") {
					t.Fatalf("message not truncated: %d bytes", len(se.Message))
				}
			}
		}
	})
}

// TestRequestsMetricByAction: the action label is the request's.
func TestRequestsMetricByAction(t *testing.T) {
	e := newEnv(t, "http", nil, nil)
	req := request(1)
	req.Action = event.Remove
	if _, err := e.client.Send(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(e.m.Requests.WithLabelValues("remove_members", "200")); got != 1 {
		t.Fatalf("requests_total{remove_members,200} = %v, want 1", got)
	}
	if e.requests("200") != 0 {
		t.Fatal("counted under add_members")
	}
}
