package preflight

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

func kafkaConfig(t *testing.T, brokers []string, topic, dlq string) config.Config {
	t.Helper()
	c := config.Default()
	c.KafkaBrokers = brokers
	c.KafkaTopics = []string{topic}
	c.KafkaDLQTopic = dlq
	c.KafkaGroupID = "g"
	c.MoEngageDC = "01"
	c.MoEngageWorkspaceID = testWorkspace
	c.MoEngageDataAPIKey = config.NewSecret(testKey)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKafkaChecks runs the Kafka checks against kfake, an in-process Kafka:
// present topics pass, a missing one fails its own line, and asking about
// it does not create it although the cluster auto-creates topics.
func TestKafkaChecks(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "in"), kfake.SeedTopics(1, "in.dlq"), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	res := checkKafka(t.Context(), kafkaConfig(t, c.ListenAddrs(), "in", "in.dlq"), 5*time.Second)
	for _, want := range []struct{ check, detail string }{
		{"kafka.brokers", "connected with plaintext, no SASL to 1 of 1 bootstrap brokers"},
		{"kafka.topic", "in exists: 3 partitions"},
		{"kafka.dlq", "in.dlq exists: 1 partition,"},
		{"kafka.group", "g does not exist yet"},
		{"kafka.acls", "granted: READ on topic in, READ on group g, WRITE on topic in.dlq"},
	} {
		if r := find(t, res, want.check); r.Status != OK || !strings.Contains(r.Detail, want.detail) {
			t.Errorf("%s: %s %q, want ok with %q", want.check, r.Status, r.Detail, want.detail)
		}
	}

	res = checkKafka(t.Context(), kafkaConfig(t, c.ListenAddrs(), "in", "missing.dlq"), 5*time.Second)
	if r := find(t, res, "kafka.dlq"); r.Status != Fail || !strings.Contains(r.Detail, "missing.dlq (KAFKA_DLQ_TOPIC) does not exist") {
		t.Errorf("kafka.dlq: %+v", r)
	}
	res = checkKafka(t.Context(), kafkaConfig(t, c.ListenAddrs(), "in", "missing.dlq"), 5*time.Second)
	if r := find(t, res, "kafka.dlq"); r.Status != Fail {
		t.Errorf("the first check created the topic: %+v", r)
	}
}

func TestKafkaUnreachable(t *testing.T) {
	res := checkKafka(t.Context(), kafkaConfig(t, []string{"127.0.0.1:1"}, "in", "in.dlq"), 2*time.Second)
	if r := find(t, res, "kafka.brokers"); r.Status != Fail || !strings.Contains(r.Detail, "127.0.0.1:1: dial tcp 127.0.0.1:1") {
		t.Errorf("kafka.brokers: %+v", r)
	}
	if r := find(t, res, "kafka.acls"); r.Status != Skip {
		t.Errorf("kafka.acls: %+v", r)
	}
}
