package sink_test

// The HTTP request as documented (cohortsync-api.md §3), the body size cap,
// the configuration, connection reuse, the error envelope, and keeping the
// API key out of errors and logs.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestRequestHeadersAndBody checks one request on the wire: method, path
// (under a base-URL prefix, with or without a trailing slash), every
// documented header, and the exact body.
func TestRequestHeadersAndBody(t *testing.T) {
	t.Parallel()
	odd := wire.Request{Header: wire.Header{Action: event.Remove, Partner: "m particle", CohortID: `id "quoted"`,
		CohortName: "Ünïcödé_Name"}, UIDs: []string{`a"b`, `back\slash`, "tab\tnew\nline", "ctl\x01", "ls\u2028ps\u2029", "日本語", "<>&"}}
	for _, tc := range []struct {
		name      string
		suffix    string // appended to the server's URL for BaseURL
		path      string
		userAgent string
		replica   string
		req       wire.Request
	}{
		{"plain", "", "/v1/integrations/cohortsync", "", "", request(3)},
		{"trailing slash", "/", "/v1/integrations/cohortsync", "", "", request(3)},
		{"path prefix", "/moe/proxy", "/moe/proxy/v1/integrations/cohortsync", "", "replica-7", request(3)},
		{"path prefix and trailing slash", "/moe/proxy/", "/moe/proxy/v1/integrations/cohortsync", "agent/2.0", "r1", request(3)},
		{"prefix, defaults", "/proxy/", "/proxy/v1/integrations/cohortsync", "", "", request(3)},
		{"prefix, custom User-Agent and replica", "/proxy/", "/proxy/v1/integrations/cohortsync", "cohortsync-worker/1.2.3", "host-42", request(3)},
		{"escaped strings, no description", "", "/v1/integrations/cohortsync", "", "", odd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "http", nil, func(c *sink.Config) {
				c.BaseURL += tc.suffix
				c.UserAgent = tc.userAgent
				c.ReplicaID = tc.replica
			})
			if rej, err := e.client.Send(e.ctx(), tc.req); err != nil || len(rej) != 0 {
				t.Fatalf("Send = %v, %v", rej, err)
			}
			calls := e.api.got()
			if len(calls) != 1 {
				t.Fatalf("%d requests, want 1", len(calls))
			}
			c := calls[0]
			if c.method != http.MethodPost || c.path != tc.path {
				t.Errorf("request %s %s, want POST %s", c.method, c.path, tc.path)
			}
			wantUA := tc.userAgent
			if wantUA == "" {
				wantUA = sink.DefaultUserAgent
			}
			cred := base64.StdEncoding.EncodeToString([]byte(testWorkspace + ":" + testKey))
			for _, h := range []struct{ name, want string }{
				{"Content-Type", "application/json"},
				{"Authorization", "Basic " + cred},
				{"MOE-APPKEY", testWorkspace},
				{"User-Agent", wantUA},
			} {
				if got := c.header.Values(h.name); len(got) != 1 || got[0] != h.want {
					t.Errorf("header %s = %q, want exactly %q", h.name, got, h.want)
				}
			}
			if got := c.header.Values("X-Cohortsync-Replica"); tc.replica == "" && len(got) != 0 ||
				tc.replica != "" && (len(got) != 1 || got[0] != tc.replica) {
				t.Errorf("header X-Cohortsync-Replica = %q, want %q", got, tc.replica)
			}
			if got := c.header.Values("MOE-DESTINATION-PARTNER"); len(got) != 0 {
				t.Errorf("MOE-DESTINATION-PARTNER sent: %q", got)
			}
			// The Authorization header, decoded as a server would.
			raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(c.header.Get("Authorization"), "Basic "))
			if user, pass, ok := strings.Cut(string(raw), ":"); err != nil || !ok || user != testWorkspace || pass != testKey {
				t.Errorf("Basic credentials decode to %q, want %s:<key>", raw, testWorkspace)
			}
			if want := wire.AppendBody(nil, tc.req); string(c.body) != string(want) {
				t.Errorf("body\n%s\nwant wire.AppendBody\n%s", c.body, want)
			}
			if !c.decoded || !c.canonical || !slices.Equal(c.req.UIDs, tc.req.UIDs) || c.req.Header != tc.req.Header {
				t.Errorf("the body decodes to %+v, want %+v", c.req, tc.req)
			}
			if c.contentLength != int64(len(c.body)) {
				t.Errorf("Content-Length %d, body %d bytes", c.contentLength, len(c.body))
			}
			if got := c.header.Get("Content-Length"); got != fmt.Sprint(len(c.body)) {
				t.Errorf("Content-Length header %q for %d bytes", got, len(c.body))
			}
		})
	}
}

// TestMaxBodyBytes: no body over MaxBodyBytes is ever sent: a body of
// exactly the cap goes in one request, one byte more is split in two, and a
// member too large on its own is rejected without a request.
func TestMaxBodyBytes(t *testing.T) {
	t.Parallel()
	req := request(50)
	size := wire.Size(req)
	if got := len(wire.AppendBody(nil, req)); got != size {
		t.Fatalf("wire.Size = %d, body %d bytes", size, got)
	}
	huge := request(21)
	huge.UIDs[7] = strings.Repeat("H", 3000)
	big := request(0)
	for i := range 3000 {
		big.UIDs = append(big.UIDs, strings.Repeat("u", 32)+string(rune('a'+i%26))+strings.Repeat("0", 4))
	}
	for _, tc := range []struct {
		name     string
		req      wire.Request
		max      int // MaxBodyBytes (0: the default)
		requests int // -1: at least 2
		rejected []string
	}{
		{"exactly the cap", req, size, 1, nil},
		{"one byte over", req, size - 1, 2, nil},
		{"single member over the cap", request(1), wire.Size(request(1)) - 1, 0, []string{"u0"}},
		{"one huge member among many", huge, 2000, -1, []string{huge.UIDs[7]}},
		{"default cap", big, 0, -1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			modes(t, func(t *testing.T, mode string) {
				limit := tc.max
				if limit == 0 {
					limit = sink.DefaultMaxBodyBytes
				}
				e := newEnv(t, mode, func(_ int, c call) reply {
					if len(c.body) > limit {
						return fail(413, "Payload too large", "Payload can not exceed 128KB", "")
					}
					return ok()
				}, func(c *sink.Config) { c.MaxBodyBytes = tc.max })
				rej, err := e.client.Send(e.ctx(), tc.req)
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				var gotRej []string
				for _, r := range rej {
					gotRej = append(gotRej, r.UID)
					if !strings.Contains(r.Reason, "too large") {
						t.Errorf("rejection reason %q does not say too large", r.Reason)
					}
				}
				if !slices.Equal(gotRej, tc.rejected) {
					t.Fatalf("rejected %v, want %v", gotRej, tc.rejected)
				}
				calls := e.api.got()
				if tc.requests >= 0 && len(calls) != tc.requests || tc.requests < 0 && len(calls) < 2 {
					t.Fatalf("%d requests, want %d", len(calls), tc.requests)
				}
				checkBodies(t, calls, tc.req)
				for i, c := range calls {
					if len(c.body) > limit {
						t.Fatalf("request %d: %d bytes, over the %d-byte cap", i, len(c.body), limit)
					}
				}
				if len(calls) == 1 && len(calls[0].body) != size {
					t.Fatalf("the single request has %d bytes, want %d", len(calls[0].body), size)
				}
				want := slices.DeleteFunc(slices.Clone(tc.req.UIDs), func(u string) bool { return slices.Contains(tc.rejected, u) })
				if got := accepted(t, calls); !slices.Equal(got, want) {
					t.Fatalf("accepted %d members in order, want %d", len(got), len(want))
				}
				// Never sent before: the parts' first attempts are not retries.
				if r := e.allRetries(); len(r) != 0 {
					t.Fatalf("retries_total = %v, want none", r)
				}
			})
		})
	}
}

// TestEmptyRequestSendsNothing: a request with no members sends nothing and
// returns nil.
func TestEmptyRequestSendsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "http", nil, nil)
	req := request(0)
	if rej, err := e.client.Send(e.ctx(), req); err != nil || rej != nil {
		t.Fatalf("rejections %v, err %v", rej, err)
	}
	if n := len(e.api.got()); n != 0 {
		t.Fatalf("%d requests for no members", n)
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

// TestSecretNeverLeaks: the API key (and the encoded credentials) never
// appear, not even in part, in an error, a rejection reason or a log line,
// even when the server echoes them.
func TestSecretNeverLeaks(t *testing.T) {
	t.Parallel()
	cred := base64.StdEncoding.EncodeToString([]byte(testWorkspace + ":" + testKey))
	echo := "key " + testKey + " creds " + cred
	long := strings.Repeat("x", 500) + testKey // the key across the truncation point
	for _, tc := range []struct {
		name   string
		rep    reply
		cancel bool // end Send by cancelling (auth errors retry forever)
	}{
		{"401 echoing the key", fail(401, "Authentication required "+testKey, echo, cred), true},
		{"403 echoing the key", reply{status: 403, body: `{"status":"fail","error":"` + echo + `"}`}, true},
		{"500 echoing the key", fail(500, "Server Error", echo, ""), false},
		{"500 echoing the key in a long message", fail(500, "Server Error", long, ""), false},
		{"429 echoing the key", reply{status: 429, body: `{"status":"fail","error":{"message":"` + echo + `"}}`}, false},
		{"400 echoing the key", fail(400, "InvalidAttributeError", echo, "uid"), false},
		{"network error", reply{reset: true}, false},
		{"attempt timeout", reply{hold: make(chan struct{})}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, "http", func(int, call) reply { return tc.rep }, func(c *sink.Config) {
				c.MaxElapsed = 20 * time.Millisecond
				c.AttemptTimeout = 100 * time.Millisecond
				c.Limiter = ratelimit.NewLimiter(0)
			})
			ctx, cancel := context.WithCancel(e.ctx())
			defer cancel()
			if tc.cancel {
				go func() {
					for range 3 {
						<-e.api.finished
					}
					cancel()
				}()
			}
			rej, err := e.client.Send(ctx, request(2))
			if err == nil && len(rej) == 0 {
				t.Fatal("Send succeeded; the scenario should fail")
			}
			texts := []string{e.logs.String()}
			if err != nil {
				texts = append(texts, err.Error())
			}
			for _, r := range rej {
				texts = append(texts, r.Reason)
			}
			for _, text := range texts {
				if l := leak(text, cred); l != "" {
					t.Fatalf("%q leaks in:\n%s", l, text)
				}
			}
			if !strings.Contains(e.logs.String(), `"component":"sink"`) {
				t.Fatalf("nothing logged:\n%s", e.logs)
			}
		})
	}
	t.Run("server gone", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, "http", nil, func(c *sink.Config) { c.MaxElapsed = 20 * time.Millisecond })
		c, err := sink.New(sink.Config{BaseURL: "http://127.0.0.1:1", WorkspaceID: testWorkspace, APIKey: testKey,
			MaxElapsed: 20 * time.Millisecond, InitialInterval: time.Millisecond, Logger: e.logs.logger()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Send(e.ctx(), request(1))
		if !errors.Is(err, sink.ErrGaveUp) {
			t.Fatalf("Send: %v, want ErrGaveUp", err)
		}
		for _, text := range []string{err.Error(), e.logs.String()} {
			if l := leak(text, cred); l != "" {
				t.Fatalf("%q leaks in:\n%s", l, text)
			}
		}
	})
}

// TestConfigValidate: New and Validate refuse bad configurations, alike,
// with errors that never contain the API key.
func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := sink.Config{BaseURL: "https://api-01.moengage.com", WorkspaceID: testWorkspace, APIKey: testKey}
	for _, tc := range []struct {
		name  string
		tweak func(*sink.Config)
		ok    bool
	}{
		{"good", func(*sink.Config) {}, true},
		{"short workspace and key", func(c *sink.Config) { c.WorkspaceID, c.APIKey = "WS", "k" }, true},
		{"path prefix", func(c *sink.Config) { c.BaseURL = "http://localhost:8080/moe/" }, true},
		{"no BaseURL", func(c *sink.Config) { c.BaseURL = "" }, false},
		{"relative URL", func(c *sink.Config) { c.BaseURL = "api-01.moengage.com" }, false},
		{"not http", func(c *sink.Config) { c.BaseURL = "ftp://api-01.moengage.com" }, false},
		{"unparsable", func(c *sink.Config) { c.BaseURL = "http://[::1" }, false},
		{"no host", func(c *sink.Config) { c.BaseURL = "https:///v1" }, false},
		{"credentials in BaseURL", func(c *sink.Config) { c.BaseURL = "https://" + testWorkspace + ":" + testKey + "@api-01.moengage.com" }, false},
		{"userinfo", func(c *sink.Config) { c.BaseURL = "https://u:p@h" }, false},
		{"query", func(c *sink.Config) { c.BaseURL = "https://api-01.moengage.com/?x=1" }, false},
		{"query, no path", func(c *sink.Config) { c.BaseURL = "https://h/?a=b" }, false},
		{"the key in a query", func(c *sink.Config) { c.BaseURL = "https://api-01.moengage.com/?api_key=" + testKey }, false},
		{"the key as the user", func(c *sink.Config) { c.BaseURL = "https://" + testKey + "@api-01.moengage.com" }, false},
		{"fragment", func(c *sink.Config) { c.BaseURL = "https://api-01.moengage.com/#x" }, false},
		{"no workspace", func(c *sink.Config) { c.WorkspaceID = "" }, false},
		{"colon in workspace", func(c *sink.Config) { c.WorkspaceID = "a:b" }, false},
		{"space in workspace", func(c *sink.Config) { c.WorkspaceID = "a b" }, false},
		{"newline in workspace", func(c *sink.Config) { c.WorkspaceID = "a\nb" }, false},
		{"no key", func(c *sink.Config) { c.APIKey = "" }, false},
		{"negative MaxBodyBytes", func(c *sink.Config) { c.MaxBodyBytes = -1 }, false},
		{"negative AttemptTimeout", func(c *sink.Config) { c.AttemptTimeout = -time.Second }, false},
		{"negative interval", func(c *sink.Config) { c.InitialInterval = -time.Second }, false},
		{"negative MaxElapsed", func(c *sink.Config) { c.MaxElapsed = -time.Second }, false},
		{"negative AuthRetryInterval", func(c *sink.Config) { c.AuthRetryInterval = -time.Second }, false},
		{"control character in UserAgent", func(c *sink.Config) { c.UserAgent = "a\r\nX-Evil: 1" }, false},
		{"control character in ReplicaID", func(c *sink.Config) { c.ReplicaID = "r\n1" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			tc.tweak(&cfg)
			_, err := sink.New(cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("New: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && leak(err.Error(), "") != "" {
				t.Fatalf("the error leaks the key: %v", err)
			}
			if vErr := cfg.Validate(); (vErr == nil) != (err == nil) {
				t.Fatalf("Validate: %v, New: %v", vErr, err)
			}
		})
	}
}

// TestCallerHTTPClientDoesNotFollowRedirects: even a caller's client, which
// would follow a 302 (as a GET), gets the 3xx as an answer; the caller's
// client itself is left unchanged.
func TestCallerHTTPClientDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	defer hc.CloseIdleConnections()
	e := newEnv(t, "http", func(n int, c call) reply {
		if n == 0 {
			return reply{status: 302, header: map[string]string{"Location": "/elsewhere"}}
		}
		return ok()
	}, func(c *sink.Config) { c.HTTPClient = hc })
	if _, err := e.client.Send(e.ctx(), request(2)); err != nil {
		t.Fatal(err)
	}
	calls := e.api.got()
	if len(calls) != 2 || calls[1].method != http.MethodPost || calls[1].path != sink.Path {
		t.Fatalf("calls %d, second %s %s; want the POST retried, not the redirect followed", len(calls), calls[1].method, calls[1].path)
	}
	if hc.CheckRedirect != nil {
		t.Fatal("the caller's client was modified")
	}
}

// TestConnectionReuse: answers are drained, so sequential Sends reuse one
// connection even through error answers with bodies larger than what is
// parsed; a body too large to drain costs the connection (which shows the
// count works).
func TestConnectionReuse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		bodyBytes int
		oneConn   bool
	}{
		{"envelope", 0, true},
		{"20 KB body", 20 << 10, true},
		{"100 KB body", 100 << 10, true},
		{"1 MB body", 1 << 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			failure := fail(500, "Server Error", "An unexpected error was encountered", "")
			if tc.bodyBytes > 0 {
				failure.body = `{"status":"fail","error":{"message":"` + strings.Repeat("x", tc.bodyBytes) + `","type":"Server Error"}}`
			}
			e := newEnv(t, "http", func(n int, _ call) reply {
				if n%2 == 0 {
					return failure
				}
				return reply{status: 200, body: okBody + strings.Repeat(" ", tc.bodyBytes)}
			}, nil)
			for i := range 10 {
				if rej, err := e.client.Send(e.ctx(), request(3)); err != nil || len(rej) != 0 {
					t.Fatalf("Send %d = %v, %v", i, rej, err)
				}
			}
			if n := len(e.api.got()); n != 20 {
				t.Fatalf("%d requests, want 20", n)
			}
			conns := e.conns.Load()
			if tc.oneConn && conns != 1 {
				t.Fatalf("%d connections for 20 sequential requests, want 1 (bodies not drained?)", conns)
			}
			if !tc.oneConn && conns < 10 {
				t.Fatalf("%d connections: a body too large to drain should cost its connection", conns)
			}
			if got := e.requests("500"); got != 10 {
				t.Fatalf("requests_total{code=500} = %v, want 10", got)
			}
		})
	}
}

func TestStatusErrorText(t *testing.T) {
	t.Parallel()
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
