package app

import (
	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/consumer"
	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
)

// withParking turns on isolation by parking (DESIGN.md invariant 8, "The
// plumbing") in the consumer's configuration cc: with a registry of
// workspaces (MOENGAGE_WORKSPACES_DIR), by the sink's blocked view. The
// parking topic is the group's (parkio.TopicName); the consumer's first
// generation creates it when missing, with PARKING_TOPIC_PARTITIONS,
// PARKING_TOPIC_REPLICATION (capped at the broker count) and
// PARKING_TOPIC_RETENTION. Without a registry nothing is parked, as before:
// a single workspace has no other to keep flowing.
func (w *worker) withParking(cc *consumer.Config, dialer *kafka.Dialer) {
	if w.ws == nil || w.ws.reg == nil {
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
		HoldOf: w.client.CohortHold, HoldCohort: w.client.HoldCohort, Hold: w.client.UnknownHold, // not-before and hold= (sink/parkhold.go)
		Revoke: w.batcher.Revoke} // a replan does not wait for the unknown outcomes to settle: the sink holds them
	cc.Blocked, cc.BlockedChanged = w.client.Blocked, w.client.BlockedChanged
}
