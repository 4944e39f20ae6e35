package app

import (
	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// KafkaSecurity builds the kafka-go dialer (consumer groups and readers) and
// transport (metadata, produce and offset requests) from the TLS and SASL
// settings of cfg, exactly as the worker does. Tools that talk to the same
// cluster (cohortsync-worker dlq replay) use it so that they connect the
// same way.
func KafkaSecurity(cfg config.Config) (*kafka.Dialer, *kafka.Transport, error) {
	return kafkaSecurity(cfg)
}
