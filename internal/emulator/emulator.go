package emulator

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Emulator emulates POST /v1/integrations/cohortsync and serves the admin
// API under AdminPrefix. Create it with [New]; it is safe for concurrent use.
type Emulator struct {
	cfg       Config // immutable after New
	log       *slog.Logger
	now       func() time.Time
	validator validator

	// mu guards every field below.
	mu          sync.Mutex
	segments    map[segmentKey]*segment
	users       map[string]map[string]struct{} // nil: store disabled
	windows     map[string]*rateWindow         // by workspace
	workspaces  map[string]*wsState            // the workspaces served, by ID
	faults      Faults
	faultsSetAt time.Time
	rng         *rand.Rand
	reqlog      requestLog
}

// rateWindow counts the requests of one workspace in one fixed window.
type rateWindow struct {
	start time.Time
	count int
	limit int // the workspace's limit when the window was last used
}

// New validates cfg, fills in defaults and returns a ready Emulator.
func New(cfg Config) (*Emulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Credentials = maps.Clone(cfg.Credentials)
	cfg.Workspaces = maps.Clone(cfg.Workspaces)
	for id, w := range cfg.Workspaces {
		if w.Faults != nil {
			f := w.Faults.clone()
			w.Faults = &f
			cfg.Workspaces[id] = w
		}
	}
	cfg.Faults = cfg.Faults.clone()
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	e := &Emulator{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "emulator"),
		now:       cfg.Now,
		validator: validator{leadingPeriod: cfg.LeadingPeriod, strict: cfg.StrictMembers},
		rng:       rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		reqlog:    requestLog{maxRecords: cfg.RequestLogSize, maxMembers: cfg.RequestLogMaxMembers},
	}
	e.resetLocked()
	return e, nil
}

// resetLocked puts the state back to how New left it, except the request
// sequence number. e.mu must be held (or e not yet shared).
func (e *Emulator) resetLocked() {
	e.segments = make(map[segmentKey]*segment)
	e.users = newUserStore(e.cfg.Users)
	e.windows = make(map[string]*rateWindow)
	e.faults = e.cfg.Faults.clone()
	e.faultsSetAt = e.now()
	e.resetWorkspacesLocked(e.faultsSetAt)
	e.reqlog.clear()
}

// Reset clears the segments, the request log (Seq keeps increasing) and the
// rate windows, and restores the user store, the faults and the workspaces
// given in Config (workspaces added at run time are dropped, revoked keys
// restored, workspace faults put back).
func (e *Emulator) Reset() {
	e.mu.Lock()
	e.resetLocked()
	e.mu.Unlock()
	e.log.Info("state reset")
}

// SetFaults replaces the active faults after validating them. Script steps
// are timed from this call.
func (e *Emulator) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	e.mu.Lock()
	e.faults = f.clone()
	e.faultsSetAt = e.now()
	e.mu.Unlock()
	e.log.Info("faults set", "error_rate", f.ErrorRate, "reset_rate", f.ResetRate, "latency", f.Latency,
		"forbidden", f.Forbidden, "outage", f.Outage, "force_429", f.Force429, "bad_request", f.BadRequest,
		"status_fail", f.StatusFail, "reject_uids", len(f.RejectUIDs), "script_steps", len(f.Script))
	return nil
}

// Faults returns the active faults; Force429 is what is left of the count.
func (e *Emulator) Faults() Faults {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.faults.clone()
}

// ServeHTTP serves the emulated endpoint at APIPath, the admin API under
// AdminPrefix, and 404 elsewhere.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, AdminPrefix) || r.URL.Path == strings.TrimSuffix(AdminPrefix, "/") {
		e.serveAdmin(w, r)
		return
	}
	rec := RequestRecord{
		Method:     r.Method,
		Path:       r.URL.Path,
		RemoteAddr: r.RemoteAddr,
		UserAgent:  r.UserAgent(),
		Replica:    r.Header.Get(ReplicaHeader),
		RequestID:  newRequestID(),
	}
	if u, _, ok := r.BasicAuth(); ok {
		rec.Workspace = u
	} else {
		rec.Workspace = r.Header.Get("MOE-APPKEY")
	}
	out := e.handle(r, &rec)
	e.write(w, &rec, out)
}

// outcome is how a request is answered.
type outcome struct {
	err     *apiError   // nil: 200 success (unless reset or aborted); status 200 for an injected "status":"fail"
	header  http.Header // extra response headers
	reset   bool        // close the connection without answering
	aborted bool        // the client went away; write nothing
	fault   string      // the injected fault that decided, if any
}

// handle runs the checks in the order of the package doc, applies accepted
// requests, and logs rec.
func (e *Emulator) handle(r *http.Request, rec *RequestRecord) outcome {
	rec.Time = e.now()
	early := func(o outcome) outcome {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.recordLocked(rec, o)
		return o
	}
	if r.URL.Path != APIPath {
		return early(outcome{err: errNotFound})
	}
	if r.Method != http.MethodPost {
		return early(outcome{err: errMethodNotAllowed, header: http.Header{"Allow": {http.MethodPost}}})
	}

	if d := e.latency(rec.Workspace); d > 0 {
		rec.Latency = d
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return early(outcome{aborted: true, fault: FaultCanceled})
		}
	}
	e.mu.Lock()
	now := e.now()
	if f, setAt := e.faultsLocked(rec.Workspace); f.Outage || now.Before(f.OutageUntil) ||
		f.activeStep(FaultOutage, setAt, now) {
		o := outcome{fault: FaultOutage, reset: f.OutageReset}
		if !o.reset {
			o.err = serverError(http.StatusServiceUnavailable)
		}
		e.recordLocked(rec, o)
		e.mu.Unlock()
		return o
	}
	e.mu.Unlock()

	if !isJSONContentType(r.Header.Get("Content-Type")) {
		return early(outcome{err: errUnsupportedMedia})
	}
	buf := getBodyBuffer(r.ContentLength, e.cfg.MaxBodyBytes)
	defer putBodyBuffer(buf)
	body, err := readAll(io.LimitReader(r.Body, int64(e.cfg.MaxBodyBytes)+1), (*buf)[:0])
	*buf = body // keep the grown buffer for reuse
	rec.BodyBytes = len(body)
	if len(body) > e.cfg.MaxBodyBytes {
		return early(outcome{err: errPayloadTooLarge})
	}
	if err != nil {
		// The body could not be read in full (the client went away or sent
		// a broken chunked body): treat it as undecodable.
		return early(outcome{err: errMalformedJSON})
	}

	ws, aerr := e.authenticate(r)
	if aerr != nil {
		return early(outcome{err: aerr})
	}
	rec.AuthOK = true
	rec.Workspace = ws
	late := e.holdLate(rec)

	// Validation is pure, so it runs outside the lock; its result is used
	// only at its place in the order of checks. It keeps nothing of body,
	// whose buffer goes back to the pool.
	req, verr := e.validator.parse(body)
	rec.Action, rec.Partner, rec.CohortID, rec.CohortName = req.Action, req.Partner, req.CohortID, req.CohortName
	if verr == nil {
		rec.Members = req.Members
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	o := e.decideLocked(ws, &req, verr, rec)
	if late {
		if o.fault == "" {
			o.fault = FaultLate
		}
		o.aborted = o.aborted || r.Context().Err() != nil // processed all the same
	}
	e.recordLocked(rec, o)
	return o
}

// holdLate draws Faults.LateRate and, when drawn, waits Faults.LateDelay
// whatever the client does (FaultLate); it reports whether it held.
func (e *Emulator) holdLate(rec *RequestRecord) bool {
	e.mu.Lock()
	f, _ := e.faultsLocked(rec.Workspace)
	d := f.LateDelay
	late := e.drawLocked(f.LateRate)
	e.mu.Unlock()
	if !late {
		return false
	}
	rec.Latency += d
	time.Sleep(d)
	return true
}

// bodyBuffers holds *[]byte buffers for reading request bodies.
var bodyBuffers sync.Pool

// maxPooledBody bounds the capacity of the buffers kept in bodyBuffers.
const maxPooledBody = 1 << 20

// getBodyBuffer returns an empty buffer from the pool with room for a body
// of contentLength bytes, when known, read through a reader limited to
// limit+1 bytes, and for the final read that finds the end.
func getBodyBuffer(contentLength int64, limit int) *[]byte {
	want := 512 // what io.ReadAll starts with
	if contentLength > 0 {
		want = int(min(contentLength, int64(limit)+1)) + 1
	}
	if buf, _ := bodyBuffers.Get().(*[]byte); buf != nil && cap(*buf) >= want {
		return buf
	}
	// A pooled buffer too small for this body is dropped: the pool keeps
	// the sizes bodies need.
	b := make([]byte, 0, want)
	return &b
}

func putBodyBuffer(buf *[]byte) {
	if cap(*buf) <= maxPooledBody {
		*buf = (*buf)[:0]
		bodyBuffers.Put(buf)
	}
}

// readAll is io.ReadAll reading into b, which it grows as needed.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
	}
}

// decideLocked runs the checks that need shared state (forbidden, rate
// limit, injected failures) and applies the request if it is accepted.
// e.mu must be held.
func (e *Emulator) decideLocked(ws string, req *cohortRequest, verr *apiError, rec *RequestRecord) outcome {
	now := e.now()
	f, setAt := e.faultsLocked(ws)
	var win *rateWindow
	if limit := e.rateLimitLocked(ws); limit > 0 {
		win = e.windowLocked(ws, now)
		win.limit = limit
	}
	count := func() {
		if win != nil {
			win.count++
			rec.Counted = true
		}
	}

	if f.Forbidden {
		if e.cfg.CountRejected {
			count()
		}
		return outcome{err: forbiddenError(f.ForbiddenVariant), fault: FaultForbidden, header: e.rateHeaders(win, now, false)}
	}

	forced := f.Force429 > 0
	if forced {
		f.Force429--
	} else {
		forced = f.activeStep(Fault429, setAt, now)
	}
	if forced || (win != nil && win.count >= win.limit) {
		o := outcome{err: errRateLimited, header: e.rateHeaders(win, now, true)}
		if forced {
			o.fault = Fault429
		}
		return o
	}

	if verr != nil {
		if e.cfg.CountRejected {
			count()
		}
		return outcome{err: verr, header: e.rateHeaders(win, now, false)}
	}
	// Injected rejections of a valid request: never applied, counted like
	// the 400s above (a StatusFail 200 too: it is a rejection in disguise).
	if o, ok := f.rejectOutcome(req.Members, setAt, now); ok {
		if e.cfg.CountRejected {
			count()
		}
		o.header = e.rateHeaders(win, now, false)
		return o
	}
	count()

	var o outcome
	switch {
	case f.activeStep(FaultReset, setAt, now) || e.drawLocked(f.ResetRate):
		o = outcome{reset: true, fault: FaultReset}
	case f.activeStep(Fault5xx, setAt, now) || e.drawLocked(f.ErrorRate):
		status := http.StatusInternalServerError
		if n := len(f.ErrorStatuses); n > 0 {
			status = f.ErrorStatuses[e.rng.IntN(n)]
		}
		o = outcome{err: serverError(status), fault: Fault5xx}
	}
	if o.fault == "" || f.ApplyBeforeError {
		rec.DroppedUnknown = e.applyLocked(ws, req, now)
		rec.Applied = true
	}
	o.header = e.rateHeaders(win, now, false)
	return o
}

// drawLocked reports true with probability rate. Rates 0 and 1 consume no
// randomness, so they are deterministic. e.mu must be held.
func (e *Emulator) drawLocked(rate float64) bool {
	switch {
	case rate <= 0:
		return false
	case rate >= 1:
		return true
	default:
		return e.rng.Float64() < rate
	}
}

// latency returns the injected latency for one request naming workspace ws.
func (e *Emulator) latency(ws string) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	f, _ := e.faultsLocked(ws)
	d := f.Latency
	if j := f.LatencyJitter; j > 0 {
		d += time.Duration(e.rng.Int64N(int64(j) + 1))
	}
	return d
}

// windowLocked returns the current rate window of ws, starting a new one
// when the clock has moved past the previous one. e.mu must be held.
func (e *Emulator) windowLocked(ws string, now time.Time) *rateWindow {
	start := windowStart(now, e.cfg.RateWindow)
	w := e.windows[ws]
	if w == nil || !w.start.Equal(start) {
		w = &rateWindow{start: start}
		e.windows[ws] = w
	}
	return w
}

// windowStart aligns now down to a multiple of d since the Unix epoch.
func windowStart(now time.Time, d time.Duration) time.Time {
	ns := now.UnixNano()
	m := ns % int64(d)
	if m < 0 {
		m += int64(d)
	}
	return time.Unix(0, ns-m)
}

// rateHeaders returns the x-ratelimit-* headers for win (none when the
// limit is off) and, on a 429 with Config.RetryAfter, Retry-After.
func (e *Emulator) rateHeaders(win *rateWindow, now time.Time, is429 bool) http.Header {
	if win == nil && !(is429 && e.cfg.RetryAfter) {
		return nil
	}
	h := make(http.Header)
	end := windowStart(now, e.cfg.RateWindow).Add(e.cfg.RateWindow)
	left := ceilSeconds(end.Sub(now))
	if win != nil {
		remaining := max(0, win.limit-win.count)
		if is429 {
			remaining = 0
		}
		h.Set("X-Ratelimit-Limit", strconv.Itoa(win.limit))
		h.Set("X-Ratelimit-Remaining", strconv.Itoa(remaining))
		if e.cfg.ResetHeader == ResetEpoch {
			h.Set("X-Ratelimit-Reset", strconv.FormatInt(ceilSeconds(time.Duration(end.UnixNano())), 10))
		} else {
			h.Set("X-Ratelimit-Reset", strconv.FormatInt(left, 10))
		}
	}
	if is429 && e.cfg.RetryAfter {
		h.Set("Retry-After", strconv.FormatInt(max(1, left), 10))
	}
	return h
}

// ceilSeconds rounds a non-negative duration up to whole seconds.
func ceilSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// authenticate runs the 401/400 checks of step 5 and returns the workspace.
func (e *Emulator) authenticate(r *http.Request) (string, *apiError) {
	if strings.TrimSpace(r.Header.Get("Authorization")) == "" {
		return "", errAuthHeader
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", errAuthHeader
	}
	e.mu.Lock()
	var key string
	s := e.workspaces[user]
	known := s != nil && !s.revoked
	if known {
		key = s.key
	}
	e.mu.Unlock()
	if !known || subtle.ConstantTimeCompare([]byte(key), []byte(pass)) != 1 {
		return "", errSecretMismatch
	}
	appKey := r.Header.Get("MOE-APPKEY")
	if appKey == "" {
		return "", missingAttribute("MOE-APPKEY")
	}
	if appKey != user {
		return "", errAppKeyMismatch
	}
	return user, nil
}

// isJSONContentType accepts application/json with no charset or a UTF-8
// charset, in any letter case.
func isJSONContentType(v string) bool {
	switch v {
	case "":
		return false
	case "application/json", "application/json; charset=utf-8":
		return true // the common forms, without the allocations of ParseMediaType
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil || mt != "application/json" {
		return false
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return false
	}
	return true
}

// recordLocked completes rec from o and appends it to the request log.
// e.mu must be held.
func (e *Emulator) recordLocked(rec *RequestRecord, o outcome) {
	switch {
	case o.reset || o.aborted:
		rec.Status = 0
	case o.err != nil:
		rec.Status = o.err.status
		rec.ErrorType, rec.ErrorMessage, rec.Attribute = o.err.typ, o.err.message, o.err.attribute
	default:
		rec.Status = http.StatusOK
	}
	rec.Fault = o.fault
	rec.Seq = e.reqlog.add(*rec)
}

// write sends the answer for o.
func (e *Emulator) write(w http.ResponseWriter, rec *RequestRecord, o outcome) {
	// The check saves building the arguments when Debug is off.
	if e.log.Enabled(context.Background(), slog.LevelDebug) {
		e.log.Debug("request", "seq", rec.Seq, "status", rec.Status, "workspace", rec.Workspace,
			"action", rec.Action, "partner", rec.Partner, "cohort_id", rec.CohortID, "members", len(rec.Members),
			"request_id", rec.RequestID, "fault", rec.Fault, "replica", rec.Replica)
	}
	switch {
	case o.aborted:
		return
	case o.reset:
		resetConnection(w)
		return
	}
	for k, v := range o.header {
		w.Header()[k] = v
	}
	if o.err == nil {
		writeBody(w, http.StatusOK, successJSON)
		return
	}
	writeJSON(w, o.err.status, ErrorResponse{Status: "fail", Error: ErrorDetail{
		Attribute: o.err.attribute,
		Message:   o.err.message,
		Type:      o.err.typ,
		RequestID: rec.RequestID,
	}})
}

// successJSON is the body of every 200, encoded once.
var successJSON = func() []byte {
	b, err := json.Marshal(SuccessResponse{Status: "success", Message: MessageSuccess})
	if err != nil {
		panic(err)
	}
	return b
}()

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeBody(w, status, b)
}

// writeBody sends the JSON body b.
func writeBody(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// resetConnection closes the client connection without a response. On a TCP
// connection it sets SO_LINGER to 0 first, so the client sees a reset. When
// the ResponseWriter cannot be hijacked (HTTP/2, httptest.ResponseRecorder)
// it panics with http.ErrAbortHandler, which net/http servers treat as an
// aborted response.
func resetConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	c := conn
	for c != nil {
		switch v := c.(type) {
		case *net.TCPConn:
			_ = v.SetLinger(0)
			c = nil
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			c = nil
		}
	}
	_ = conn.Close()
}
