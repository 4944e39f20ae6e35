package sink_test

// The permit is taken after the lease is proven, right before the write
// (issue 18 item 2).

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// stallingLease is a lease whose coordinator stalls: it is valid but for
// the intervals [k·every+from, k·every+from+stall), measured from start,
// and Wait blocks through them. Its deadline is the next stall.
type stallingLease struct {
	start              time.Time
	every, from, stall time.Duration
}

// at returns whether the lease is valid at now, and until when that lasts.
func (l *stallingLease) at(now time.Time) (bool, time.Time) {
	since := now.Sub(l.start)
	k := since / l.every
	begin := l.start.Add(k*l.every + l.from)
	switch {
	case now.Before(begin):
		return true, begin
	case now.Before(begin.Add(l.stall)):
		return false, begin.Add(l.stall)
	}
	return true, begin.Add(l.every)
}

func (l *stallingLease) Wait(ctx context.Context) (time.Time, error) {
	for {
		ok, t := l.at(time.Now())
		if ok {
			return t, nil
		}
		select {
		case <-time.After(time.Until(t)):
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

func (l *stallingLease) Deadline() (time.Time, bool) {
	ok, t := l.at(time.Now())
	return t, ok
}

// TestStalledLeaseThenBurst: 60 Sends keep a replica's Limiter busy (its
// share of a 300/min budget) while the group coordinator stalls once, for
// 7 s, 20 s in. No permit may be held through a stall: after it the Sends
// must not fire together with the Limiter's next permits. Every 60 s window
// of arrivals at the API holds at most the budget.
func TestStalledLeaseThenBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget = 300
		lim := ratelimit.NewLimiter(ratelimit.Share(budget, 1, 1))
		e := newEnv(t, "mem", nil, func(c *sink.Config) {
			c.Limiter = lim
			c.Lease = &stallingLease{start: memEpoch, every: time.Hour, from: 20 * time.Second, stall: 7 * time.Second}
		})
		ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		for i := range 60 {
			wg.Go(func() {
				req := request(1)
				req.CohortID = fmt.Sprintf("cohort%02d", i)
				for ctx.Err() == nil {
					_, _ = e.client.Send(ctx, req)
				}
			})
		}
		wg.Wait()
		var at []time.Time
		for _, c := range e.api.got() {
			at = append(at, c.at)
		}
		slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
		most, from := 0, time.Time{}
		for i := range at {
			j, _ := slices.BinarySearchFunc(at, at[i].Add(time.Minute), func(a, b time.Time) int { return a.Compare(b) })
			if j-i > most {
				most, from = j-i, at[i]
			}
		}
		t.Logf("%d requests in 4 minutes, at most %d in a 60 s window (from %v)", len(at), most, from.Sub(memEpoch))
		if most > budget {
			t.Fatalf("%d arrivals in the 60 s window from %v, over the budget of %d", most, from.Sub(memEpoch), budget)
		}
		if len(at) < 3*budget {
			t.Fatalf("only %d requests in 4 minutes: the test did not keep the Limiter busy", len(at))
		}
	})
}

// TestPermitRetakenAfterSlowDial: with the default HTTP client, a permit
// that a slow dial aged past half the arrival slack is taken anew before
// the request's first byte is written, so the request reaches the API
// within half the slack of a permit.
func TestPermitRetakenAfterSlowDial(t *testing.T) {
	t.Parallel()
	lim := &recordingLimiter{}
	e := newEnv(t, "http", nil, func(c *sink.Config) { c.Limiter = lim })
	tr := sink.DefaultTransport(e.client)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		time.Sleep(700 * time.Millisecond) // a slow connection and handshake
		return dial(ctx, network, addr)
	}
	if rej, err := e.client.Send(e.ctx(), request(2)); err != nil || len(rej) != 0 {
		t.Fatalf("Send = %v, %v", rej, err)
	}
	calls, grants := e.api.got(), lim.got()
	if len(calls) != 1 || len(grants) != 2 {
		t.Fatalf("%d requests, %d permits: want 1 request and 2 permits (one re-taken after the dial)", len(calls), len(grants))
	}
	if age := calls[0].at.Sub(grants[len(grants)-1]); age > sink.PermitMaxAge+100*time.Millisecond {
		t.Fatalf("the request arrived %v after its last permit, want under %v", age, sink.PermitMaxAge)
	}
}

// TestPermitMaxAgeIsHalfTheArrivalSlack pins the constant the sink cannot
// import.
func TestPermitMaxAgeIsHalfTheArrivalSlack(t *testing.T) {
	if sink.PermitMaxAge != ratelimit.ArrivalSlack/2 {
		t.Fatalf("permitMaxAge %v, want half of ratelimit.ArrivalSlack (%v)", sink.PermitMaxAge, ratelimit.ArrivalSlack)
	}
}

// recordingLimiter grants every permit at once and records when.
type recordingLimiter struct {
	mu     sync.Mutex
	grants []time.Time
}

func (l *recordingLimiter) Wait(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.grants = append(l.grants, time.Now())
	return nil
}

func (l *recordingLimiter) PauseUntil(time.Time) {}

func (l *recordingLimiter) got() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.grants)
}
