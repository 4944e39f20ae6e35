package emulator

import (
	"slices"
	"sort"
	"time"
)

// RequestRecord is one entry of the request log: a request to anything but
// the admin API, as the emulator saw and answered it.
type RequestRecord struct {
	// Seq numbers records from 1, in arrival order. It keeps increasing
	// across [Emulator.Reset].
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Method and Path are the request's method and URL path.
	Method     string `json:"method"`
	Path       string `json:"path"`
	RemoteAddr string `json:"remote_addr"`
	// UserAgent and Replica are the client's User-Agent and ReplicaHeader.
	UserAgent string `json:"user_agent,omitempty"`
	Replica   string `json:"replica,omitempty"`
	// Workspace is the Basic-auth username, or the MOE-APPKEY header when
	// there is no usable Authorization header; it is not verified unless
	// AuthOK is true.
	Workspace string `json:"workspace,omitempty"`
	AuthOK    bool   `json:"auth_ok"`
	// Status is the HTTP status answered; 0 when the connection was reset
	// or the client went away (see Fault).
	Status int `json:"status"`
	// ErrorType, ErrorMessage and Attribute repeat the error body, if any.
	ErrorType    string `json:"error_type,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`
	Attribute    string `json:"attribute,omitempty"`
	// RequestID is the request_id of the error body; successes get one too,
	// although the success body does not carry it.
	RequestID string `json:"request_id"`
	// Action, Partner, CohortID and CohortName are the body's fields, as far
	// as they could be read.
	Action     string `json:"action,omitempty"`
	Partner    string `json:"partner,omitempty"`
	CohortID   string `json:"cohort_id,omitempty"`
	CohortName string `json:"cohort_name,omitempty"`
	// Members are the uids of a valid body, in the order sent.
	Members []string `json:"members,omitempty"`
	// DroppedUnknown counts uids of an applied add_members that the user
	// store did not know.
	DroppedUnknown int `json:"dropped_unknown,omitempty"`
	// BodyBytes is the number of body bytes read (at most MaxBodyBytes+1).
	BodyBytes int `json:"body_bytes"`
	// Fault names the injected fault that decided the answer, if any
	// (FaultOutage, Fault5xx, Fault429, FaultReset, FaultForbidden,
	// FaultCanceled, FaultBadRequest, FaultStatusFail, FaultRejectUIDs).
	Fault string `json:"fault,omitempty"`
	// Latency is the injected latency waited before handling.
	Latency time.Duration `json:"latency_ns,omitempty"`
	// Applied reports whether the request changed (or would have changed)
	// the segment state: true for 200s and for injected failures with
	// Faults.ApplyBeforeError.
	Applied bool `json:"applied"`
	// Counted reports whether the request counted toward the rate limit.
	Counted bool `json:"counted"`
}

// requestLog is a bounded FIFO of records; guarded by Emulator.mu.
type requestLog struct {
	maxRecords int // < 0: keep nothing
	maxMembers int // < 0: no bound
	buf        []RequestRecord
	head       int // buf[head:] are the live records
	members    int
	lastSeq    uint64
	dropped    uint64
}

// add appends r and returns the Seq it was given.
func (l *requestLog) add(r RequestRecord) uint64 {
	l.lastSeq++
	r.Seq = l.lastSeq
	if l.maxRecords < 0 {
		l.dropped++
		return r.Seq
	}
	l.buf = append(l.buf, r)
	l.members += len(r.Members)
	for l.len() > 0 && (l.len() > l.maxRecords || (l.maxMembers >= 0 && l.members > l.maxMembers)) {
		l.members -= len(l.buf[l.head].Members)
		l.buf[l.head] = RequestRecord{}
		l.head++
		l.dropped++
	}
	if l.head > 0 && l.head >= len(l.buf)/2 {
		n := copy(l.buf, l.buf[l.head:])
		clear(l.buf[n:])
		l.buf = l.buf[:n]
		l.head = 0
	}
	return r.Seq
}

func (l *requestLog) len() int { return len(l.buf) - l.head }

// since returns copies of the records with Seq > seq.
func (l *requestLog) since(seq uint64) []RequestRecord {
	live := l.buf[l.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].Seq > seq })
	out := make([]RequestRecord, len(live)-i)
	for j, r := range live[i:] {
		r.Members = slices.Clone(r.Members)
		out[j] = r
	}
	return out
}

func (l *requestLog) clear() {
	l.buf = nil
	l.head = 0
	l.members = 0
}

// Requests returns a copy of every kept request record, oldest first.
func (e *Emulator) Requests() []RequestRecord { return e.RequestsSince(0) }

// RequestsSince returns copies of the kept records with Seq > seq, oldest
// first. Pass the Seq of the last record seen to poll for new ones.
func (e *Emulator) RequestsSince(seq uint64) []RequestRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reqlog.since(seq)
}

// RequestLogStats reports the Seq of the newest record (0 before the first)
// and how many records were dropped to keep the log within its bounds.
func (e *Emulator) RequestLogStats() (lastSeq, dropped uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reqlog.lastSeq, e.reqlog.dropped
}
