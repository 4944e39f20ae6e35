package ratelimit_test

import (
	"context"
	"log/slog"
	"math"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

// runFleet runs f until the test's end.
func runFleet(t *testing.T, f *ratelimit.Fleet) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// of returns the records published in generation gen.
func (b *scriptBoard) of(gen int64) []ratelimit.Record {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []ratelimit.Record
	for _, r := range b.published {
		if r.Generation == gen {
			out = append(out, r)
		}
	}
	return out
}

// TestFleetUnknownTotal: a replica that could not read the partition total
// takes the smallest share (never the whole budget), or the share of the
// last total it knew, and lends nothing from a share it could not verify.
func TestFleetUnknownTotal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget = 300
		board := &scriptBoard{}
		lim := ratelimit.NewLimiter(0)
		f := ratelimit.NewFleet(ratelimit.FleetConfig{Replica: "a", Budget: budget, Limiter: lim, Board: board,
			Logger: slog.New(slog.DiscardHandler)})
		if got := f.Rebalance(1, 2, 0); got > budget/1e6 {
			t.Fatalf("no total ever known: share %v, want the token rate %v", got, budget/1e6)
		}
		known := f.Rebalance(2, 2, 6)
		if got := f.Rebalance(3, 2, 0); got != known {
			t.Fatalf("total unknown after a known one: share %v, want the last known total's %v", got, known)
		}
		runFleet(t, f)
		busy := func(gen int64) ratelimit.Record {
			return ratelimit.Record{Replica: "b", Generation: gen, Share: known, Demand: budget, Until: time.Now().Add(4 * time.Second).UnixMilli()}
		}
		board.set(busy(3))
		time.Sleep(5 * time.Second)
		recs := board.of(3)
		if len(recs) == 0 {
			t.Fatal("nothing published in generation 3")
		}
		for _, r := range recs {
			if len(r.Lent) > 0 || r.Demand < r.Share {
				t.Fatalf("with an unverified share (idle, beside a busy peer) it published %+v: lends, or shows a spare", r)
			}
		}
		if got := lim.RPM(); got != known {
			t.Fatalf("own rate %v, want its share %v", got, known)
		}
		// Verified again: it lends its spare.
		f.Rebalance(4, 2, 6)
		board.set(busy(4))
		time.Sleep(5 * time.Second)
		lent := 0.0
		for _, r := range board.of(4) {
			lent = max(lent, r.Lent["b"])
		}
		if lent < known/2 {
			t.Fatalf("with its total known again it lends at most %v of its share %v to a busy peer", lent, known)
		}
	})
}

// TestFleetBoardPauseBounded: a pause read from the board holds this
// replica at most until the record's own time + 15 minutes, however far
// away it asks; a record from the future, older than 15 minutes or of
// another generation pauses nothing; the pause is neither taken as this
// replica's own (so not republished) nor does it wake the loop (one record
// per Tick).
func TestFleetBoardPauseBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		board := &scriptBoard{}
		lim := ratelimit.NewLimiter(0)
		f := ratelimit.NewFleet(ratelimit.FleetConfig{Replica: "a", Budget: 300, Limiter: lim, Board: board})
		f.Rebalance(1, 6, 6)
		runFleet(t, f)
		time.Sleep(time.Second) // past the late start
		day := time.Now().Add(24 * time.Hour).UnixMilli()
		ignored := []ratelimit.Record{
			{Replica: "future", Generation: 1, At: time.Now().Add(time.Hour).UnixMilli(), PauseUntil: day},
			{Replica: "old", Generation: 1, At: time.Now().Add(-16 * time.Minute).UnixMilli(), PauseUntil: day},
			{Replica: "gone", Generation: 0, At: time.Now().UnixMilli(), PauseUntil: day},
		}
		board.mu.Lock()
		board.peers = ignored
		board.mu.Unlock()
		time.Sleep(2 * time.Second)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		err := lim.Wait(ctx)
		cancel()
		if err != nil {
			t.Fatalf("records from the future, 16 minutes old or of another generation paused the replica: %v", err)
		}

		at := time.Now()
		board.mu.Lock()
		board.peers = append(ignored, ratelimit.Record{Replica: "x", Generation: 1, At: at.UnixMilli(), PauseUntil: day})
		n := len(board.published)
		board.mu.Unlock()
		time.Sleep(10 * time.Second)
		board.mu.Lock()
		steps := len(board.published) - n
		for _, r := range board.published[n:] {
			if r.PauseUntil != 0 {
				board.mu.Unlock()
				t.Fatalf("republished a pause read from the board: %+v", r)
			}
		}
		board.mu.Unlock()
		if steps > 11 {
			t.Fatalf("%d records in 10 s: a pause read from the board woke the loop", steps)
		}
		if p, _ := lim.Paused(); !p.IsZero() {
			t.Fatalf("a pause read from the board became this replica's own (until %v)", p)
		}
		ctx, cancel = context.WithTimeout(t.Context(), 20*time.Minute)
		defer cancel()
		if err := lim.Wait(ctx); err != nil {
			t.Fatalf("still paused 20 minutes after a record asked for a day: %v", err)
		}
		if got, want := time.Since(at), 15*time.Minute; got > want+time.Millisecond || got < want-2*time.Second {
			t.Fatalf("the first permit came %v after the record, want its time + 15 min", got)
		}
	})
}

// TestFleetRejectsUnsoundLoans: a loan counts only from a record written
// no later than Margin ahead of this replica's clock, lending no more than
// its share (itself no more than the budget), and only until the record's
// At + Lease − Margin, whatever its Until says.
func TestFleetRejectsUnsoundLoans(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		board := &scriptBoard{}
		lim := ratelimit.NewLimiter(0)
		f := ratelimit.NewFleet(ratelimit.FleetConfig{Replica: "a", Budget: 300, Limiter: lim, Board: board})
		share := f.Rebalance(1, 2, 6)
		runFleet(t, f)
		now := time.Now()
		hour := now.Add(time.Hour).UnixMilli()
		board.mu.Lock()
		board.peers = []ratelimit.Record{
			{Replica: "over", Generation: 1, Share: 50, Lent: map[string]float64{"a": 200}, Until: hour, At: now.UnixMilli()},
			{Replica: "ahead", Generation: 1, Share: share, Lent: map[string]float64{"a": 10}, Until: hour + 4000, At: hour},
			{Replica: "huge", Generation: 1, Share: 400, Lent: map[string]float64{"a": 5}, Until: hour, At: now.UnixMilli()},
		}
		board.mu.Unlock()
		time.Sleep(2500 * time.Millisecond)
		if got := lim.Rate(); got != share {
			t.Fatalf("rate %v with only unsound loans on the board, want its share %v", got, share)
		}
		now = time.Now()
		board.mu.Lock()
		board.peers = append(board.peers, ratelimit.Record{Replica: "long", Generation: 1, Share: share,
			Lent: map[string]float64{"a": 10}, Until: now.Add(time.Hour).UnixMilli(), At: now.UnixMilli()})
		board.mu.Unlock()
		time.Sleep(1500 * time.Millisecond)
		if got := lim.Rate(); math.Abs(got-(share+10)) > 1e-9 {
			t.Fatalf("rate %v with a sound loan of 10, want %v", got, share+10)
		}
		time.Sleep(2 * time.Second) // the record is 3.5 s old: past At + Lease − Margin
		if got := lim.Rate(); got != share {
			t.Fatalf("rate %v 3.5 s after a record lending until an hour later, want its share %v again", got, share)
		}
	})
}

// TestFleetCommitmentsMonotonic: a lender whose wall clock steps an hour
// forward keeps its own rate lowered by what it lent until Lease + Margin
// after its last record, on the monotonic clock.
func TestFleetCommitmentsMonotonic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		board := &scriptBoard{}
		lim := ratelimit.NewLimiter(0)
		var offset atomic.Int64
		f := ratelimit.NewFleet(ratelimit.FleetConfig{Replica: "a", Budget: 300, Limiter: lim, Board: board,
			Clock: func() time.Time { return time.Now().Add(time.Duration(offset.Load())).Round(0) }})
		share := f.Rebalance(1, 2, 6)
		runFleet(t, f)
		board.set(ratelimit.Record{Replica: "b", Generation: 1, Share: share, Demand: 300, Until: time.Now().Add(4 * time.Second).UnixMilli()})
		time.Sleep(3 * time.Second)
		synctest.Wait()
		lowered := lim.RPM()
		if lowered > share/2 {
			t.Fatalf("own rate %v while lending to a busy peer, share %v", lowered, share)
		}
		offset.Store(int64(time.Hour))
		for i := range 4 { // Lease: 4 s; the last record lending was published under a second ago
			time.Sleep(time.Second)
			synctest.Wait()
			if got := lim.RPM(); got > lowered+1e-9 {
				t.Fatalf("%d s after its clock stepped an hour forward, own rate %v, over the %v it kept while lending", i+1, got, lowered)
			}
		}
		time.Sleep(3 * time.Second)
		if got := lim.RPM(); got != share {
			t.Fatalf("own rate %v once its loans ended, want its share %v", got, share)
		}
	})
}

// failingBoard is a scriptBoard whose Publish fails while fail is set.
type failingBoard struct {
	scriptBoard
	fail atomic.Bool
}

func (b *failingBoard) Publish(ctx context.Context, r ratelimit.Record) error {
	if b.fail.Load() {
		return context.DeadlineExceeded
	}
	return b.scriptBoard.Publish(ctx, r)
}

// TestFleetUnwrittenLendsNothingNew: a replica that can read the board but
// not write it lends nothing new (nobody could see it): once what it lent
// ends, it is back at its share, though a busy peer still asks.
func TestFleetUnwrittenLendsNothingNew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		board := &failingBoard{}
		lim := ratelimit.NewLimiter(0)
		f := ratelimit.NewFleet(ratelimit.FleetConfig{Replica: "a", Budget: 300, Limiter: lim, Board: board})
		share := f.Rebalance(1, 2, 6)
		runFleet(t, f)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		defer func() { cancel(); <-done }()
		go func() { // the busy peer publishes every second
			defer close(done)
			for ctx.Err() == nil {
				board.set(ratelimit.Record{Replica: "b", Generation: 1, Share: share, Demand: 300, Until: time.Now().Add(4 * time.Second).UnixMilli()})
				time.Sleep(time.Second)
			}
		}()
		time.Sleep(3 * time.Second)
		if got := lim.RPM(); got > share/2 {
			t.Fatalf("own rate %v while lending to a busy peer, share %v", got, share)
		}
		board.fail.Store(true)
		time.Sleep(7 * time.Second) // Lease + Margin + a Tick or two
		if got := lim.RPM(); got != share {
			t.Fatalf("unable to publish for 7 s, own rate %v: still lending, want its share %v", got, share)
		}
		board.fail.Store(false)
		time.Sleep(3 * time.Second)
		if got := lim.RPM(); got > share/2 {
			t.Fatalf("publishing again, own rate %v: lends nothing, share %v", got, share)
		}
	})
}
