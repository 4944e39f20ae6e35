package sink_test

// The test doubles every test of the package uses: a scriptable fake Cohort
// Sync API, served over a real socket (httptest.Server: "http" mode) or in
// memory (an http.RoundTripper: "mem" mode, for testing/synctest bubbles,
// where real sockets are never durably blocked); a Client wired to it
// (newEnv); and helpers to read what the fake received and what the Client
// counted and logged.

import (
	"bytes"
	"context"
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
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// memEpoch is where mem-mode envs move the synctest clock to. The bubble's
// clock starts in 2000, when Unix time was below 1e9, the threshold between
// an x-ratelimit-reset delta and an epoch: tests run in the present era.
var memEpoch = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

const (
	testWorkspace = "WS_TEST_01"
	testKey       = "k3y-S3CRET-never-log-me"
	// okBody is the API's documented success answer.
	okBody = `{"status":"success","message":"Your request has been accepted and will be processed soon."}`
)

// reply is what the fake API does with one request.
type reply struct {
	status int
	header map[string]string
	body   string
	// reset drops the connection without an answer (a TCP RST over a
	// socket, ECONNRESET in memory).
	reset bool
	// hold blocks the answer until it is closed or the client goes away;
	// one never closed makes the attempt time out.
	hold <-chan struct{}
	// sleep delays the answer, or until the client goes away.
	sleep time.Duration
	// noBody sends a 2xx with an empty body; otherwise a 2xx without a
	// body gets the API's acceptance body (okBody).
	noBody bool
}

// answer is the body rep sends.
func (rep reply) answer() string {
	if rep.body == "" && !rep.noBody && rep.status >= 200 && rep.status < 300 {
		return okBody
	}
	return rep.body
}

func ok() reply { return reply{status: 200, body: okBody} }

// fail is an error answer in the API's documented envelope.
func fail(status int, typ, msg, attr string) reply {
	e := map[string]string{"message": msg, "type": typ, "request_id": "ReqIdAbc"}
	if attr != "" {
		e["attribute"] = attr
	}
	b, err := json.Marshal(map[string]any{"status": "fail", "error": e})
	if err != nil {
		panic(err)
	}
	return reply{status: status, body: string(b)}
}

// call is one request the fake API received.
type call struct {
	at            time.Time // when the request (its whole body) arrived
	method        string
	host          string // the Host the request went to
	path          string
	header        http.Header
	contentLength int64
	body          []byte
	req           wire.Request // the decoded body
	decoded       bool         // the body decodes strictly (decodeBody)
	canonical     bool         // the body is exactly wire.AppendBody of req
	// answered is set once the answer was written while the client was
	// still waiting for it (false: not answered, or the client had gone).
	answered bool
	status   int    // the status answered (0: none)
	answer   string // the body answered
}

// api is a scriptable fake of the Cohort Sync API. respond gets the 0-based
// index of the request and the request; nil respond answers ok(). It is
// safe for concurrent use.
type api struct {
	respond func(n int, c call) reply

	mu          sync.Mutex
	calls       []call
	inFlight    map[string]int // requests being handled, by cohort_id
	maxInFlight int            // the most in flight at once for one cohort
	arrived     chan int       // the index of every request, as it arrives
	finished    chan int       // the index of every request, once handled
}

func newAPI(respond func(n int, c call) reply) *api {
	return &api{respond: respond, inFlight: map[string]int{},
		arrived: make(chan int, 10000), finished: make(chan int, 10000)}
}

// receive records a request and decides the answer.
func (a *api) receive(r *http.Request) (int, reply, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return 0, reply{}, err
	}
	c := call{at: time.Now(), method: r.Method, host: r.Host, path: r.URL.Path, header: r.Header.Clone(),
		contentLength: r.ContentLength, body: body}
	c.req, c.decoded = decodeBody(body)
	c.canonical = c.decoded && bytes.Equal(wire.AppendBody(nil, c.req), body)
	a.mu.Lock()
	n := len(a.calls)
	a.calls = append(a.calls, c)
	a.inFlight[c.req.CohortID]++
	a.maxInFlight = max(a.maxInFlight, a.inFlight[c.req.CohortID])
	a.mu.Unlock()
	select {
	case a.arrived <- n:
	default:
	}
	rep := ok()
	if a.respond != nil {
		rep = a.respond(n, c)
	}
	return n, rep, nil
}

func (a *api) done(n int, answered bool, status int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inFlight[a.calls[n].req.CohortID]--
	a.calls[n].answered = answered
	a.calls[n].status = status
	select {
	case a.finished <- n:
	default:
	}
}

// got returns the requests received so far.
func (a *api) got() []call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// mostInFlight returns the most requests ever in flight at once for one
// cohort.
func (a *api) mostInFlight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.maxInFlight
}

// delay runs rep's hold and sleep; it reports false if the client went
// away meanwhile.
func (rep reply) delay(gone <-chan struct{}) bool {
	if rep.hold != nil {
		select {
		case <-rep.hold:
		case <-gone:
			return false
		}
	}
	if rep.sleep > 0 {
		t := time.NewTimer(rep.sleep)
		defer t.Stop()
		select {
		case <-t.C:
		case <-gone:
			return false
		}
	}
	return true
}

// ServeHTTP serves the fake over a real socket.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, rep, err := a.receive(r)
	if err != nil {
		return
	}
	if !rep.delay(r.Context().Done()) {
		a.done(n, false, 0)
		return
	}
	if rep.reset {
		a.done(n, false, 0)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST rather than FIN
		}
		conn.Close()
		return
	}
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	body := rep.answer()
	if body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	// Recorded before the answer goes out: with a 204 the client has the
	// whole answer with the headers, and Send may return (and the test read
	// the calls) before this handler gets past the write.
	a.mu.Lock()
	a.calls[n].answered, a.calls[n].status, a.calls[n].answer = true, rep.status, body
	a.mu.Unlock()
	w.WriteHeader(rep.status)
	_, werr := io.WriteString(w, body)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	a.done(n, werr == nil && r.Context().Err() == nil, rep.status)
}

// RoundTrip serves the fake in memory: the http.RoundTripper for synctest.
func (a *api) RoundTrip(r *http.Request) (*http.Response, error) {
	defer r.Body.Close()
	n, rep, err := a.receive(r)
	if err != nil {
		return nil, err
	}
	if !rep.delay(r.Context().Done()) {
		a.done(n, false, 0)
		return nil, r.Context().Err()
	}
	if rep.reset {
		a.done(n, false, 0)
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	}
	if err := r.Context().Err(); err != nil {
		a.done(n, false, 0)
		return nil, err
	}
	h := http.Header{}
	for k, v := range rep.header {
		h.Set(k, v)
	}
	a.mu.Lock()
	a.calls[n].answer = rep.answer()
	a.mu.Unlock()
	a.done(n, true, rep.status)
	return &http.Response{
		Status: fmt.Sprintf("%d %s", rep.status, http.StatusText(rep.status)), StatusCode: rep.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h,
		Body: io.NopCloser(strings.NewReader(rep.answer())), ContentLength: int64(len(rep.answer())), Request: r,
	}, nil
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
	r := wire.Request{Header: wire.Header{Action: event.Action(*v.Action), Partner: *v.Partner, CohortID: *v.Parameters.CohortID,
		CohortName: *v.Parameters.CohortName, CohortDescription: v.Parameters.CohortDescription}}
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
	r := wire.Request{Header: wire.Header{Action: event.Add, Partner: "6HNBXFm7ZS", CohortID: "JKTAuqTRhC",
		CohortName: "Partner_Name", CohortDescription: "A cohort of users from a partner."}}
	for i := range n {
		r.UIDs = append(r.UIDs, fmt.Sprintf("u%d", i))
	}
	return r
}

// env is one Client wired to one fake API, in one of two modes: "http" (a
// real httptest.Server, the default HTTP client, short intervals) or "mem"
// (the in-memory transport, default intervals; the test body runs inside a
// synctest bubble).
type env struct {
	t      *testing.T
	mode   string
	api    *api
	client *sink.Client
	m      *metrics.Metrics
	logs   *logBuffer
	conns  atomic.Int64 // connections the server accepted ("http" mode)
}

// modes runs f once per mode, as parallel subtests; in "mem" mode inside
// synctest.
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

// newEnv builds an env. In "http" mode the backoff is 1ms..10ms, the auth
// retry 20ms and the attempt timeout 5s; in "mem" mode the clock moves to
// memEpoch first and every interval keeps its default. tweak may change the
// config before New (BaseURL already holds the server's URL).
func newEnv(t *testing.T, mode string, respond func(n int, c call) reply, tweak func(*sink.Config)) *env {
	t.Helper()
	e := &env{t: t, mode: mode, api: newAPI(respond), m: metrics.New(nil), logs: &logBuffer{}}
	cfg := sink.Config{
		WorkspaceID: testWorkspace,
		APIKey:      testKey,
		Logger:      e.logs.logger(),
		Metrics:     e.m,
	}
	switch mode {
	case "http":
		srv := httptest.NewUnstartedServer(e.api)
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				e.conns.Add(1)
			}
		}
		srv.Start()
		t.Cleanup(srv.Close)
		cfg.BaseURL = srv.URL
		cfg.InitialInterval = time.Millisecond
		cfg.MaxInterval = 10 * time.Millisecond
		cfg.AuthRetryInterval = 20 * time.Millisecond
		cfg.AttemptTimeout = 5 * time.Second
	case "mem":
		if now := time.Now(); now.Before(memEpoch) {
			time.Sleep(memEpoch.Sub(now))
		}
		cfg.BaseURL = "https://api-01.moengage.com"
		cfg.HTTPClient = &http.Client{Transport: e.api}
	default:
		t.Fatalf("mode %q", mode)
	}
	if tweak != nil {
		tweak(&cfg)
	}
	c, err := sink.New(cfg)
	if err != nil {
		t.Fatalf("sink.New: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	e.client = c
	return e
}

// ctx is the context for the env's Sends. In "http" mode it ends after 20s,
// so that a Send that never returns fails the test instead of hanging it;
// in "mem" mode it is t.Context() (the bubble reports a deadlock).
func (e *env) ctx() context.Context {
	if e.mode == "mem" {
		return e.t.Context()
	}
	ctx, cancel := context.WithTimeout(e.t.Context(), 20*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// sendResult is what a Send returned, and when.
type sendResult struct {
	rej []wire.Rejection
	err error
	at  time.Time
}

// goSend runs Send in a goroutine; the result arrives on the channel.
func (e *env) goSend(ctx context.Context, req wire.Request) <-chan sendResult {
	ch := make(chan sendResult, 1)
	go func() {
		rej, err := e.client.Send(ctx, req)
		ch <- sendResult{rej, err, time.Now()}
	}()
	return ch
}

// retries is retries_total{reason}.
func (e *env) retries(reason string) float64 {
	return testutil.ToFloat64(e.m.Retries.WithLabelValues(reason))
}

// allRetries maps every retry reason to its count, leaving out zeros.
func (e *env) allRetries() map[string]float64 {
	out := map[string]float64{}
	for _, r := range sink.RetryReasons {
		if v := e.retries(string(r)); v != 0 {
			out[string(r)] = v
		}
	}
	return out
}

// requests is requests_total{action="add_members",code}.
func (e *env) requests(code string) float64 {
	return testutil.ToFloat64(e.m.Requests.WithLabelValues(string(event.Add), code))
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

// checkBodies fails unless every call was a valid POST whose body is exactly
// wire.AppendBody of what it decodes to, with want's envelope.
func checkBodies(t *testing.T, calls []call, want wire.Request) {
	t.Helper()
	for i, c := range calls {
		if !c.decoded {
			t.Fatalf("call %d: invalid body %s", i, c.body)
		}
		if c.req.Header != want.Header {
			t.Fatalf("call %d: envelope %+v, want %+v", i, c.req.Header, want.Header)
		}
		if !c.canonical {
			t.Fatalf("call %d: body is not the canonical encoding:\n got %s\nwant %s", i, c.body, wire.AppendBody(nil, c.req))
		}
	}
}

// accepted returns the members of the 2xx-answered calls, in order, and
// fails the test on an invalid or non-canonical body.
func accepted(t *testing.T, calls []call) []string {
	t.Helper()
	var out []string
	for i, c := range calls {
		if !c.decoded || !c.canonical {
			t.Fatalf("call %d: body is not a valid canonical request: %s", i, c.body)
		}
		if c.status >= 200 && c.status < 300 && c.answered && isAcceptance(c.answer) {
			out = append(out, c.req.UIDs...)
		}
	}
	return out
}

// isAcceptance reports whether a 2xx body is the API's acceptance: a JSON
// object whose status is "success".
func isAcceptance(body string) bool {
	var v struct{ Status string }
	return json.Unmarshal([]byte(body), &v) == nil && strings.EqualFold(strings.TrimSpace(v.Status), "success")
}

// contiguous reports whether part is a non-empty run of all.
func contiguous(part, all []string) bool {
	if len(part) == 0 {
		return false
	}
	i := slices.Index(all, part[0])
	return i >= 0 && i+len(part) <= len(all) && slices.Equal(all[i:i+len(part)], part)
}

// leak returns a part (8 bytes or more) of the API key or of cred (the
// encoded credentials) found in text, or "".
func leak(text, cred string) string {
	const n = 8
	for _, secret := range []string{testKey, cred} {
		for i := 0; i+n <= len(secret); i++ {
			if strings.Contains(text, secret[i:i+n]) {
				return secret[i : i+n]
			}
		}
	}
	return ""
}

// logBuffer collects a Client's JSON log output; it is safe for concurrent
// writes (slog handlers write from the goroutines that log).
type logBuffer struct{ rig.Buffer }

// logger returns a debug-level JSON logger writing to l.
func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the decoded JSON log records whose msg contains substr.
func (l *logBuffer) lines(t *testing.T, substr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if msg, _ := rec["msg"].(string); strings.Contains(msg, substr) {
			out = append(out, rec)
		}
	}
	return out
}
