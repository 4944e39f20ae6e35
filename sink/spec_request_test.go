package sink_test

// The HTTP request as documented (cohortsync-api.md §3), the body size cap,
// and keeping the API key out of errors and logs.

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

func TestSpecRequestHeadersAndBody(t *testing.T) {
	t.Parallel()
	odd := wire.Request{Action: event.Remove, Partner: "m particle", CohortID: `id "quoted"`,
		CohortName: "Ünïcödé_Name", UIDs: []string{`a"b`, `back\slash`, "tab\tnew\nline", "ctl\x01", "ls\u2028ps\u2029", "日本語", "<>&"}}
	for _, tc := range []struct {
		name      string
		suffix    string // appended to the server's URL for BaseURL
		path      string
		userAgent string
		replica   string
		req       wire.Request
	}{
		{"plain", "", "/v1/integrations/cohortsync", "", "", specRequest(3)},
		{"trailing slash", "/", "/v1/integrations/cohortsync", "", "", specRequest(3)},
		{"path prefix", "/moe/proxy", "/moe/proxy/v1/integrations/cohortsync", "", "replica-7", specRequest(3)},
		{"path prefix and trailing slash", "/moe/proxy/", "/moe/proxy/v1/integrations/cohortsync", "agent/2.0", "r1", specRequest(3)},
		{"escaped strings, no description", "", "/v1/integrations/cohortsync", "", "", odd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := specSocket(t, nil, func(c *sink.Config) {
				c.BaseURL += tc.suffix
				c.UserAgent = tc.userAgent
				c.ReplicaID = tc.replica
			})
			if rej, err := e.client.Send(specCtx(t), tc.req); err != nil || len(rej) != 0 {
				t.Fatalf("Send = %v, %v", rej, err)
			}
			calls := e.api.got()
			if len(calls) != 1 {
				t.Fatalf("%d requests, want 1", len(calls))
			}
			c := calls[0]
			if c.method != "POST" || c.path != tc.path {
				t.Errorf("request %s %s, want POST %s", c.method, c.path, tc.path)
			}
			wantUA := tc.userAgent
			if wantUA == "" {
				wantUA = sink.DefaultUserAgent
			}
			cred := base64.StdEncoding.EncodeToString([]byte(specWorkspace + ":" + specKey))
			for _, h := range []struct{ name, want string }{
				{"Content-Type", "application/json"},
				{"Authorization", "Basic " + cred},
				{"MOE-APPKEY", specWorkspace},
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
			if user, pass, ok := strings.Cut(string(raw), ":"); err != nil || !ok || user != specWorkspace || pass != specKey {
				t.Errorf("Basic credentials decode to %q, want %s:<key>", raw, specWorkspace)
			}
			if want := wire.AppendBody(nil, tc.req); string(c.body) != string(want) {
				t.Errorf("body\n%s\nwant wire.AppendBody\n%s", c.body, want)
			}
			if !c.valid || !slices.Equal(c.req.UIDs, tc.req.UIDs) || c.req.Header() != tc.req.Header() {
				t.Errorf("the body decodes to %+v, want %+v", c.req, tc.req)
			}
			if c.contentLength != int64(len(c.body)) {
				t.Errorf("Content-Length %d, body %d bytes", c.contentLength, len(c.body))
			}
		})
	}
}

// TestSpecMaxBodyBytes: no body over MaxBodyBytes is ever sent: a body of
// exactly the cap goes in one request, one byte more is split in two, and a
// member too large on its own is rejected without a request.
func TestSpecMaxBodyBytes(t *testing.T) {
	t.Parallel()
	req := specRequest(50)
	size := wire.Size(req)
	if got := len(wire.AppendBody(nil, req)); got != size {
		t.Fatalf("wire.Size = %d, body %d bytes", size, got)
	}
	huge := specRequest(21)
	huge.UIDs[7] = strings.Repeat("H", 3000)
	big := specRequest(0)
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
		{"single member over the cap", specRequest(1), wire.Size(specRequest(1)) - 1, 0, []string{"m000"}},
		{"one huge member among many", huge, 2000, -1, []string{huge.UIDs[7]}},
		{"default cap", big, 0, -1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			limit := tc.max
			if limit == 0 {
				limit = sink.DefaultMaxBodyBytes
			}
			e := specSocket(t, func(_ int, c specCall) specReply {
				if len(c.body) > limit {
					return specFail(413, "Payload too large", "Payload can not exceed 128KB", "")
				}
				return specOK()
			}, func(c *sink.Config) { c.MaxBodyBytes = tc.max })
			rej, err := e.client.Send(specCtx(t), tc.req)
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
			for i, c := range calls {
				if len(c.body) > limit {
					t.Fatalf("request %d: %d bytes, over the %d-byte cap", i, len(c.body), limit)
				}
			}
			if len(calls) == 1 && len(calls[0].body) != size {
				t.Fatalf("the single request has %d bytes, want %d", len(calls[0].body), size)
			}
			want := slices.DeleteFunc(slices.Clone(tc.req.UIDs), func(u string) bool { return slices.Contains(tc.rejected, u) })
			if got := specAccepted(t, calls); !slices.Equal(got, want) {
				t.Fatalf("accepted %d members in order, want %d", len(got), len(want))
			}
			// Never sent before: the parts' first attempts are not retries.
			if r := e.allRetries(); len(r) != 0 {
				t.Fatalf("retries_total = %v, want none", r)
			}
		})
	}
}

// TestSpecSecretNeverLeaks: the API key (and the encoded credentials) never
// appear in an error, a rejection reason or a log line, even when the
// server echoes them.
func TestSpecSecretNeverLeaks(t *testing.T) {
	t.Parallel()
	cred := base64.StdEncoding.EncodeToString([]byte(specWorkspace + ":" + specKey))
	echo := "key " + specKey + " creds " + cred
	long := strings.Repeat("x", 500) + specKey // the key across the truncation point
	for _, tc := range []struct {
		name   string
		rep    specReply
		cancel bool // end Send by cancelling (auth errors retry forever)
	}{
		{"401 echoing the key", specFail(401, "Authentication required "+specKey, echo, cred), true},
		{"403 echoing the key", specReply{status: 403, body: `{"status":"fail","error":"` + echo + `"}`}, true},
		{"500 echoing the key", specFail(500, "Server Error", echo, ""), false},
		{"500 echoing the key in a long message", specFail(500, "Server Error", long, ""), false},
		{"429 echoing the key", specReply{status: 429, body: `{"status":"fail","error":{"message":"` + echo + `"}}`}, false},
		{"400 echoing the key", specFail(400, "InvalidAttributeError", echo, "uid"), false},
		{"network error", specReply{reset: true}, false},
		{"attempt timeout", specReply{hold: make(chan struct{})}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := specSocket(t, func(int, specCall) specReply { return tc.rep }, func(c *sink.Config) {
				c.MaxElapsed = 20 * time.Millisecond
				c.AttemptTimeout = 100 * time.Millisecond
				c.Limiter = sink.NewLimiter(0)
			})
			ctx, cancel := context.WithCancel(specCtx(t))
			defer cancel()
			if tc.cancel {
				go func() {
					for range 3 {
						<-e.api.finished
					}
					cancel()
				}()
			}
			rej, err := e.client.Send(ctx, specRequest(2))
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
				if leak := specLeak(text, cred); leak != "" {
					t.Fatalf("%q leaks in:\n%s", leak, text)
				}
			}
			if !strings.Contains(e.logs.String(), `"component":"sink"`) {
				t.Fatalf("nothing logged:\n%s", e.logs)
			}
		})
	}
	t.Run("server gone", func(t *testing.T) {
		t.Parallel()
		e := specSocket(t, nil, func(c *sink.Config) { c.MaxElapsed = 20 * time.Millisecond })
		c, err := sink.New(sink.Config{BaseURL: "http://127.0.0.1:1", WorkspaceID: specWorkspace, APIKey: specKey,
			MaxElapsed: 20 * time.Millisecond, InitialInterval: time.Millisecond, Logger: e.logs.logger()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Send(specCtx(t), specRequest(1))
		if !errors.Is(err, sink.ErrGaveUp) {
			t.Fatalf("Send: %v, want ErrGaveUp", err)
		}
		for _, text := range []string{err.Error(), e.logs.String()} {
			if leak := specLeak(text, cred); leak != "" {
				t.Fatalf("%q leaks in:\n%s", leak, text)
			}
		}
	})
}

// specLeak returns a part (8 bytes or more) of the API key or of the
// encoded credentials found in text, or "".
func specLeak(text, cred string) string {
	const n = 8
	for _, secret := range []string{specKey, cred} {
		for i := 0; i+n <= len(secret); i++ {
			if strings.Contains(text, secret[i:i+n]) {
				return secret[i : i+n]
			}
		}
	}
	return ""
}

// TestSpecConfigValidate: New refuses bad configurations, with errors that
// never contain the API key.
func TestSpecConfigValidate(t *testing.T) {
	t.Parallel()
	good := sink.Config{BaseURL: "https://api-01.moengage.com", WorkspaceID: specWorkspace, APIKey: specKey}
	for _, tc := range []struct {
		name  string
		tweak func(*sink.Config)
		ok    bool
	}{
		{"good", func(*sink.Config) {}, true},
		{"path prefix", func(c *sink.Config) { c.BaseURL = "http://localhost:8080/moe/" }, true},
		{"no BaseURL", func(c *sink.Config) { c.BaseURL = "" }, false},
		{"not http", func(c *sink.Config) { c.BaseURL = "ftp://api-01.moengage.com" }, false},
		{"no host", func(c *sink.Config) { c.BaseURL = "https:///v1" }, false},
		{"credentials in BaseURL", func(c *sink.Config) { c.BaseURL = "https://" + specWorkspace + ":" + specKey + "@api-01.moengage.com" }, false},
		{"query", func(c *sink.Config) { c.BaseURL = "https://api-01.moengage.com/?x=1" }, false},
		{"the key in a query", func(c *sink.Config) { c.BaseURL = "https://api-01.moengage.com/?api_key=" + specKey }, false},
		{"the key as the user", func(c *sink.Config) { c.BaseURL = "https://" + specKey + "@api-01.moengage.com" }, false},
		{"fragment", func(c *sink.Config) { c.BaseURL = "https://api-01.moengage.com/#x" }, false},
		{"no workspace", func(c *sink.Config) { c.WorkspaceID = "" }, false},
		{"colon in workspace", func(c *sink.Config) { c.WorkspaceID = "a:b" }, false},
		{"space in workspace", func(c *sink.Config) { c.WorkspaceID = "a b" }, false},
		{"no key", func(c *sink.Config) { c.APIKey = "" }, false},
		{"negative MaxBodyBytes", func(c *sink.Config) { c.MaxBodyBytes = -1 }, false},
		{"negative interval", func(c *sink.Config) { c.InitialInterval = -time.Second }, false},
		{"negative MaxElapsed", func(c *sink.Config) { c.MaxElapsed = -time.Second }, false},
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
			if err != nil && specLeak(err.Error(), "") != "" {
				t.Fatalf("the error leaks the key: %v", err)
			}
			if vErr := cfg.Validate(); (vErr == nil) != (err == nil) {
				t.Fatalf("Validate: %v, New: %v", vErr, err)
			}
		})
	}
}
