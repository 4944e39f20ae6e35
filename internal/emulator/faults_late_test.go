package emulator_test

import (
	"context"
	"net/http/httptest"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

// TestFaultLateProcessesAfterTheClientGaveUp: with LateRate 1 a request is
// held for LateDelay whatever its client does, then processed: an "add u"
// whose client gave up at 15 s is applied at 20 s, after a "remove u" sent
// at 18 s was accepted, and u ends up a member -- what a client that takes
// a timeout for "not sent" has to expect. The record says late, applied,
// nothing answered.
func TestFaultLateProcessesAfterTheClientGaveUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, err := emulator.New(emulator.Config{Credentials: testCreds,
			Faults: emulator.Faults{LateRate: 1, LateDelay: 20 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		add := apiReq{body: body("add_members", "p", "c1", "u")}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		w := httptest.NewRecorder()
		done := make(chan struct{})
		start := time.Now()
		go func() { defer close(done); e.ServeHTTP(w, add.build("").WithContext(ctx)) }()

		time.Sleep(18 * time.Second) // the client gave up at 15 s
		if ctx.Err() == nil || len(e.Members("ws1", "p", "c1")) != 0 {
			t.Fatalf("at 18 s: client context %v, members %v; want given up, none", ctx.Err(), e.Members("ws1", "p", "c1"))
		}
		setFaults(t, e, emulator.Faults{})
		mustStatus(t, serve(e, apiReq{body: body("remove_members", "p", "c1", "u")}), 200)
		<-done
		if d := time.Since(start); d != 20*time.Second {
			t.Errorf("the late request returned after %s, want 20s", d)
		}
		if got := e.Members("ws1", "p", "c1"); !slices.Equal(got, []string{"u"}) {
			t.Errorf("members %v: the add held past its client's timeout was not applied after the remove", got)
		}
		if w.Body.Len() != 0 {
			t.Errorf("wrote %q to a client that went away", w.Body.String())
		}
		recs := e.Requests()
		if len(recs) != 2 {
			t.Fatalf("%d records", len(recs))
		}
		// Records are logged when processed: the remove first.
		if r := recs[1]; r.Fault != emulator.FaultLate || !r.Applied || r.Status != 0 || r.Latency != 20*time.Second {
			t.Errorf("late record = %+v", r)
		}
		if r := recs[0]; r.Fault != "" || !r.Applied || r.Status != 200 {
			t.Errorf("remove record = %+v", r)
		}
	})
}

// TestFaultLateAnswersAPatientClient: a client that waits longer than
// LateDelay gets the usual answer; LateRate 0 holds nothing.
func TestFaultLateAnswersAPatientClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, err := emulator.New(emulator.Config{Credentials: testCreds,
			Faults: emulator.Faults{LateRate: 1, LateDelay: 3 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		mustStatus(t, serve(e, apiReq{body: exampleAdd}), 200)
		if d := time.Since(start); d != 3*time.Second {
			t.Errorf("answered after %s, want 3s", d)
		}
		if r := e.Requests()[0]; r.Fault != emulator.FaultLate || !r.Applied || r.Status != 200 {
			t.Errorf("record = %+v", r)
		}
		setFaults(t, e, emulator.Faults{LateDelay: time.Hour})
		start = time.Now()
		mustStatus(t, serve(e, apiReq{body: exampleAdd}), 200)
		if d := time.Since(start); d != 0 {
			t.Errorf("LateRate 0 held a request for %s", d)
		}
	})
}
