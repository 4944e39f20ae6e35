package kafkaadmin_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cohortsync/cohortsync-worker/internal/harness/kafkaadmin"
)

const (
	topic      = "events"
	group      = "g"
	partitions = 3
	records    = 30
	any        = -2 // any partition
)

// cluster starts a kfake cluster holding records records in topic, spread
// over its partitions, with nothing committed for group.
func cluster(t *testing.T) (*kfake.Cluster, *kafkaadmin.Admin) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	tr := &kafka.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	w := &kafka.Writer{Addr: kafka.TCP(c.ListenAddrs()...), Topic: topic, Balancer: &kafka.RoundRobin{}, Transport: tr,
		BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	msgs := make([]kafka.Message, records)
	for i := range msgs {
		msgs[i] = kafka.Message{Value: []byte(strconv.Itoa(i))}
	}
	if err := w.WriteMessages(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	return c, kafkaadmin.New(c.ListenAddrs(), tr)
}

// failListOffsets makes the cluster answer ListOffsets for the partitions
// in bad with code, and the others as usual. kafka-go asks one partition a
// request.
func failListOffsets(c *kfake.Cluster, code int16, bad ...int32) {
	c.ControlKey(int16(kmsg.ListOffsets), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := r.(*kmsg.ListOffsetsRequest)
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		hit := false
		for _, rt := range req.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition = rp.Partition
				for _, b := range bad {
					if b == rp.Partition {
						sp.ErrorCode, hit = code, true
					}
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		if !hit {
			return nil, nil, false
		}
		return resp, nil, true
	})
}

// answerOffsetFetch makes the cluster answer OffsetFetch with nothing
// committed, after edit changed the answer.
func answerOffsetFetch(c *kfake.Cluster, edit func(*kmsg.OffsetFetchResponse)) {
	c.ControlKey(int16(kmsg.OffsetFetch), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := r.(*kmsg.OffsetFetchRequest)
		resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetFetchResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewOffsetFetchResponseTopicPartition()
				sp.Partition = p
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		edit(resp)
		return resp, nil, true
	})
}

func TestGroupLagCountsEveryRecord(t *testing.T) {
	_, a := cluster(t)
	lag, err := a.GroupLag(t.Context(), topic, group)
	if err != nil || lag != records {
		t.Fatalf("GroupLag = %d, %v; want %d", lag, err, records)
	}
	ends, committed, err := a.Offsets(t.Context(), topic, group)
	if err != nil || len(ends) != partitions || len(committed) != partitions {
		t.Fatalf("Offsets = %v, %v, %v", ends, committed, err)
	}
	for p, c := range committed {
		if c != -1 {
			t.Errorf("partition %d committed %d, want -1 (none)", p, c)
		}
	}
}

// Kafka reports a failed partition inside a successful response; read as
// numbers, its offsets are -1, which counted as lag 0 and could make a
// group that had read nothing look caught up.
func TestGroupLagPartitionErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject func(*kfake.Cluster)
		is     error // what errors.Is must find
		part   int   // the partition the PartitionError names; -1: none, any: any
	}{
		{"list offsets, one partition", func(c *kfake.Cluster) {
			failListOffsets(c, kerr.NotLeaderForPartition.Code, 1)
		}, kafka.NotLeaderForPartition, 1},
		{"list offsets, every partition", func(c *kfake.Cluster) {
			failListOffsets(c, kerr.LeaderNotAvailable.Code, 0, 1, 2)
		}, kafka.LeaderNotAvailable, any},
		{"offset fetch, one partition", func(c *kfake.Cluster) {
			answerOffsetFetch(c, func(r *kmsg.OffsetFetchResponse) {
				r.Topics[0].Partitions[2].ErrorCode = kerr.UnstableOffsetCommit.Code
			})
		}, kafka.UnstableOffsetCommit, 2},
		{"offset fetch, the whole group", func(c *kfake.Cluster) {
			answerOffsetFetch(c, func(r *kmsg.OffsetFetchResponse) {
				r.Topics = nil
				r.ErrorCode = kerr.CoordinatorLoadInProgress.Code
			})
		}, kafka.GroupLoadInProgress, -1},
		{"offset fetch, a partition left out", func(c *kfake.Cluster) {
			answerOffsetFetch(c, func(r *kmsg.OffsetFetchResponse) { r.Topics[0].Partitions = r.Topics[0].Partitions[1:] })
		}, kafkaadmin.ErrNoAnswer, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, a := cluster(t)
			tc.inject(c)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			lag, err := a.GroupLag(ctx, topic, group)
			if err == nil {
				t.Fatalf("GroupLag = %d, nil; want an error (the true lag is %d)", lag, records)
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("GroupLag error %v, want one that is %v", err, tc.is)
			}
			var pe *kafkaadmin.PartitionError
			if got := errors.As(err, &pe); got != (tc.part != -1) || got && tc.part != any && pe.Partition != tc.part {
				t.Errorf("GroupLag error %v (%T), want a PartitionError for partition %d", err, err, tc.part)
			}
		})
	}
}
