package sink_test

// A request whose outcome is unknown cannot be overtaken (issue 18 item 3).

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// lateAPI is a Cohort Sync API that keeps the cohort's members and
// processes the first request only late: it holds it until the client has
// given up on it (the attempt timed out), then applies it after delay. The
// other requests are applied and answered at once.
type lateAPI struct {
	delay time.Duration

	mu      sync.Mutex
	n       int
	members map[string]bool
	log     []string // what was applied, in order
	late    chan struct{}
}

func (a *lateAPI) apply(body []byte) {
	req, ok := decodeBody(body)
	if !ok {
		panic("invalid body " + string(body))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, u := range req.UIDs {
		a.members[u] = req.Action == event.Add
		a.log = append(a.log, string(req.Action)+" "+u)
	}
}

func (a *lateAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body := make([]byte, r.ContentLength)
	if _, err := r.Body.Read(body); err != nil && int64(len(body)) != r.ContentLength {
		panic(err)
	}
	a.mu.Lock()
	n := a.n
	a.n++
	a.mu.Unlock()
	if n == 0 {
		<-r.Context().Done() // the client gave up: the outcome is unknown to it
		go func() {
			time.Sleep(a.delay)
			a.apply(body)
			close(a.late)
		}()
		return
	}
	a.apply(body)
	_, _ = w.Write([]byte(okBody))
}

// TestUnknownOutcomeNotOvertaken: "add u" times out (the API got it, and
// processes it later); the Send retries it and it is accepted. A "remove u"
// for the same cohort must not be sent until the first "add u" can no
// longer be processed (MaxProcessingTime after it was sent): u must end up
// out of the cohort.
func TestUnknownOutcomeNotOvertaken(t *testing.T) {
	t.Parallel()
	const (
		attemptTimeout = 300 * time.Millisecond
		maxProcessing  = 1500 * time.Millisecond
	)
	api := &lateAPI{delay: 600 * time.Millisecond, members: map[string]bool{}, late: make(chan struct{})}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	logs := &logBuffer{}
	c, err := sink.New(sink.Config{BaseURL: srv.URL, WorkspaceID: testWorkspace, APIKey: testKey, Logger: logs.logger(),
		AttemptTimeout: attemptTimeout, MaxProcessingTime: maxProcessing,
		InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()
	add := request(1)
	if rej, err := c.Send(ctx, add); err != nil || len(rej) != 0 {
		t.Fatalf("Send add = %v, %v", rej, err)
	}
	remove := add
	remove.Action = event.Remove
	if rej, err := c.Send(ctx, remove); err != nil || len(rej) != 0 {
		t.Fatalf("Send remove = %v, %v", rej, err)
	}
	removed := time.Now()
	select {
	case <-api.late:
	case <-ctx.Done():
		t.Fatal("the late copy was never processed")
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if api.members["u0"] {
		t.Fatalf("u0 is in the cohort: the late first add overtook the remove (applied: %v)", api.log)
	}
	if want := []string{"add_members u0", "add_members u0", "remove_members u0"}; !slices.Equal(api.log, want) {
		t.Fatalf("applied %v, want %v", api.log, want)
	}
	if d := removed.Sub(start); d < maxProcessing {
		t.Fatalf("the remove was accepted %v after the first add was sent, want at least MaxProcessingTime %v", d, maxProcessing)
	}
}

// TestUnknownOutcomeHoldsOnlyTheOtherAction: after an unknown outcome, a
// later Send of the same action for the cohort, and any Send for another
// cohort, go at once; Settle waits until MaxProcessingTime after the
// unknown request was sent.
func TestUnknownOutcomeHoldsOnlyTheOtherAction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", func(n int, _ call) reply {
			if n == 0 {
				return reply{hold: make(chan struct{})} // never answered: times out
			}
			return ok()
		}, nil) // AttemptTimeout 15 s, MaxProcessingTime 30 s
		start := time.Now()
		if rej, err := e.client.Send(t.Context(), request(2)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v", rej, err)
		}
		same := request(1)
		same.UIDs = []string{"u9"}
		other := request(1)
		other.CohortID, other.Action = "another", event.Remove
		before := time.Now()
		if _, err := e.client.Send(t.Context(), same); err != nil {
			t.Fatal(err)
		}
		if _, err := e.client.Send(t.Context(), other); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(before); d != 0 {
			t.Fatalf("a Send of the same action, and one for another cohort, waited %v; want no wait", d)
		}
		if err := e.client.Settle(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 30*time.Second {
			t.Fatalf("Settle returned %v after the unknown request was sent, want MaxProcessingTime (30s)", got)
		}
		remove := request(1)
		remove.Action = event.Remove
		before = time.Now()
		if _, err := e.client.Send(t.Context(), remove); err != nil || time.Since(before) != 0 {
			t.Fatalf("Send remove after the hold: %v, waited %v", err, time.Since(before))
		}
	})
}

// TestMaxProcessingTimeValidated: MaxProcessingTime must exceed
// AttemptTimeout.
func TestMaxProcessingTimeValidated(t *testing.T) {
	for _, tc := range []struct {
		attempt, max time.Duration
		ok           bool
	}{{0, 0, true}, {0, 15 * time.Second, false}, {0, 16 * time.Second, true}, {time.Minute, 0, true}, {time.Minute, 30 * time.Second, false}} {
		cfg := sink.Config{BaseURL: "https://x", WorkspaceID: "w", APIKey: "k", AttemptTimeout: tc.attempt, MaxProcessingTime: tc.max}
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("attempt %v, max processing %v: Validate = %v, want ok %v", tc.attempt, tc.max, err, tc.ok)
		}
	}
}

// TestHoldCohort: a parked record's not-before, taken over with HoldCohort,
// holds every Send of its cohort (either action) until then, and no other
// cohort; it is not one of this Client's requests, so CohortHold reports it
// (a record of the cohort parked again carries it) but UnknownHold and
// Settle do not wait for it.
func TestHoldCohort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", func(int, call) reply { return ok() }, nil)
		add := request(1)
		remove := request(1)
		remove.Action = event.Remove
		other := request(1)
		other.CohortID = "another"
		start := time.Now()
		e.client.HoldCohort(add.Header, start.Add(20*time.Second))
		e.client.HoldCohort(add.Header, start.Add(5*time.Second)) // an earlier end does not shorten it
		if h := e.client.CohortHold(add.Header); h != 20*time.Second {
			t.Errorf("CohortHold = %v, want the 20s hold taken over", h)
		}
		if h := e.client.UnknownHold(); h != 0 {
			t.Errorf("UnknownHold = %v, want 0: the hold is not this Client's request", h)
		}
		if err := e.client.Settle(t.Context()); err != nil || time.Since(start) != 0 {
			t.Fatalf("Settle: %v after %v, want no wait", err, time.Since(start))
		}
		if _, err := e.client.Send(t.Context(), other); err != nil || time.Since(start) != 0 {
			t.Fatalf("Send for another cohort: %v after %v, want no wait", err, time.Since(start))
		}
		for _, req := range []wire.Request{add, remove} {
			if _, err := e.client.Send(t.Context(), req); err != nil {
				t.Fatal(err)
			}
			if got := time.Since(start); got != 20*time.Second {
				t.Errorf("Send %s returned %v after the hold was taken, want 20s", req.Action, got)
			}
		}
	})
}
