package sink_test

// The write fence (DESIGN.md invariant 4) on the monotonic clock, lowered at
// once by Lease.End; and HTTP/1.1 only to the API.

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cohortsync/cohortsync-worker/internal/lease"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// stepWall returns t with its wall-clock reading moved by d and its
// monotonic reading kept: what time.Now() returns after the system clock
// was stepped by d. It edits time.Time's wall field (seconds since 1885 in
// bits 30-62 when the monotonic bit is set), and fails the test if that
// layout ever changes.
func stepWall(t *testing.T, now time.Time, d time.Duration) time.Time {
	t.Helper()
	if d%time.Second != 0 || !strings.Contains(now.String(), "m=") {
		t.Fatalf("stepWall: whole seconds on a time with a monotonic reading only")
	}
	out := now
	wall := (*uint64)(unsafe.Pointer(&out))
	*wall = uint64(int64(*wall) + int64(d/time.Second)<<30)
	if !out.Round(0).Equal(now.Round(0).Add(d)) || out.Sub(now) != 0 {
		t.Fatalf("stepWall: time.Time's layout changed (wall %v, monotonic difference %v)", out.Round(0), out.Sub(now))
	}
	return out
}

// TestLeaseDeadlinesAreMonotonic is the premise of the monotonic fence: the
// deadlines internal/lease gives carry a monotonic reading.
func TestLeaseDeadlinesAreMonotonic(t *testing.T) {
	l := lease.New()
	term := l.Begin()
	l.Renew(term, time.Now().Add(time.Minute))
	d, err := l.Wait(t.Context())
	if err != nil || !strings.Contains(d.String(), "m=") {
		t.Fatalf("Wait = %v, %v: want a deadline with a monotonic reading", d, err)
	}
}

// TestFenceIgnoresWallClockStep: a lease deadline that has passed on the
// monotonic clock refuses the write even when the wall clock was stepped
// back an hour meanwhile (the process paused 2 s past a 1 s lease, then NTP
// stepped the clock). The first attempt's write is refused; the request
// goes out once, under the next lease.
func TestFenceIgnoresWallClockStep(t *testing.T) {
	t.Parallel()
	l := lease.New()
	term := l.Begin()
	l.Renew(term, time.Now().Add(time.Minute))
	e := newEnv(t, "http", nil, func(c *sink.Config) { c.Lease = l })
	var (
		mu    sync.Mutex
		reads int
	)
	sink.SetFenceClock(e.client, func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		reads++
		if reads == 2 { // the first write: the lease's minute has passed, the wall clock went back
			return stepWall(t, time.Now().Add(2*time.Minute), -time.Hour)
		}
		return time.Now()
	})
	if rej, err := e.client.Send(e.ctx(), request(3)); err != nil || len(rej) != 0 {
		t.Fatalf("Send = %v, %v", rej, err)
	}
	if n := len(e.api.got()); n != 1 {
		t.Fatalf("the API saw %d requests, want 1", n)
	}
	if got := e.retries("lease"); got != 1 {
		t.Fatalf("retries_total{reason=lease} = %v, want 1: the write past the monotonic deadline went through", got)
	}
}

// TestLeaseEndLowersFenceAtOnce: Lease.End (the generation was fenced)
// refuses the next write at once, although the latest deadline an attempt
// obtained is an hour away; the request goes out only under the next term.
func TestLeaseEndLowersFenceAtOnce(t *testing.T) {
	t.Parallel()
	l := lease.New()
	term := l.Begin()
	l.Renew(term, time.Now().Add(time.Hour))
	e := newEnv(t, "http", nil, func(c *sink.Config) { c.Lease = l })
	var (
		mu      sync.Mutex
		reads   int
		renewed atomic.Int64 // unix nanoseconds of the next term's proof
	)
	sink.SetFenceClock(e.client, func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		reads++
		if reads == 2 { // right before the first write, the generation ends
			l.End(term)
			go func() {
				time.Sleep(50 * time.Millisecond)
				next := l.Begin()
				renewed.Store(time.Now().UnixNano())
				l.Renew(next, time.Now().Add(time.Hour))
			}()
		}
		return time.Now()
	})
	if rej, err := e.client.Send(e.ctx(), request(3)); err != nil || len(rej) != 0 {
		t.Fatalf("Send = %v, %v", rej, err)
	}
	calls := e.api.got()
	if len(calls) != 1 || calls[0].at.UnixNano() < renewed.Load() || renewed.Load() == 0 {
		t.Fatalf("the API saw %d requests, the first at %v, the next term at %v: want 1, after the next term",
			len(calls), calls[0].at, time.Unix(0, renewed.Load()))
	}
	if got := e.retries("lease"); got != 1 {
		t.Fatalf("retries_total{reason=lease} = %v, want 1", got)
	}
}

// TestHTTP1Only: the default HTTP client speaks HTTP/1.1 to the API even
// when the server offers HTTP/2, so that no request is resent by the
// transport behind the limiter and the fence (http.go, defaultHTTPClient).
func TestHTTP1Only(t *testing.T) {
	t.Parallel()
	var protos sync.Map
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos.Store(r.Proto, true)
		_, _ = w.Write([]byte(okBody))
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c, err := sink.New(sink.Config{BaseURL: srv.URL, WorkspaceID: testWorkspace, APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	tr := sink.DefaultTransport(c)
	tr.TLSClientConfig = &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	for range 3 {
		if rej, err := c.Send(t.Context(), request(2)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v", rej, err)
		}
	}
	var got []string
	protos.Range(func(k, _ any) bool { got = append(got, k.(string)); return true })
	if len(got) != 1 || got[0] != "HTTP/1.1" {
		t.Fatalf("the API saw protocols %v, want only HTTP/1.1", got)
	}
}
