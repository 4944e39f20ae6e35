package metrics

import "github.com/prometheus/client_golang/prometheus"

// Parking holds the metrics of isolation by parking (DESIGN.md invariant 8;
// the consumer's parking.go, parked.go, replan.go).
type Parking struct {
	// ParkedChanges{workspace}: records this replica parked (acknowledged
	// by the parking topic) minus the parked records it handed on to the
	// batcher from a parking partition. Summed over the replicas it is the
	// records parked and not yet delivered; a parked record handed on twice
	// (a replan or a rebalance re-reads it) is subtracted twice, so one
	// replica's series may go below zero.
	ParkedChanges *prometheus.GaugeVec
	// ParkedOldestAge{workspace}: how long ago the oldest parked record of
	// a workspace that this replica holds (or is resuming) in its parking
	// partitions was written, as far as its readers have seen (a
	// predecessor's hold counts once the record is read again).
	ParkedOldestAge *prometheus.GaugeVec
	ParkingWrites   prometheus.Counter     // records written to the parking topic
	Replans         *prometheus.CounterVec // reason: blocked, blocked_changed, undetour
	ParkingFull     *prometheus.CounterVec // side: source (ErrFull at StartDetour), parking (Hold refused)
}

// ReplanReasons are the values of the replans_total reason label.
var ReplanReasons = []string{"blocked", "blocked_changed", "undetour"}

func newParking() Parking {
	p := Parking{
		ParkedChanges: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "parked_changes",
			Help: "Records this replica parked minus the parked records it delivered, by workspace (sum over replicas: parked and not yet delivered)."}, []string{"workspace"}),
		ParkedOldestAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "parked_oldest_age_seconds",
			Help: "Age of the oldest parked record of a workspace held or resuming in this replica's parking partitions, by workspace."}, []string{"workspace"}),
		ParkingWrites: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "parking_writes_total",
			Help: "Records written to the parking topic and acknowledged."}),
		Replans: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "replans_total",
			Help: "Replans within a generation (every loop stopped, the batcher revoked, detours and holds redone), by reason."}, []string{"reason"}),
		ParkingFull: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "parking_metadata_full_total",
			Help: "A blocked workspace that did not fit in a partition's commit metadata: not detoured (side=source) or not held (side=parking, the main cursor stops). Alert on any."}, []string{"side"}),
	}
	for _, r := range ReplanReasons {
		p.Replans.WithLabelValues(r)
	}
	for _, s := range []string{"source", "parking"} {
		p.ParkingFull.WithLabelValues(s)
	}
	return p
}

func (p Parking) collectors() []prometheus.Collector {
	return []prometheus.Collector{p.ParkedChanges, p.ParkedOldestAge, p.ParkingWrites, p.Replans, p.ParkingFull}
}
