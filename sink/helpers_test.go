package sink_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// memEpoch is where mem-mode tests move the synctest clock to.
var memEpoch = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

const (
	testWorkspace = "WS_TEST_01"
	testKey       = "k3y-S3CRET-never-log-me"
)

// reply is what the fake API answers to one request.
type reply struct {
	status int
	header map[string]string
	body   string
	reset  bool                  // drop the connection without an answer
	hang   bool                  // answer nothing until the client gives up
	before func(r *http.Request) // runs before answering (may block)
}

func ok() reply {
	return reply{status: 200, body: `{"status":"success","message":"Your request has been accepted and will be processed soon."}`}
}

// fail is an API error answer with the documented envelope.
func fail(status int, typ, msg, attr string) reply {
	e := map[string]string{"message": msg, "type": typ, "request_id": "ReqIdAbc"}
	if attr != "" {
		e["attribute"] = attr
	}
	b, _ := json.Marshal(map[string]any{"status": "fail", "error": e})
	return reply{status: status, body: string(b)}
}

// call is one request the fake API received.
type call struct {
	at      time.Time
	method  string
	path    string
	header  http.Header
	body    []byte
	req     wire.Request // decoded body
	decoded bool         // the body was a valid request
}

// api is a scriptable fake Cohort Sync API. respond gets the 0-based index
// of the call and the call; nil respond answers 200.
type api struct {
	mu      sync.Mutex
	calls   []call
	respond func(n int, c call) reply
}

func (a *api) record(r *http.Request) (reply, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return reply{}, err
	}
	c := call{at: time.Now(), method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: body}
	c.req, c.decoded = decodeBody(body)
	a.mu.Lock()
	n := len(a.calls)
	a.calls = append(a.calls, c)
	respond := a.respond
	a.mu.Unlock()
	if respond == nil {
		return ok(), nil
	}
	return respond(n, c), nil
}

func (a *api) got() []call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// ServeHTTP serves the fake over a real socket.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rep, err := a.record(r)
	if err != nil {
		return
	}
	if rep.before != nil {
		rep.before(r)
	}
	switch {
	case rep.reset:
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // RST, not FIN
			}
			conn.Close()
		}
		return
	case rep.hang:
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		return
	}
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if rep.body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

// memTransport calls the fake API in memory: real sockets are never durably
// blocked, so synctest needs this.
type memTransport struct{ a *api }

func (t memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	defer r.Body.Close()
	rep, err := t.a.record(r)
	if err != nil {
		return nil, err
	}
	if rep.before != nil {
		rep.before(r)
	}
	switch {
	case rep.reset:
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	case rep.hang:
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	for k, v := range rep.header {
		rec.Header().Set(k, v)
	}
	rec.WriteHeader(rep.status)
	_, _ = io.WriteString(rec, rep.body)
	return rec.Result(), nil
}

// decodeBody parses a request body strictly: the fields the API knows, no
// others, members with only uid.
func decodeBody(b []byte) (wire.Request, bool) {
	var v struct {
		Action     *string `json:"action"`
		Partner    *string `json:"partner"`
		Parameters *struct {
			CohortName        *string `json:"cohort_name"`
			CohortID          *string `json:"cohort_id"`
			CohortDescription string  `json:"cohort_description"`
			Members           []struct {
				UID *string `json:"uid"`
			} `json:"members"`
		} `json:"parameters"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil || dec.More() {
		return wire.Request{}, false
	}
	if v.Action == nil || v.Partner == nil || v.Parameters == nil || v.Parameters.CohortName == nil ||
		v.Parameters.CohortID == nil || len(v.Parameters.Members) == 0 {
		return wire.Request{}, false
	}
	r := wire.Request{Action: event.Action(*v.Action), Partner: *v.Partner, CohortID: *v.Parameters.CohortID,
		CohortName: *v.Parameters.CohortName, CohortDescription: v.Parameters.CohortDescription}
	for _, m := range v.Parameters.Members {
		if m.UID == nil {
			return wire.Request{}, false
		}
		r.UIDs = append(r.UIDs, *m.UID)
	}
	return r, true
}

// request returns a test request with n members u0..u(n-1).
func request(n int) wire.Request {
	r := wire.Request{Action: event.Add, Partner: "6HNBXFm7ZS", CohortID: "JKTAuqTRhC",
		CohortName: "Partner_Name", CohortDescription: "A cohort of users from a partner."}
	for i := range n {
		r.UIDs = append(r.UIDs, fmt.Sprintf("u%d", i))
	}
	return r
}

// env is one client wired to one fake API, in one of two modes: "http" (a
// real httptest.Server and the default HTTP client) or "mem" (an in-memory
// transport; the test body runs inside a synctest bubble).
type env struct {
	t      *testing.T
	mode   string
	api    *api
	client *sink.Client
	m      *metrics.Metrics
	lim    *sink.Limiter
	logs   *syncBuffer
}

// modes runs f once per mode, as subtests; in "mem" mode inside synctest.
func modes(t *testing.T, f func(t *testing.T, mode string)) {
	t.Run("http", func(t *testing.T) {
		t.Parallel()
		f(t, "http")
	})
	t.Run("mem", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) { f(t, "mem") })
	})
}

// newEnv builds an env. tweak adjusts the config before New.
func newEnv(t *testing.T, mode string, respond func(n int, c call) reply, tweak func(*sink.Config)) *env {
	t.Helper()
	e := &env{t: t, mode: mode, api: &api{respond: respond}, m: metrics.NewMetrics(nil), logs: &syncBuffer{}}
	cfg := sink.Config{
		WorkspaceID: testWorkspace,
		APIKey:      testKey,
		Logger:      slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:     e.m,
	}
	switch mode {
	case "http":
		srv := httptest.NewServer(e.api)
		t.Cleanup(srv.Close)
		cfg.BaseURL = srv.URL
		cfg.InitialInterval = 20 * time.Millisecond
		cfg.MaxInterval = 40 * time.Millisecond
		cfg.AttemptTimeout = 500 * time.Millisecond
		cfg.AuthRetryInterval = 20 * time.Millisecond
	case "mem":
		// The bubble's clock starts in 2000, when Unix time was below 1e9,
		// the threshold between an x-ratelimit-reset delta and an epoch:
		// move it to the present era.
		if now := time.Now(); now.Before(memEpoch) {
			time.Sleep(memEpoch.Sub(now))
		}
		cfg.BaseURL = "https://api-01.moengage.com"
		cfg.HTTPClient = &http.Client{Transport: memTransport{e.api}}
	default:
		t.Fatalf("mode %q", mode)
	}
	if tweak != nil {
		tweak(&cfg)
	}
	e.lim = cfg.Limiter
	c, err := sink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	e.client = c
	return e
}

// retries returns the retries_total value for reason.
func (e *env) retries(reason string) float64 {
	return testutil.ToFloat64(e.m.Retries.WithLabelValues(reason))
}

// requests returns the requests_total value for action add_members and code.
func (e *env) requests(code string) float64 {
	return testutil.ToFloat64(e.m.Requests.WithLabelValues(string(event.Add), code))
}

// checkBodies fails unless every call was a valid POST whose body is exactly
// wire.AppendBody of what it decodes to, with want's envelope.
func checkBodies(t *testing.T, calls []call, want wire.Request) {
	t.Helper()
	for i, c := range calls {
		if !c.decoded {
			t.Fatalf("call %d: invalid body %s", i, c.body)
		}
		if c.req.Header() != want.Header() {
			t.Fatalf("call %d: envelope %+v, want %+v", i, c.req.Header(), want.Header())
		}
		if got := string(wire.AppendBody(nil, c.req)); got != string(c.body) {
			t.Fatalf("call %d: body is not the canonical encoding:\n got %s\nwant %s", i, c.body, got)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes (slog handlers
// write from the goroutines that log).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines returns the decoded JSON log records whose msg contains substr.
func (s *syncBuffer) lines(t *testing.T, substr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if l == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if msg, _ := rec["msg"].(string); strings.Contains(msg, substr) {
			out = append(out, rec)
		}
	}
	return out
}

// histCount returns how many observations h holds.
func histCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}
