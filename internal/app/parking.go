package app

import (
	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/consumer"
	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
)

// blockedView is the sink's per-workspace blocked view (issue 21 item 4),
// which the consumer parks by.
type blockedView interface {
	Blocked(workspace string) bool
	BlockedChanged() <-chan struct{}
}

// withParking turns on isolation by parking (DESIGN.md invariant 8, "The
// plumbing") in the consumer's configuration cc: with a registry of
// workspaces (MOENGAGE_WORKSPACES_DIR) and a sink that reports which
// workspace is blocked. The parking topic is the group's
// (parkio.TopicName); the consumer's first generation creates it when
// missing, with PARKING_TOPIC_PARTITIONS, PARKING_TOPIC_REPLICATION (capped
// at the broker count) and PARKING_TOPIC_RETENTION. Without a registry nothing is parked, as
// before: a single workspace has no other to keep flowing.
func (w *worker) withParking(cc *consumer.Config, dialer *kafka.Dialer) {
	bv, ok := any(w.client).(blockedView)
	if w.ws == nil || w.ws.reg == nil || !ok {
		return
	}
	cfg := w.cfg
	io := parkio.Config{Brokers: cfg.KafkaBrokers, Dialer: dialer, Topic: parkio.TopicName(cfg.KafkaGroupID),
		Partitions: cfg.ParkingTopicPartitions, Replication: cfg.ParkingTopicReplication,
		Retention: cfg.ParkingTopicRetention, Logger: w.log.With("component", "parking")}
	if w.transport != nil {
		io.Transport = w.transport
	}
	cc.Parking = &consumer.Parking{Topic: io.Topic, IO: &io,
		HoldOf: w.client.CohortHold, Hold: w.client.UnknownHold, // not-before and hold= (sink/parkhold.go)
		Revoke: w.batcher.Revoke} // a replan does not wait for the unknown outcomes to settle: the sink holds them
	cc.Blocked, cc.BlockedChanged = bv.Blocked, bv.BlockedChanged
}
