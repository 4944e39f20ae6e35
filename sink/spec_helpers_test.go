package sink_test

// Test doubles for the spec_*_test.go files: a scriptable fake Cohort Sync
// API that serves both over a real socket (httptest.Server) and in memory
// (an http.RoundTripper, for testing/synctest bubbles, where real sockets
// are never durably blocked). Every identifier here starts with "spec" so
// that these files can live beside other test files of the package.

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
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

const (
	specWorkspace = "SPEC_WS_4711"
	specKey       = "spec-DataApiKey-0123456789abcdef"
	specSuccess   = `{"status":"success","message":"Your request has been accepted and will be processed soon."}`
)

// specReply is what the fake API does with one request.
type specReply struct {
	status int
	header map[string]string
	body   string
	// reset drops the connection without an answer (a TCP RST over a
	// socket, ECONNRESET in memory).
	reset bool
	// hold blocks the answer until it is closed or the client goes away.
	hold <-chan struct{}
	// sleep delays the answer, or until the client goes away.
	sleep time.Duration
}

func specOK() specReply { return specReply{status: 200, body: specSuccess} }

// specFail is an error answer in the API's documented envelope.
func specFail(status int, typ, msg, attr string) specReply {
	e := map[string]string{"message": msg, "type": typ, "request_id": "SpecReqI"}
	if attr != "" {
		e["attribute"] = attr
	}
	b, err := json.Marshal(map[string]any{"status": "fail", "error": e})
	if err != nil {
		panic(err)
	}
	return specReply{status: status, body: string(b)}
}

// specCall is one request the fake API received.
type specCall struct {
	at            time.Time // when the request (its whole body) arrived
	method        string
	path          string
	header        http.Header
	contentLength int64
	body          []byte
	req           wire.Request // the decoded body
	valid         bool         // the body is a valid, canonical request
	// answered is set once the answer was written while the client was
	// still waiting for it (false: not answered, or the client had gone).
	answered bool
	status   int // the status answered (0: none)
}

// specAPI is a scriptable fake of the Cohort Sync API. handle gets the
// 0-based index of the request and the request; nil handle answers 200.
// It is safe for concurrent use.
type specAPI struct {
	handle func(n int, c specCall) specReply

	mu       sync.Mutex
	calls    []specCall
	inFlight int
	maxIn    int      // the most requests in flight at once
	arrived  chan int // the index of every request, as it arrives
	finished chan int // the index of every request, once handled
}

func newSpecAPI(handle func(n int, c specCall) specReply) *specAPI {
	return &specAPI{handle: handle, arrived: make(chan int, 10000), finished: make(chan int, 10000)}
}

// receive records a request and decides the answer.
func (a *specAPI) receive(r *http.Request) (int, specReply, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return 0, specReply{}, err
	}
	c := specCall{at: time.Now(), method: r.Method, path: r.URL.Path, header: r.Header.Clone(),
		contentLength: r.ContentLength, body: body}
	c.req, c.valid = specDecode(body)
	a.mu.Lock()
	n := len(a.calls)
	a.calls = append(a.calls, c)
	a.inFlight++
	a.maxIn = max(a.maxIn, a.inFlight)
	a.mu.Unlock()
	select {
	case a.arrived <- n:
	default:
	}
	rep := specOK()
	if a.handle != nil {
		rep = a.handle(n, c)
	}
	return n, rep, nil
}

func (a *specAPI) done(n int, answered bool, status int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inFlight--
	a.calls[n].answered = answered
	a.calls[n].status = status
	select {
	case a.finished <- n:
	default:
	}
}

// got returns the requests received so far.
func (a *specAPI) got() []specCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// delay runs rep's hold and sleep; it reports false if the client went
// away meanwhile.
func (rep specReply) delay(gone <-chan struct{}) bool {
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
func (a *specAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	if rep.body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	// Recorded before the answer goes out: with a 204 the client has the
	// whole answer with the headers, and Send may return (and the test read
	// the calls) before this handler gets past the write.
	a.mu.Lock()
	a.calls[n].answered, a.calls[n].status = true, rep.status
	a.mu.Unlock()
	w.WriteHeader(rep.status)
	_, werr := io.WriteString(w, rep.body)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	a.done(n, werr == nil && r.Context().Err() == nil, rep.status)
}

// RoundTrip serves the fake in memory: the http.RoundTripper for synctest.
func (a *specAPI) RoundTrip(r *http.Request) (*http.Response, error) {
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
	a.done(n, true, rep.status)
	return &http.Response{
		Status: fmt.Sprintf("%d %s", rep.status, http.StatusText(rep.status)), StatusCode: rep.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h,
		Body: io.NopCloser(strings.NewReader(rep.body)), ContentLength: int64(len(rep.body)), Request: r,
	}, nil
}

// specDecode parses a body strictly (only the documented fields, members
// with only uid) and reports whether it is exactly wire.AppendBody of what
// it decodes to.
func specDecode(b []byte) (wire.Request, bool) {
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
	return r, bytes.Equal(wire.AppendBody(nil, r), b)
}

// specRequest is a request with n members m000, m001, ...
func specRequest(n int) wire.Request {
	r := wire.Request{Action: event.Add, Partner: "6HNBXFm7ZS", CohortID: "JKTAuqTRhC",
		CohortName: "Partner_Name", CohortDescription: "A cohort of users from a partner."}
	for i := range n {
		r.UIDs = append(r.UIDs, fmt.Sprintf("m%03d", i))
	}
	return r
}

// specEnv is a Client wired to a specAPI.
type specEnv struct {
	api    *specAPI
	client *sink.Client
	m      *metrics.Metrics
	logs   *specLog
	conns  *atomic.Int64 // new connections (socket mode)
	url    string        // the server's URL (socket mode)
}

// specSocket starts an httptest.Server for handle and a Client with short
// intervals (1ms..10ms backoff, 20ms auth retry) talking to it over real
// sockets. tweak may change the config (BaseURL holds the server's URL).
func specSocket(t *testing.T, handle func(n int, c specCall) specReply, tweak func(*sink.Config)) *specEnv {
	t.Helper()
	e := &specEnv{api: newSpecAPI(handle), m: metrics.NewMetrics(nil), logs: &specLog{}, conns: new(atomic.Int64)}
	srv := httptest.NewUnstartedServer(e.api)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			e.conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	e.url = srv.URL
	cfg := sink.Config{
		BaseURL:           srv.URL,
		WorkspaceID:       specWorkspace,
		APIKey:            specKey,
		InitialInterval:   time.Millisecond,
		MaxInterval:       10 * time.Millisecond,
		AuthRetryInterval: 20 * time.Millisecond,
		AttemptTimeout:    5 * time.Second,
		Logger:            e.logs.logger(),
		Metrics:           e.m,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	e.newClient(t, cfg)
	return e
}

// specMem is specSocket for a synctest bubble: the Client's transport calls
// the fake directly. Intervals keep their defaults unless tweak sets them.
func specMem(t *testing.T, handle func(n int, c specCall) specReply, tweak func(*sink.Config)) *specEnv {
	t.Helper()
	e := &specEnv{api: newSpecAPI(handle), m: metrics.NewMetrics(nil), logs: &specLog{}}
	cfg := sink.Config{
		BaseURL:     "https://api-01.moengage.com",
		WorkspaceID: specWorkspace,
		APIKey:      specKey,
		HTTPClient:  &http.Client{Transport: e.api},
		Logger:      e.logs.logger(),
		Metrics:     e.m,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	e.newClient(t, cfg)
	return e
}

func (e *specEnv) newClient(t *testing.T, cfg sink.Config) {
	t.Helper()
	c, err := sink.New(cfg)
	if err != nil {
		t.Fatalf("sink.New: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	e.client = c
}

// requests is requests_total{action="add_members",code}.
func (e *specEnv) requests(code string) float64 {
	return testutil.ToFloat64(e.m.Requests.WithLabelValues(string(event.Add), code))
}

// retries is retries_total{reason}.
func (e *specEnv) retries(reason string) float64 {
	return testutil.ToFloat64(e.m.Retries.WithLabelValues(reason))
}

// allRetries maps every retry reason to its count, leaving out zeros.
func (e *specEnv) allRetries() map[string]float64 {
	out := map[string]float64{}
	for _, r := range metrics.RetryReasons {
		if v := e.retries(r); v != 0 {
			out[r] = v
		}
	}
	return out
}

// specAccepted returns the members of the 2xx-answered calls, in order,
// and fails the test on an invalid body.
func specAccepted(t *testing.T, calls []specCall) []string {
	t.Helper()
	var out []string
	for i, c := range calls {
		if !c.valid {
			t.Fatalf("call %d: body is not a valid canonical request: %s", i, c.body)
		}
		if c.status >= 200 && c.status < 300 && c.answered {
			out = append(out, c.req.UIDs...)
		}
	}
	return out
}

// specLog collects a Client's log output.
type specLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *specLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *specLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *specLog) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// specSendResult is what a Send returned, and when.
type specSendResult struct {
	rej []wire.Rejection
	err error
	at  time.Time
}

// specGo runs Send in a goroutine; the result arrives on the channel.
func specGo(send func() ([]wire.Rejection, error)) <-chan specSendResult {
	ch := make(chan specSendResult, 1)
	go func() {
		rej, err := send()
		ch <- specSendResult{rej, err, time.Now()}
	}()
	return ch
}

// specCtx bounds a socket test's Send, so that a Send that never returns
// fails the test instead of hanging it.
func specCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
