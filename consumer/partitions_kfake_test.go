package consumer_test

// Component tests of issue 10 §5 against kfake, with a recording fake
// Batcher instead of the real one: a partition whose reader cannot start,
// topics created and partitions added while the group runs, the byte bound
// of the fetch queue, and the timing checks of Config.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/consumer"
	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// recBatcher is a Batcher that settles every change at once and records
// the uids it was given. While block is set, Add waits (backpressure) until
// it is cleared or ctx ends.
type recBatcher struct {
	mu    sync.Mutex
	uids  map[string]bool
	added atomic.Int64 // changes handed to Add, including one that waits
	block atomic.Bool
}

func (b *recBatcher) Add(ctx context.Context, changes []batcher.Change) error {
	b.added.Add(int64(len(changes)))
	for b.block.Load() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	b.mu.Lock()
	for _, ch := range changes {
		b.uids[ch.UID] = true
	}
	b.mu.Unlock()
	for _, ch := range changes {
		ch.Ack.Done()
	}
	return nil
}

func (b *recBatcher) Revoke(context.Context) error { return nil }
func (b *recBatcher) Flush(context.Context) error  { return nil }

func (b *recBatcher) has(uids ...string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, u := range uids {
		if !b.uids[u] {
			return false
		}
	}
	return true
}

// lite is one consumer against a kfake cluster, with a recBatcher.
type lite struct {
	t       testing.TB
	cluster *kfake.Cluster
	brokers []string
	b       *recBatcher
	c       *consumer.Consumer

	mu      sync.Mutex
	assigns []assignment

	runErr chan error
	cancel context.CancelFunc
}

func newLiteCluster(t testing.TB, opts ...kfake.Opt) (*kfake.Cluster, []string) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(dlqParts, dlqTopic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()
}

// startLite starts a consumer of topics; mod changes its Config, and
// before runs between New and Run.
func startLite(t testing.TB, cluster *kfake.Cluster, topics []string, mod func(*consumer.Config), before func(*consumer.Consumer)) *lite {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if tt, ok := t.(*testing.T); ok {
		log = testLogger(tt)
	}
	l := &lite{t: t, cluster: cluster, brokers: cluster.ListenAddrs(), b: &recBatcher{uids: map[string]bool{}}, runErr: make(chan error, 1)}
	m := metrics.New(prometheus.NewRegistry())
	tr := &kafka.Transport{}
	dlq := deadletter.New(deadletter.NewWriter(l.brokers, dlqTopic, tr, log), dlqTopic, consumer.Locate, log, m)
	cfg := consumer.Config{
		Brokers: l.brokers, Topics: topics, GroupID: "g-" + t.Name(), DefaultPartner: partner,
		Transport: tr, Batcher: l.b, DLQ: dlq, OnAssign: l.onAssign,
		CommitInterval: commitInterval, MaxWait: 100 * time.Millisecond,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 200 * time.Millisecond,
		RebalanceTimeout: 10 * time.Second, DrainTimeout: 5 * time.Second,
		PartitionWatchInterval: 300 * time.Millisecond,
		Logger:                 log, Metrics: m,
	}
	if mod != nil {
		mod(&cfg)
	}
	var err error
	if l.c, err = consumer.New(cfg); err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(l.c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	dctx, dcancel := context.WithCancel(context.Background())
	dlqDone := make(chan struct{})
	go func() { defer close(dlqDone); dlq.Run(dctx) }()
	l.cancel = cancel
	go func() { l.runErr <- l.c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-l.runErr:
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return 30s after cancel")
		}
		dcancel()
		<-dlqDone
		_ = dlq.Close()
		tr.CloseIdleConnections()
	})
	return l
}

func (l *lite) onAssign(assigned []consumer.TopicPartition, total int) {
	a := assignment{parts: map[int]bool{}, total: total}
	for _, tp := range assigned {
		a.parts[tp.Partition] = true
	}
	l.mu.Lock()
	l.assigns = append(l.assigns, a)
	l.mu.Unlock()
}

func (l *lite) lastAssign() (assignment, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.assigns) == 0 {
		return assignment{}, 0
	}
	return l.assigns[len(l.assigns)-1], len(l.assigns)
}

// produceTo writes one record per (partition, value) to tp with a fresh
// transport (a cached one would not know partitions added since).
func produceTo(t testing.TB, brokers []string, tp string, recs map[int][][]byte) {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: tp, Balancer: byHeader{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, BatchBytes: 1_000_000, Transport: tr} // kfake takes batches up to 1 MB
	defer w.Close()
	var msgs []kafka.Message
	for p, vs := range recs {
		for _, v := range vs {
			msgs = append(msgs, kafka.Message{Value: v, Headers: []kafka.Header{{Key: partHeader, Value: []byte(strconv.Itoa(p))}}})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce to %s: %.300v", tp, err)
	}
}

// oneEach is one valid single-member record per partition, the uid naming
// the topic, partition and tag.
func oneEach(tp, tag string, parts ...int) (map[int][][]byte, []string) {
	recs := map[int][][]byte{}
	var uids []string
	for _, p := range parts {
		u := fmt.Sprintf("%s-p%d-%s", tp, p, tag)
		recs[p] = append(recs[p], encodeChange(change{part: p, action: event.Add, cohort: "c1", uid: u}))
		uids = append(uids, u)
	}
	return recs, uids
}

func admin(t *testing.T, brokers []string) (*kafka.Client, func()) {
	tr := &kafka.Transport{}
	return &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr, Timeout: 10 * time.Second}, tr.CloseIdleConnections
}

// Issue 10 §5.2: a worker started before its topic exists joins with no
// partitions; once the topic is created it is read within seconds, and
// partitions added later are read too. OnAssign's total follows.
func TestLateTopicAndNewPartitions(t *testing.T) {
	cluster, brokers := newLiteCluster(t)
	const late = "late-topic"
	l := startLite(t, cluster, []string{late}, nil, nil)
	waitFor(t, 20*time.Second, "a first generation", func() bool { _, n := l.lastAssign(); return n > 0 })
	if a, _ := l.lastAssign(); len(a.parts) != 0 || a.total != 0 {
		t.Fatalf("before the topic exists: assigned %v of %d partitions, want none of 0", keys(a.parts), a.total)
	}

	client, closeClient := admin(t, brokers)
	defer closeClient()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: late, NumPartitions: 2, ReplicationFactor: 1}}})
	if err == nil {
		err = errors.Join(res.Errors[late])
	}
	if err != nil {
		t.Fatalf("create topic: %v", err)
	}
	created := time.Now()
	recs, uids := oneEach(late, "first", 0, 1)
	produceTo(t, brokers, late, recs)
	const bound = 10 * time.Second // watch interval 300ms, plus a rebalance
	waitFor(t, bound, "the records of the topic created after the join", func() bool { return l.b.has(uids...) })
	t.Logf("topic created after the join: read %v after its creation", time.Since(created).Round(time.Millisecond))
	if a, _ := l.lastAssign(); !slices.Equal(keys(a.parts), []int{0, 1}) || a.total != 2 {
		t.Fatalf("after the topic was created: assigned %v of %d, want [0 1] of 2", keys(a.parts), a.total)
	}

	cres, err := client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: late, Count: 4}}})
	if err == nil {
		err = errors.Join(cres.Errors[late])
	}
	if err != nil {
		t.Fatalf("create partitions: %v", err)
	}
	added := time.Now()
	recs, uids = oneEach(late, "second", 0, 1, 2, 3)
	produceTo(t, brokers, late, recs)
	waitFor(t, bound, "the records of the added partitions", func() bool { return l.b.has(uids...) })
	t.Logf("partitions added: read %v after they were", time.Since(added).Round(time.Millisecond))
	if a, _ := l.lastAssign(); !slices.Equal(keys(a.parts), []int{0, 1, 2, 3}) || a.total != 4 {
		t.Fatalf("after partitions were added: assigned %v of %d, want [0 1 2 3] of 4", keys(a.parts), a.total)
	}

	// With nothing changing, the watch ends no generation.
	_, gens := l.lastAssign()
	time.Sleep(5 * 300 * time.Millisecond)
	if _, n := l.lastAssign(); n != gens {
		t.Fatalf("%d generations while the partitions did not change", n-gens)
	}
}

// Issue 10 §5.2 with two topics, one of which is missing at the join: the
// existing one is read at once, the other once it is created.
func TestSecondTopicCreatedLater(t *testing.T) {
	cluster, brokers := newLiteCluster(t, kfake.SeedTopics(2, topic))
	const late = "late-topic"
	l := startLite(t, cluster, []string{topic, late}, nil, nil)
	recs, uids := oneEach(topic, "a", 0, 1)
	produceTo(t, brokers, topic, recs)
	waitFor(t, 20*time.Second, "the existing topic's records", func() bool { return l.b.has(uids...) })

	client, closeClient := admin(t, brokers)
	defer closeClient()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: late, NumPartitions: 3, ReplicationFactor: 1}}}); err != nil {
		t.Fatal(err)
	}
	recs, uids = oneEach(late, "b", 0, 1, 2)
	produceTo(t, brokers, late, recs)
	waitFor(t, 10*time.Second, "the new topic's records", func() bool { return l.b.has(uids...) })
	if a, _ := l.lastAssign(); a.total != 5 {
		t.Fatalf("total partitions %d, want 5", a.total)
	}
}

// countingReader counts the records it hands out.
type countingReader struct {
	consumer.PartitionReader
	n *atomic.Int64
}

func (r countingReader) FetchMessage(ctx context.Context) (kafka.Message, error) {
	m, err := r.PartitionReader.FetchMessage(ctx)
	if err == nil {
		r.n.Add(1)
	}
	return m, err
}

// Issue 10 §5.1: a partition whose reader cannot start once ends the
// generation; the group rebalances and the partition is read.
func TestReaderStartFailureRebalances(t *testing.T) {
	cluster, brokers := newLiteCluster(t, kfake.SeedTopics(partitions, topic))
	var failed atomic.Int32
	l := startLite(t, cluster, []string{topic}, nil, func(c *consumer.Consumer) {
		c.WrapReaders(func(tp consumer.TopicPartition, open func() (consumer.PartitionReader, error)) (consumer.PartitionReader, error) {
			if tp.Partition == 2 && failed.Add(1) == 1 {
				return nil, errors.New("injected: the reader could not start")
			}
			return open()
		})
	})
	recs, uids := oneEach(topic, "x", 0, 1, 2, 3)
	produceTo(t, brokers, topic, recs)
	waitFor(t, 20*time.Second, "every partition read, partition 2 included", func() bool { return l.b.has(uids...) })
	if failed.Load() < 2 {
		t.Fatalf("partition 2's reader was opened %d times, want a retry after the failure", failed.Load())
	}
	if _, n := l.lastAssign(); n < 2 {
		t.Fatalf("%d generations: the failure should have ended the first", n)
	}
	select {
	case err := <-l.runErr:
		t.Fatalf("Run returned after one failure: %v", err)
	default:
	}
}

// Issue 10 §5.1: a partition whose reader never starts stops the consumer
// with an error naming it, after maxStartFailures generations, instead of
// leaving it unread.
func TestReaderStartFailurePersistentFailsRun(t *testing.T) {
	cluster, _ := newLiteCluster(t, kfake.SeedTopics(partitions, topic))
	l := startLite(t, cluster, []string{topic}, nil, func(c *consumer.Consumer) {
		c.WrapReaders(func(tp consumer.TopicPartition, open func() (consumer.PartitionReader, error)) (consumer.PartitionReader, error) {
			if tp.Partition == 1 {
				return nil, errors.New("injected: the reader could not start")
			}
			return open()
		})
	})
	select {
	case err := <-l.runErr:
		if err == nil || !strings.Contains(err.Error(), topic+"/1") || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("Run returned %v, want an error naming partition %s/1 and the cause", err, topic)
		}
		l.runErr <- err // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("Run still running 30s after a partition's reader failed in every generation")
	}
}

// Issue 10 §5.3: records fetched but not yet handed to the batcher are
// bounded by FetchBufferBytes, not only by their count: with the batcher
// blocking, a partition of 100 KB records stops fetching at about 1 MiB.
func TestFetchBufferBytesBound(t *testing.T) {
	cluster, brokers := newLiteCluster(t, kfake.SeedTopics(1, topic))
	const recSize, limit, n = 100 << 10, 1 << 20, 60
	var vs [][]byte
	for i := range n {
		v := fmt.Sprintf(`{"action":"add","cohort_id":"c1","cohort_name":"n","partner":"p","uid":"u%d","pad":"%s"}`,
			i, strings.Repeat("x", recSize))
		vs = append(vs, []byte(v))
	}
	produceTo(t, brokers, topic, map[int][][]byte{0: vs})

	var fetched atomic.Int64
	l := startLite(t, cluster, []string{topic}, func(c *consumer.Config) {
		c.FetchBufferBytes = limit
		c.MaxWait = time.Second // kfake under -race takes a while to build a 1 MB response
	},
		func(c *consumer.Consumer) {
			c.WrapReaders(func(_ consumer.TopicPartition, open func() (consumer.PartitionReader, error)) (consumer.PartitionReader, error) {
				r, err := open()
				if err != nil {
					return nil, err
				}
				return countingReader{r, &fetched}, nil
			})
		})
	l.b.block.Store(true)
	waitFor(t, 20*time.Second, "an Add waiting", func() bool { return l.b.added.Load() > 0 })
	// Waiting: fetched - added records. At most limit/recSize of them in the
	// queue, plus the one the fetch loop holds while it waits for room.
	const maxWaiting = limit/recSize + 1
	bound := func() (bool, string) {
		w := fetched.Load() - l.b.added.Load()
		return w <= maxWaiting, fmt.Sprintf("%d records (%d KB) fetched and not handed on, bound %d", w, w*recSize>>10, maxWaiting)
	}
	holdsFor(t, 2*time.Second, "fetch buffer bound", bound)
	t.Logf("fetched %d, handed to the batcher %d", fetched.Load(), l.b.added.Load())
	if fetched.Load() >= n {
		t.Fatalf("every record fetched (%d) while the batcher blocked", fetched.Load())
	}

	l.b.block.Store(false)
	waitFor(t, 20*time.Second, "every record read once the batcher takes them", func() bool { return l.b.added.Load() >= n })
	if !l.b.has("u0", fmt.Sprintf("u%d", n-1)) {
		t.Fatal("the first and last records were not handed on")
	}
}

// Issue 10 §5.6: New refuses timings the group and the lease cannot work
// with.
func TestConfigTimings(t *testing.T) {
	base := func() consumer.Config {
		return consumer.Config{Brokers: []string{"127.0.0.1:1"}, Topics: []string{"t"}, GroupID: "g",
			Batcher: &recBatcher{}, DLQ: &deadletter.DLQ{}}
	}
	for _, tc := range []struct {
		name string
		mod  func(*consumer.Config)
		want string // "" = valid
	}{
		{"defaults", func(*consumer.Config) {}, ""},
		{"rebalance < session", func(c *consumer.Config) { c.SessionTimeout, c.RebalanceTimeout = 30*time.Second, 20*time.Second }, "RebalanceTimeout"},
		{"rebalance = session", func(c *consumer.Config) { c.SessionTimeout, c.RebalanceTimeout = 30*time.Second, 30*time.Second }, ""},
		{"default rebalance < session", func(c *consumer.Config) { c.SessionTimeout = 45 * time.Second }, "RebalanceTimeout"},
		{"heartbeat = session/3", func(c *consumer.Config) { c.SessionTimeout, c.HeartbeatInterval = 9*time.Second, 3*time.Second }, "HeartbeatInterval"},
		{"heartbeat > session/3", func(c *consumer.Config) { c.HeartbeatInterval = 5 * time.Second }, "HeartbeatInterval"},
		{"heartbeat < session/3", func(c *consumer.Config) { c.SessionTimeout, c.HeartbeatInterval = 9*time.Second, 2999*time.Millisecond }, ""},
		{"negative fetch buffer", func(c *consumer.Config) { c.FetchBufferBytes = -1 }, "FetchBufferBytes"},
		{"lag interval", func(c *consumer.Config) { c.LagInterval = 100 * time.Millisecond }, ""},
		{"negative lag interval", func(c *consumer.Config) { c.LagInterval = -time.Second }, "LagInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.mod(&cfg)
			_, err := consumer.New(cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
}
