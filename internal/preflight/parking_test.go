package preflight

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestKafkaParking: kafka.parking reports a missing parking topic with what
// the worker will create (replication capped at the one broker), validated
// by the controller and not created by the check although the cluster
// auto-creates topics; kafka.acls then asks for CREATE on it. An existing
// topic is reported with its own partitions and configs, and kafka.acls
// asks DESCRIBE, READ and WRITE on it; a compacted one, or one whose
// max.message.bytes a large input record plus headers exceeds, is a
// warning. Without a registry (one workspace, nothing parked) the line is
// skipped and kafka.acls asks nothing of the topic.
func TestKafkaParking(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "in"), kfake.SeedTopics(1, "in.dlq"), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := kafkaConfig(t, c.ListenAddrs(), "in", "in.dlq") // group g: the parking topic g.parked
	res := checkKafka(t.Context(), cfg, 5*time.Second)
	want(t, res, "kafka.parking", Skip, "without MOENGAGE_WORKSPACES_DIR")
	if r := find(t, res, "kafka.acls"); strings.Contains(r.Detail, "parked") {
		t.Errorf("kafka.acls names the parking topic without a registry: %s", r.Detail)
	}
	cfg.MoEngageWorkspacesDir = t.TempDir() // checkKafka reads no registry: only that there is one
	for range 2 {
		res := checkKafka(t.Context(), cfg, 5*time.Second)
		want(t, res, "kafka.parking", OK, "g.parked does not exist yet; the worker creates it with 12 partitions (PARKING_TOPIC_PARTITIONS), "+
			"replication factor 1 (PARKING_TOPIC_REPLICATION 3, capped at the 1 broker), retention 168h (PARKING_TOPIC_RETENTION), cleanup.policy delete, "+
			"min.insync.replicas 1, max.message.bytes 1114112 (the controller validated this creation)")
		want(t, res, "kafka.acls", OK, "CREATE on topic g.parked", "not checked (missing, or not even describable: see its line): READ on topic g.parked, WRITE on topic g.parked")
	}
	if n := partitions(t, c.ListenAddrs(), "g.parked"); n != 0 {
		t.Fatalf("the check created the parking topic (%d partitions)", n)
	}

	create(t, c.ListenAddrs(), kafka.TopicConfig{Topic: "g.parked", NumPartitions: 4, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: "259200000"}, {ConfigName: "max.message.bytes", ConfigValue: "1114112"}}})
	res = checkKafka(t.Context(), cfg, 5*time.Second)
	want(t, res, "kafka.parking", OK, "g.parked exists: 4 partitions, replication factor 1, every partition has a leader "+
		"(PARKING_TOPIC_PARTITIONS 12 applies only to a topic the worker creates); retention 72h, cleanup.policy delete")
	want(t, res, "kafka.acls", OK, "DESCRIBE on topic g.parked, READ on topic g.parked, WRITE on topic g.parked")

	create(t, c.ListenAddrs(), kafka.TopicConfig{Topic: "h.parked", NumPartitions: 2, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}}})
	cfg.KafkaGroupID = "h"
	res = checkKafka(t.Context(), cfg, 5*time.Second)
	want(t, res, "kafka.parking", Warn, "h.parked exists: 2 partitions", "compaction deletes parked changes",
		"max.message.bytes 1048588 is below the 1048588 of in plus the parking headers")
}

func want(t *testing.T, res []Result, check string, st Status, parts ...string) {
	t.Helper()
	r := find(t, res, check)
	if r.Status != st {
		t.Errorf("%s: status %s, want %s: %s", check, r.Status, st, r.Detail)
	}
	for _, p := range parts {
		if !strings.Contains(r.Detail, p) {
			t.Errorf("%s: %q missing in %s", check, p, r.Detail)
		}
	}
}

// partitions reads topic's partition count from all topics' metadata (0:
// no such topic), never creating it.
func partitions(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}}
	md, err := cl.Metadata(t.Context(), &kafka.MetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range md.Topics {
		if tp.Name == topic && tp.Error == nil {
			return len(tp.Partitions)
		}
	}
	return 0
}

func create(t *testing.T, brokers []string, tc kafka.TopicConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
	if err == nil {
		err = res.Errors[tc.Topic]
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestTransportValidateOnlyCreateWaits is the premise of validateCreate's
// own connection: kafka-go's Transport, after a successful CreateTopics,
// waits for the topic to show in its metadata, which a validate-only one
// never does, so through the Transport the check would wait out its whole
// timeout (and then report success). If kafka-go stops waiting, this fails
// and the Transport will do.
func TestTransportValidateOnlyCreateWaits(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...), Transport: &kafka.Transport{}}
	start := time.Now()
	_, err = cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{ValidateOnly: true,
		Topics: []kafka.TopicConfig{{Topic: "v.parked", NumPartitions: 1, ReplicationFactor: 1}}})
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("a validate-only CreateTopics through kafka-go's Transport returned in %v (%v): validateCreate may use it", d, err)
	}
	if partitions(t, c.ListenAddrs(), "v.parked") != 0 {
		t.Fatal("the validate-only CreateTopics created the topic")
	}
}
