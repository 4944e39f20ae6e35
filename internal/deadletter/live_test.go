package deadletter

import (
	"context"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// TestFullDeadLetterQueueIsNotAWedge: a decode loop that waits for room in
// the dead-letter queue (the dead-letter writes fail: the brokers are down)
// waits on the outside: liveness must not call it wedged, however long it
// waits (issue 19 §1). It is busy again once the letter is queued.
func TestFullDeadLetterQueueIsNotAWedge(t *testing.T) {
	m := metrics.New(nil)
	d := New(nil, "dlq", nil, testLog(t), m) // never Run: nothing drains the queue
	for range cap(d.queue) {
		if err := d.enqueue(t.Context(), &letter{}); err != nil {
			t.Fatal(err)
		}
	}
	hb := m.Loops.Start("decode in/0")
	defer hb.Stop()
	hb.Busy()
	ctx, cancel := context.WithCancel(metrics.WithLoop(t.Context(), hb))
	done := make(chan error, 1)
	go func() { done <- d.enqueue(ctx, &letter{}) }()
	const bound = 20 * time.Millisecond
	time.Sleep(10 * bound)
	if w := m.Loops.Wedged(bound); len(w) != 0 {
		t.Fatalf("a loop waiting for the dead-letter queue is called wedged: %v", w)
	}
	<-d.queue // room: the letter goes in
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cancel()
	time.Sleep(2 * bound)
	if w := m.Loops.Wedged(bound); len(w) != 1 {
		t.Fatalf("after the wait the loop is busy again (and now past the bound): wedged = %v, want it", w)
	}
}
