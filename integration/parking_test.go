package integration

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
)

// TestParkingTopicRealBroker: on the real broker, parkio.Ensure creates the
// parking topic with the configured partitions, retention and delete
// cleanup, replication capped at the one broker (3 would be refused),
// min.insync.replicas min(2, replication) and max.message.bytes
// parkio.MaxMessageBytes (DescribeConfigs shows them); a second Ensure
// finds it. Write returns positions at which the records read back are the
// ones written (Produce's BaseOffset is the first record's offset), a record
// as large as the broker's default message.max.bytes allows in a source
// topic is parked (the headers fit in the margin), and MarkAndEnds returns
// ends one past a marker of the generation in every partition.
func TestParkingTopicRealBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topicSeq++
	cfg := parkio.Config{Brokers: []string{brokerAddr}, Topic: fmt.Sprintf("it-parking-%d-%d.parked", topicSeq, time.Now().UnixNano()%1e6),
		Partitions: 3, Replication: 3, Retention: 2 * time.Hour}
	for i := range 2 {
		n, err := parkio.Ensure(ctx, cfg)
		if err != nil || n != 3 {
			t.Fatalf("Ensure #%d = %d, %v; want 3", i+1, n, err)
		}
	}
	wantConfigs(ctx, t, cfg.Topic, map[string]string{
		"cleanup.policy": "delete", "retention.ms": "7200000", "min.insync.replicas": "1",
		"max.message.bytes": strconv.Itoa(parkio.MaxMessageBytes),
	})
	md, err := (&kafka.Client{Addr: kafka.TCP(brokerAddr)}).Metadata(ctx, &kafka.MetadataRequest{Topics: []string{cfg.Topic}})
	if err != nil || len(md.Topics) != 1 || len(md.Topics[0].Partitions) != 3 {
		t.Fatalf("metadata of %s: %+v, %v", cfg.Topic, md, err)
	}
	if r := len(md.Topics[0].Partitions[0].Replicas); r != 1 {
		t.Fatalf("replication %d, want 1 (capped at the broker count)", r)
	}

	w := parkio.NewWriter(cfg, 3)
	defer w.Close()
	// The largest record a default broker takes in a source topic: a batch
	// of one record is about 70 bytes more than its key and value.
	big := bytes.Repeat([]byte("x"), 1048588-100)
	var recs []parkio.Record
	for i := range 30 {
		recs = append(recs, parkio.Record{Workspace: fmt.Sprintf("ws%d", i%4), Cohort: fmt.Sprintf("c%d", i%5),
			Key: []byte(strconv.Itoa(i)), Value: []byte(fmt.Sprintf(`{"i":%d}`, i)), SourceTopic: "in",
			SourcePartition: i % 2, SourceOffset: int64(100 + i), NotBefore: time.Duration(i) * time.Millisecond, Generation: 4})
	}
	recs[7].Value = big
	pos, err := w.Write(ctx, recs)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := w.MarkAndEnds(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	logs := make([][]kafka.Message, 3)
	for k, end := range ends {
		logs[k] = readPartition(ctx, t, cfg.Topic, k, end)
		m, err := parkio.Decode(logs[k][end-1])
		if err != nil || !m.Marker || m.Generation != 5 {
			t.Fatalf("partition %d: the record before the end %d is %+v, %v; want the marker of generation 5", k, end, m, err)
		}
	}
	for i, r := range recs {
		p, err := parkio.Decode(logs[pos[i].Partition][pos[i].Offset])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p.Key, r.Key) || !bytes.Equal(p.Value, r.Value) || p.Workspace != r.Workspace ||
			p.Cohort != r.Cohort || p.SourceOffset != r.SourceOffset || p.Generation != 4 || p.NotBefore != r.NotBefore {
			t.Fatalf("record %d at %v: read back %s/%s source %d gen %d, want %s", i, pos[i], p.Workspace, p.Key, p.SourceOffset, p.Generation, r.Key)
		}
	}
}

// wantConfigs fails unless DescribeConfigs of topic shows want.
func wantConfigs(ctx context.Context, t *testing.T, topic string, want map[string]string) {
	t.Helper()
	var names []string
	for n := range want {
		names = append(names, n)
	}
	res, err := (&kafka.Client{Addr: kafka.TCP(brokerAddr)}).DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{
		Resources: []kafka.DescribeConfigRequestResource{{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: names}}})
	if err != nil || len(res.Resources) != 1 || res.Resources[0].Error != nil {
		t.Fatalf("describe configs of %s: %+v, %v", topic, res, err)
	}
	got := map[string]string{}
	for _, e := range res.Resources[0].ConfigEntries {
		got[e.ConfigName] = e.ConfigValue
	}
	for n, v := range want {
		if got[n] != v {
			t.Errorf("%s: %s = %q, want %q", topic, n, got[n], v)
		}
	}
}

// readPartition reads partition k of topic from its start up to end.
func readPartition(ctx context.Context, t *testing.T, topic string, k int, end int64) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{brokerAddr}, Topic: topic, Partition: k,
		MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	var out []kafka.Message
	for int64(len(out)) < end {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %s/%d at %d: %v", topic, k, len(out), err)
		}
		if m.Offset != int64(len(out)) {
			t.Fatalf("read %s/%d: offset %d after %d records", topic, k, m.Offset, len(out))
		}
		out = append(out, m)
	}
	return out
}
