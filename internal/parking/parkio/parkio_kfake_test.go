package parkio_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cohortsync/cohortsync-worker/internal/parking"
	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
)

func cluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// partitionCount reads topic's partition count from the metadata (all
// topics: never auto-creating it).
func partitionCount(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...)}
	md, err := cl.Metadata(testCtx(t), &kafka.MetadataRequest{})
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

// TestEnsureKfake: Ensure creates the topic with cfg.Partitions even on a
// cluster that auto-creates topics on a metadata request naming them (with
// another count), a second Ensure finds it, and an existing topic's count
// wins over cfg.Partitions.
func TestEnsureKfake(t *testing.T) {
	c := cluster(t, kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(1), kfake.SeedTopics(3, "old.parked"))
	ctx := testCtx(t)
	cfg := parkio.Config{Brokers: c.ListenAddrs(), Topic: "g.parked", Partitions: 5}
	for i := range 2 {
		n, err := parkio.Ensure(ctx, cfg)
		if err != nil || n != 5 {
			t.Fatalf("Ensure #%d = %d, %v; want 5", i+1, n, err)
		}
	}
	if got := partitionCount(t, cfg.Brokers, cfg.Topic); got != 5 {
		t.Fatalf("the topic has %d partitions, want 5", got)
	}
	cfg.Topic = "old.parked"
	if n, err := parkio.Ensure(ctx, cfg); err != nil || n != 3 {
		t.Fatalf("Ensure of an existing 3-partition topic = %d, %v; want 3", n, err)
	}
}

// TestEnsureConcurrent: replicas creating the topic at once all succeed
// (TopicAlreadyExists is success) and agree on the count.
func TestEnsureConcurrent(t *testing.T) {
	c := cluster(t)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	ns, errs := make([]int, 4), make([]error, 4)
	for i := range 4 {
		wg.Go(func() {
			ns[i], errs[i] = parkio.Ensure(ctx, parkio.Config{Brokers: c.ListenAddrs(), Topic: "g.parked", Partitions: 4 + i})
		})
	}
	wg.Wait()
	for i := range 4 {
		if errs[i] != nil || ns[i] != ns[0] {
			t.Fatalf("Ensure results %v, errors %v: want one count for all", ns, errs)
		}
	}
	if got := partitionCount(t, c.ListenAddrs(), "g.parked"); got != ns[0] {
		t.Fatalf("Ensure said %d partitions, the topic has %d", ns[0], got)
	}
}

// readAll reads partition k of topic from offset 0 up to end.
func readAll(t *testing.T, brokers []string, topic string, k int, end int64) []kafka.Message {
	t.Helper()
	if end == 0 {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: k, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx := testCtx(t)
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

func newWriter(t *testing.T, brokers []string, topic string, k int) *parkio.Writer {
	t.Helper()
	n, err := parkio.Ensure(testCtx(t), parkio.Config{Brokers: brokers, Topic: topic, Partitions: k})
	if err != nil || n != k {
		t.Fatalf("Ensure = %d, %v", n, err)
	}
	w := parkio.NewWriter(parkio.Config{Brokers: brokers, Topic: topic}, k)
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func rec(caller, i int, ws string) parkio.Record {
	return parkio.Record{Workspace: ws, Cohort: fmt.Sprintf("c%d", i%3),
		Key: []byte(fmt.Sprintf("k%d-%d", caller, i)), Value: []byte(fmt.Sprintf(`{"caller":%d,"i":%d}`, caller, i)),
		SourceTopic: "in", SourcePartition: caller, SourceOffset: int64(i), NotBefore: time.Duration(i) * time.Millisecond,
		Generation: 7}
}

// TestWritePositions: concurrent callers, each writing batches one after
// another; every returned position holds exactly the record given (so
// Produce's BaseOffset is the first record's offset and the others follow
// one by one), each record's partition is parking.PartitionFor, and each
// caller's records land in its order per partition.
func TestWritePositions(t *testing.T) {
	c := cluster(t)
	const k, callers, batches, per = 3, 4, 5, 7
	w := newWriter(t, c.ListenAddrs(), "g.parked", k)
	ctx := testCtx(t)
	type written struct {
		rec parkio.Record
		pos parkio.Position
	}
	got := make([][]written, callers)
	var wg sync.WaitGroup
	for cl := range callers {
		wg.Go(func() {
			for b := range batches {
				recs := make([]parkio.Record, per)
				for i := range recs {
					recs[i] = rec(cl, b*per+i, fmt.Sprintf("ws%d", i%2))
				}
				pos, err := w.Write(ctx, recs)
				if err != nil || len(pos) != len(recs) {
					t.Errorf("caller %d: Write = %v, %v", cl, pos, err)
					return
				}
				for i := range recs {
					got[cl] = append(got[cl], written{recs[i], pos[i]})
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	logs := make([][]kafka.Message, k)
	total := 0
	for p := range k {
		logs[p] = readAll(t, c.ListenAddrs(), "g.parked", p, int64(endOffset(t, c.ListenAddrs(), "g.parked", p)))
		total += len(logs[p])
	}
	if total != callers*batches*per {
		t.Fatalf("%d records in the topic, want %d", total, callers*batches*per)
	}
	for cl, ws := range got {
		last := map[int]int64{}
		for _, x := range ws {
			if want := parking.PartitionFor(x.rec.Workspace, x.rec.Cohort, k); x.pos.Partition != want {
				t.Fatalf("caller %d: %s in partition %d, want %d", cl, x.rec.Key, x.pos.Partition, want)
			}
			if prev, ok := last[x.pos.Partition]; ok && x.pos.Offset <= prev {
				t.Fatalf("caller %d: %s at %v, after its previous record at %d", cl, x.rec.Key, x.pos, prev)
			}
			last[x.pos.Partition] = x.pos.Offset
			p, err := parkio.Decode(logs[x.pos.Partition][x.pos.Offset])
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p.Record, x.rec) {
				t.Fatalf("at %v: %+v, want %+v", x.pos, p.Record, x.rec)
			}
		}
	}
}

func endOffset(t *testing.T, brokers []string, topic string, k int) int {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := cl.ListOffsets(testCtx(t), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(k)}}})
	if err != nil {
		t.Fatal(err)
	}
	po := res.Topics[topic][0]
	if po.Error != nil {
		t.Fatal(po.Error)
	}
	return int(po.LastOffset)
}

// TestMarkAndEnds: a marker of the generation lands in every partition,
// after the records written before, and the ends returned are one past
// each marker.
func TestMarkAndEnds(t *testing.T) {
	c := cluster(t)
	const k = 4
	w := newWriter(t, c.ListenAddrs(), "g.parked", k)
	ctx := testCtx(t)
	recs := make([]parkio.Record, 20)
	for i := range recs {
		recs[i] = rec(0, i, fmt.Sprintf("ws%d", i))
	}
	if _, err := w.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	ends, err := w.MarkAndEnds(ctx, 8)
	if err != nil {
		t.Fatal(err)
	}
	if len(ends) != k {
		t.Fatalf("ends %v, want %d", ends, k)
	}
	n := 0
	for p, end := range ends {
		log := readAll(t, c.ListenAddrs(), "g.parked", p, end)
		n += len(log) - 1
		m, err := parkio.Decode(log[end-1])
		if err != nil || !m.Marker || m.Generation != 8 {
			t.Fatalf("partition %d: the last record before the end %d is %+v, %v; want the marker of generation 8", p, end, m, err)
		}
		if got := endOffset(t, c.ListenAddrs(), "g.parked", p); int64(got) != end {
			t.Fatalf("partition %d: end %d, MarkAndEnds said %d", p, got, end)
		}
	}
	if n != len(recs) {
		t.Fatalf("%d records before the markers, want %d", n, len(recs))
	}
}

// TestCommittedRoundTrip: what a parking owner commits (offset and
// Commit.Encode metadata) is what Committed reads back; a partition without
// a commit is Commit{Offset: -1}.
func TestCommittedRoundTrip(t *testing.T) {
	c := cluster(t, kfake.SeedTopics(3, "g.parked"))
	ctx := testCtx(t)
	cfg := parkio.Config{Brokers: c.ListenAddrs(), Topic: "g.parked"}
	want := []parking.Commit{
		{Offset: 4, Mark: 9, Gen: 3, Held: map[string]int64{"ws,1": 4}, HeldGen: map[string]int64{"ws,1": 2}, Hold: 1500 * time.Millisecond},
		{Offset: -1},
		{Offset: 12, Mark: 12, Gen: 5, Held: map[string]int64{}, HeldGen: map[string]int64{}},
	}
	cl := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...)}
	res, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: "g", GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{
		"g.parked": {{Partition: 0, Offset: 4, Metadata: want[0].Encode()}, {Partition: 2, Offset: 12, Metadata: want[2].Encode()}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Topics["g.parked"] {
		if p.Error != nil {
			t.Fatalf("commit %d: %v", p.Partition, p.Error)
		}
	}
	got, err := parkio.Committed(ctx, cfg, "g", 3)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Committed = %+v\nwant %+v", got, want)
	}
}

// TestWriteRetriesAndFails: a produce refused with a retriable error
// (NOT_LEADER_FOR_PARTITION) is sent again and the Write succeeds with the
// positions of the accepted batch; one refused with a permanent error
// (TOPIC_AUTHORIZATION_FAILED) fails the Write at once.
func TestWriteRetriesAndFails(t *testing.T) {
	c := cluster(t)
	w := newWriter(t, c.ListenAddrs(), "g.parked", 1)
	ctx := testCtx(t)
	refuse := func(code int16, times int) *int {
		n := new(int)
		var mu sync.Mutex
		c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			mu.Lock()
			defer mu.Unlock()
			if *n >= times {
				return nil, nil, false
			}
			*n++
			return produceError(req.(*kmsg.ProduceRequest), code), nil, true
		})
		return n
	}
	n := refuse(6 /* NOT_LEADER_FOR_PARTITION */, 2)
	pos, err := w.Write(ctx, []parkio.Record{rec(0, 0, "a"), rec(0, 1, "a")})
	if err != nil || *n != 2 {
		t.Fatalf("Write after 2 retriable refusals = %v, %v (%d refused)", pos, err, *n)
	}
	if pos[0].Offset != 0 || pos[1].Offset != 1 {
		t.Fatalf("positions %v, want offsets 0 and 1", pos)
	}
	c.DropControl()
	refuse(29 /* TOPIC_AUTHORIZATION_FAILED */, 1000)
	start := time.Now()
	if _, err := w.Write(ctx, []parkio.Record{rec(0, 2, "a")}); !errors.Is(err, kafka.TopicAuthorizationFailed) {
		t.Fatalf("Write refused for authorization = %v, want TopicAuthorizationFailed", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a permanent error took %v: it was retried", d)
	}
}

func produceError(req *kmsg.ProduceRequest, code int16) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// TestIdle: Idle is open while a Write waits for its produce and closed
// when the Write returned; the Write's attempt is not abandoned when its
// ctx ends (the fence must not pass a produce still in flight).
func TestIdle(t *testing.T) {
	c := cluster(t)
	w := newWriter(t, c.ListenAddrs(), "g.parked", 1)
	select {
	case <-w.Idle():
	default:
		t.Fatal("a new Writer is not idle")
	}
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() { close(held) })
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() { _, err := w.Write(ctx, []parkio.Record{rec(0, 0, "a")}); done <- err }()
	<-held
	idle := w.Idle()
	cancel()
	select {
	case <-idle:
		t.Fatal("Idle closed while a produce is in flight")
	case err := <-done:
		t.Fatalf("Write returned (%v) while its produce is in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the in-flight produce was acknowledged, yet Write = %v", err)
	}
	<-idle
	if got := endOffset(t, c.ListenAddrs(), "g.parked", 0); got != 1 {
		t.Fatalf("end offset %d, want 1", got)
	}
}

// TestOneProduceInFlight: concurrent Writes to one partition reach the
// broker one produce at a time (the broker holds each for a while).
func TestOneProduceInFlight(t *testing.T) {
	c := cluster(t)
	w := newWriter(t, c.ListenAddrs(), "g.parked", 1)
	var mu sync.Mutex
	inflight, most, seen := 0, 0, 0
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		inflight++
		most = max(most, inflight)
		seen++
		mu.Unlock()
		c.SleepControl(func() { time.Sleep(20 * time.Millisecond) })
		mu.Lock()
		inflight--
		mu.Unlock()
		return nil, nil, false
	})
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			if _, err := w.Write(ctx, []parkio.Record{rec(i, 0, "a")}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if seen != 6 || most != 1 {
		t.Fatalf("%d produces, at most %d at once; want 6, one at a time", seen, most)
	}
}
