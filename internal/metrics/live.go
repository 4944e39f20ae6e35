package metrics

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// LiveBound is how long one of the process's own loops may be busy (not
// waiting on the outside) before /healthz calls the process wedged.
const LiveBound = 2 * time.Minute

// Loops is the progress heartbeat behind /healthz: every loop of the
// process's own (the batcher's, each partition's decode loop, each
// generation's commit loop) registers a Loop, and stamps it as it goes
// around (Busy) and before it waits on something outside its own work
// (Idle): the next record from the broker, room in the batcher while the
// API is slow, a dead-letter write, a network call, the next tick. A loop
// that is busy for longer than a bound is wedged (a deadlock, a livelock, a
// call that never returns); a loop that waits is not, however long it waits,
// so that a broker or API outage never looks like a wedge.
//
// A nil *Loops, and the nil *Loop it returns, do nothing.
type Loops struct {
	mu    sync.Mutex
	loops map[*Loop]struct{}
	base  time.Time // stamps are monotonic offsets from base
}

// Loop is one running loop's heartbeat.
type Loop struct {
	name      string
	base      time.Time
	busySince atomic.Int64 // ns since base + 1; 0: waiting (idle)
	owner     *Loops
}

func newLoops() *Loops {
	return &Loops{loops: make(map[*Loop]struct{}), base: time.Now()}
}

// Start registers a loop named name (a partition's loop: "decode in/0"),
// idle. Stop it when the loop returns.
func (ls *Loops) Start(name string) *Loop {
	if ls == nil {
		return nil
	}
	l := &Loop{name: name, base: ls.base, owner: ls}
	ls.mu.Lock()
	ls.loops[l] = struct{}{}
	ls.mu.Unlock()
	return l
}

// Busy stamps the loop going around: it is working from now on, and must
// be Idle (or Busy again) within the bound.
func (l *Loop) Busy() {
	if l != nil {
		l.busySince.Store(int64(time.Since(l.base)) + 1)
	}
}

// Idle says the loop waits on something outside its own work, for as long
// as that takes.
func (l *Loop) Idle() {
	if l != nil {
		l.busySince.Store(0)
	}
}

// Stop unregisters the loop.
func (l *Loop) Stop() {
	if l == nil {
		return
	}
	l.owner.mu.Lock()
	delete(l.owner.loops, l)
	l.owner.mu.Unlock()
}

// Wedged returns, sorted, the names of the loops busy for longer than
// bound, with how long.
func (ls *Loops) Wedged(bound time.Duration) []string {
	if ls == nil {
		return nil
	}
	now := int64(time.Since(ls.base)) + 1
	var out []string
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for l := range ls.loops {
		if s := l.busySince.Load(); s != 0 && time.Duration(now-s) > bound {
			out = append(out, l.name+" busy for "+time.Duration(now-s).Round(time.Millisecond).String())
		}
	}
	slices.Sort(out)
	return out
}

type loopKey struct{}

// WithLoop returns ctx carrying l, for the calls of l's loop that may wait
// on the outside deep down (a full dead-letter queue) to mark it Idle.
func WithLoop(ctx context.Context, l *Loop) context.Context {
	return context.WithValue(ctx, loopKey{}, l)
}

// LoopFrom returns the Loop WithLoop put in ctx, or nil.
func LoopFrom(ctx context.Context) *Loop {
	l, _ := ctx.Value(loopKey{}).(*Loop)
	return l
}
