package consumer_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// TestParkingThroughput measures, on kfake, how long one replica takes to
// produce and park n records of a blocked workspace (source commit at the
// end) and to
// deliver them once it is unblocked (parking commits at the end). Run with
// PARKING_BENCH=<n>, e.g.
//
//	PARKING_BENCH=20000 go test -count=1 -run TestParkingThroughput -v ./consumer/
func TestParkingThroughput(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PARKING_BENCH"))
	if n <= 0 {
		t.Skip("PARKING_BENCH not set")
	}
	h := newHarness(t)
	bl := newBlockedSet("WS_B")
	o := h.parkingOpts(bl, "WS_A", "WS_B")
	o.maxPending = 1 << 20
	a := h.startReplica("a", o)
	a.waitAssigned(t, partitions)
	recs := make([]rec, 0, n)
	for i := range n {
		recs = append(recs, wsRecord(change{i % partitions, event.Add, fmt.Sprint("c", i%50), fmt.Sprint("u", i)}, "WS_B"))
	}
	start := time.Now() // parking overlaps the production: the time counts both
	h.produce(recs...)
	h.waitCommittedToEnd(5 * time.Minute)
	parkTook := time.Since(start)
	bl.set("WS_B", false)
	a.sink.setHold(func(wire.Request) bool { return false })
	start = time.Now()
	h.waitParkingSettled(5 * time.Minute)
	deliverTook := time.Since(start)
	t.Logf("%d records: produced and parked in %v (%.0f/s), delivered in %v (%.0f/s)", n, parkTook, float64(n)/parkTook.Seconds(),
		deliverTook, float64(n)/deliverTook.Seconds())
}
