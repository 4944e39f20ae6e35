package consumer

import (
	"log/slog"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/kafkaconn"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/segmentio/kafka-go"
)

// The dead-letter writer (letter format, headers, DLQ) is internal/deadletter;
// the consumer hands it the records it cannot decode (DLQ.Invalid) and tells
// it where the members the API rejected were read (Locate).

// Locate is the deadletter.Locator of the consumer's Acks: the record an Ack
// stands for (topic, partition, offset, and its key, rebuilt from h/uid
// where it was not kept). ok is false for an Ack of another kind.
func Locate(ack batcher.Ack, h wire.Header, uid string) (deadletter.Source, bool) {
	a, offset, key, ok := source(ack, h, uid)
	if !ok {
		return deadletter.Source{}, false
	}
	return deadletter.Source{Topic: a.t.topic, Partition: a.t.partition, Offset: offset, Key: key}, true
}

// kafkaLogger bridges kafka-go's Printf logger to slog.
func kafkaLogger(log *slog.Logger, level slog.Level) kafka.Logger {
	return kafkaconn.Logger(log, level)
}
