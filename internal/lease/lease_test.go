package lease_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/lease"
)

// waitAsync starts l.Wait in a goroutine and returns a channel that gets
// its expiry (or the zero time on error).
func waitAsync(ctx context.Context, l *lease.Lease) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		exp, err := l.Wait(ctx)
		if err != nil {
			exp = time.Time{}
		}
		ch <- exp
	}()
	return ch
}

func TestWaitBlocksUntilRenewed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := lease.New()
		got := waitAsync(t.Context(), l)
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("Wait returned before any term began")
		default:
		}
		term := l.Begin()
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("Wait returned after Begin without a proof")
		default:
		}
		until := time.Now().Add(6 * time.Second)
		if !l.Renew(term, until) {
			t.Fatal("Renew of the current term reported false")
		}
		if exp := <-got; !exp.Equal(until) {
			t.Fatalf("Wait returned expiry %v, want %v", exp, until)
		}
	})
}

// TestPauseExpires is the paused replica: after a stop longer than the
// lease, the lease is expired on resumption even though nothing ended it,
// and it stays so until a fresh proof arrives.
func TestPauseExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := lease.New()
		term := l.Begin()
		l.Renew(term, time.Now().Add(6*time.Second))
		if !l.Valid() {
			t.Fatal("lease not valid right after Renew")
		}
		time.Sleep(45 * time.Second) // the process is stopped; monotonic time runs on
		if l.Valid() {
			t.Fatal("lease still valid 45s after a 6s proof")
		}
		got := waitAsync(t.Context(), l)
		time.Sleep(time.Minute)
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("Wait returned on an expired lease without a renewal")
		default:
		}
		until := time.Now().Add(6 * time.Second)
		l.Renew(term, until)
		if exp := <-got; !exp.Equal(until) {
			t.Fatalf("Wait returned %v, want %v", exp, until)
		}
	})
}

func TestStaleTermCannotRenew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := lease.New()
		old := l.Begin()
		l.Renew(old, time.Now().Add(time.Second))
		cur := l.Begin() // a new generation: the old term's late heartbeat answer must not count
		if l.Renew(old, time.Now().Add(time.Hour)) {
			t.Fatal("Renew of an ended term reported true")
		}
		if l.Valid() {
			t.Fatal("lease valid after a renewal of an ended term")
		}
		l.End(old) // ending an old term does not touch the current one
		l.Renew(cur, time.Now().Add(time.Second))
		if !l.Valid() {
			t.Fatal("current term not valid after its renewal")
		}
		l.End(cur)
		if l.Valid() || l.Renew(cur, time.Now().Add(time.Hour)) {
			t.Fatal("an ended term was valid or renewable")
		}
	})
}

func TestRenewNeverShortens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := lease.New()
		term := l.Begin()
		far := time.Now().Add(5 * time.Second)
		l.Renew(term, far)
		l.Renew(term, time.Now().Add(time.Second)) // an older proof answered late
		if exp, ok := l.Deadline(); !ok || !exp.Equal(far) {
			t.Fatalf("Deadline = %v, %v; want %v, true", exp, ok, far)
		}
	})
}

func TestWaitCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := lease.New()
		l.Begin()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := l.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait = %v, want DeadlineExceeded", err)
		}
	})
}

func TestEndWakesNobodyButBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := lease.New()
		term := l.Begin()
		l.Renew(term, time.Now().Add(10*time.Second))
		l.End(term)
		got := waitAsync(t.Context(), l)
		time.Sleep(time.Second)
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("Wait returned on an ended term")
		default:
		}
		next := l.Begin()
		until := time.Now().Add(time.Second)
		l.Renew(next, until)
		if exp := <-got; !exp.Equal(until) {
			t.Fatalf("Wait = %v, want %v", exp, until)
		}
	})
}
