package consumer_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// lagSum is the sum of a gauge vector's series and their count.
func lagSum(v *prometheus.GaugeVec) (sum float64, series int) {
	ch := make(chan prometheus.Metric, 64)
	go func() { v.Collect(ch); close(ch) }()
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err == nil && pb.Gauge != nil {
			sum += pb.Gauge.GetValue()
			series++
		}
	}
	return sum, series
}

// cohortsync_consumer_lag comes from the brokers' high watermarks on a
// ticker: it grows while the API accepts nothing (nothing is committed, and
// reading may stall), falls to 0 once everything is committed, and its
// series are deleted when the partitions are revoked.
func TestLagFromHighWatermark(t *testing.T) {
	h := newHarness(t)
	a := h.startReplica("a", replicaOpts{hold: holdAll, lagInterval: 100 * time.Millisecond}) // an API outage
	a.waitAssigned(t, partitions)

	const n = 400
	cs := make([]change, 0, n)
	for i := range n {
		p := i % partitions
		cs = append(cs, change{p, event.Add, fmt.Sprintf("c%d", p), fmt.Sprintf("p%d-u%d", p, i)})
	}
	h.produce(recsOf(cs)...)
	waitFor(t, 20*time.Second, "lag = every record produced, with nothing committed", func() bool {
		sum, series := lagSum(a.m.Lag)
		return sum == n && series == partitions
	})
	// More records while the outage lasts: the lag follows.
	h.produce(recsOf(cs[:100])...)
	waitFor(t, 20*time.Second, "lag to follow the producers during the outage", func() bool {
		sum, _ := lagSum(a.m.Lag)
		return sum == n+100
	})

	a.sink.setHold(nil) // the API is back
	h.waitCommittedToEnd(30 * time.Second)
	waitFor(t, 20*time.Second, "lag 0 once everything is committed", func() bool {
		sum, series := lagSum(a.m.Lag)
		return sum == 0 && series == partitions
	})

	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if c := testutil.CollectAndCount(a.m.Lag); c != 0 {
		t.Fatalf("%d lag series left after the partitions were revoked", c)
	}
	if c := testutil.CollectAndCount(a.m.CommittedOffset); c != 0 {
		t.Fatalf("%d committed-offset series left after the partitions were revoked", c)
	}
}
