package consumer_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/harness/kafkaadmin"
	"github.com/cohortsync/cohortsync-worker/internal/harness/localkafka"
)

// The isolation scenario of TestParkingIsolatesABlockedWorkspace on a real
// broker (internal/harness/localkafka, not kfake): the premises it rests on
// are Kafka's — an OffsetCommit with metadata and the generation accepted in
// the middle of a generation (the write-ahead commit of a detour), the
// metadata read back at the next join, a group subscribed to the input and
// the parking topic, the parking topic created by parkio.Ensure, offsets
// returned by Produce. Skipped with -short (a JVM start).
func TestParkingOnARealBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Kafka broker")
	}
	isolationScenario(t, newBrokerHarness(t))
}

// newBrokerHarness is newHarness on a local Kafka broker: the same topics,
// producer and recorder; no kfake controls (cluster is nil).
func newBrokerHarness(t *testing.T) *harness {
	t.Helper()
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := localkafka.Start(ctx, localkafka.Options{Partitions: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("local broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	h := &harness{t: t, brokers: []string{b.Addr()}, tr: &kafka.Transport{}, group: "g-" + t.Name(),
		log: log, uidPart: map[string]int{}}
	h.rec = &recorder{h: h, inflight: map[int]map[string]int{}}
	h.admin = kafkaadmin.New(h.brokers, h.tr)
	if err := h.admin.CreateTopics(ctx, partitions, topic); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.CreateTopics(ctx, dlqParts, dlqTopic); err != nil {
		t.Fatal(err)
	}
	h.prod = &kafka.Writer{Addr: kafka.TCP(h.brokers...), Topic: topic, Balancer: byHeader{}, RequiredAcks: kafka.RequireAll,
		BatchSize: 10000, BatchBytes: 64 << 20, BatchTimeout: time.Millisecond, Transport: h.tr}
	t.Cleanup(func() {
		_ = h.prod.Close()
		h.tr.CloseIdleConnections()
	})
	return h
}
