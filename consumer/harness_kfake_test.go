package consumer_test

// The component-test harness: an in-process Kafka (kfake) speaking the real
// protocol, a producer that places every record on a partition the test
// chooses, consumer replicas made of the real consumer, the real batcher and
// the real dead-letter queue, and a recording fake Sink.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/consumer"
	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/kafkaadmin"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

const (
	topic      = "events"
	dlqTopic   = "events.dlq"
	partitions = 4
	dlqParts   = 2
	partner    = "partner"

	commitInterval = 100 * time.Millisecond
	// partHeader names the partition a test record is produced to.
	partHeader = "x-test-partition"
)

// ---- polling helpers -------------------------------------------------------

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	rig.WaitFor(t, timeout, what, cond)
}

// holdsFor polls cond for d and fails the test the first time it is false.
// It is for "this must not happen" assertions, which have no end to wait for.
func holdsFor(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if ok, why := cond(); !ok {
			t.Fatalf("%s: %s", what, why)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- logs -------------------------------------------------------------------

// testLogger keeps a test's logs and prints their last 200 KiB only if the
// test failed.
func testLogger(t *testing.T) *slog.Logger {
	lb := &rig.Buffer{}
	t.Cleanup(func() {
		if s := lb.String(); t.Failed() {
			if len(s) > 200<<10 {
				s = "...\n" + s[len(s)-200<<10:]
			}
			t.Logf("logs:\n%s", s)
		}
	})
	level := slog.LevelInfo
	if os.Getenv("COHORTSYNC_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: level}))
}

// ---- cluster and producer ----------------------------------------------------

type harness struct {
	t       *testing.T
	cluster *kfake.Cluster
	brokers []string
	tr      *kafka.Transport // the test's own admin client and producer
	admin   *kafkaadmin.Admin
	prod    *kafka.Writer
	group   string
	log     *slog.Logger
	rec     *recorder

	mu      sync.Mutex
	uidPart map[string]int // every produced uid lives in one partition

	lazyParking bool // parkingOpts leaves the parking topic to the consumer (parking_kfake_test.go)
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	log := testLogger(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.SeedTopics(partitions, topic), kfake.SeedTopics(dlqParts, dlqTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close) // registered first: runs after every replica stopped
	h := &harness{t: t, cluster: c, brokers: c.ListenAddrs(), tr: &kafka.Transport{}, group: "g-" + t.Name(),
		log: log, uidPart: map[string]int{}}
	h.rec = &recorder{h: h, inflight: map[int]map[string]int{}}
	h.admin = kafkaadmin.New(h.brokers, h.tr)
	h.prod = &kafka.Writer{
		Addr:         kafka.TCP(h.brokers...),
		Topic:        topic,
		Balancer:     byHeader{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    10000,
		BatchBytes:   64 << 20,
		BatchTimeout: time.Millisecond,
		Transport:    h.tr,
	}
	t.Cleanup(func() {
		_ = h.prod.Close()
		h.tr.CloseIdleConnections()
	})
	return h
}

// failDLQWrites makes the broker refuse every write to the dead-letter
// topic while down is true.
func (h *harness) failDLQWrites(down *atomic.Bool) {
	h.cluster.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		h.cluster.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		if !down.Load() || !slices.ContainsFunc(req.Topics, func(t kmsg.ProduceRequestTopic) bool { return t.Topic == dlqTopic }) {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			t := kmsg.NewProduceResponseTopic()
			t.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				p := kmsg.NewProduceResponseTopicPartition()
				p.Partition = rp.Partition
				p.ErrorCode = kerr.NotEnoughReplicas.Code
				t.Partitions = append(t.Partitions, p)
			}
			resp.Topics = append(resp.Topics, t)
		}
		return resp, nil, true
	})
}

// byHeader puts a record on the partition named by its partHeader header.
type byHeader struct{}

func (byHeader) Balance(m kafka.Message, parts ...int) int {
	for _, hd := range m.Headers {
		if hd.Key == partHeader {
			if p, err := strconv.Atoi(string(hd.Value)); err == nil && slices.Contains(parts, p) {
				return p
			}
		}
	}
	return -1 // kafka-go fails the write: the test notices
}

// rec is a record to produce.
type rec struct {
	part    int
	key     []byte
	value   []byte // nil: a tombstone
	headers []kafka.Header
}

// change is one valid single-member event.
type change struct {
	part   int
	action event.Action
	cohort string
	uid    string
}

func encodeChange(c change) []byte {
	return event.Encode(event.Event{Action: c.action, Partner: partner, CohortID: c.cohort,
		CohortName: "Name_" + c.cohort, UIDs: []string{c.uid}})
}

// valid is the record of c, keyed by uid as DESIGN.md asks of producers.
func valid(c change) rec {
	return rec{part: c.part, key: []byte(c.uid), value: encodeChange(c)}
}

// produce writes recs, in order, each to its partition.
func (h *harness) produce(recs ...rec) {
	h.t.Helper()
	msgs := make([]kafka.Message, len(recs))
	h.mu.Lock()
	for i, r := range recs {
		hdrs := append([]kafka.Header{{Key: partHeader, Value: []byte(strconv.Itoa(r.part))}}, r.headers...)
		msgs[i] = kafka.Message{Key: r.key, Value: r.value, Headers: hdrs}
		if ev, err := event.Decode(r.value, ""); err == nil {
			for _, u := range ev.UIDs {
				if p, ok := h.uidPart[u]; ok && p != r.part {
					h.mu.Unlock()
					h.t.Fatalf("test bug: uid %s produced to partitions %d and %d", u, p, r.part)
				}
				h.uidPart[u] = r.part
			}
		}
	}
	h.mu.Unlock()
	// One call per chunk keeps each partition's records in one batch, in order.
	for len(msgs) > 0 {
		n := min(len(msgs), 5000)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := h.prod.WriteMessages(ctx, msgs[:n]...)
		cancel()
		if err != nil {
			h.t.Fatalf("produce: %v", err)
		}
		msgs = msgs[n:]
	}
}

func (h *harness) partOf(uid string) (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.uidPart[uid]
	return p, ok
}

// endOffsets returns the end (next) offset of every partition of tp.
func (h *harness) endOffsets(tp string, n int) map[int]int64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := h.admin.EndOffsets(ctx, tp, seq(n))
	if err != nil {
		h.t.Fatalf("end offsets of %s: %v", tp, err)
	}
	return out
}

// committed returns the group's committed offset per partition (-1: none).
func (h *harness) committed() map[int]int64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := h.admin.Committed(ctx, topic, h.group, seq(partitions))
	if err != nil {
		h.t.Fatalf("committed offsets: %v", err)
	}
	return out
}

// seq returns 0, 1, … n-1.
func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// waitCommittedToEnd waits until the group committed the end every
// partition of the input topic had when it was called, and fails the test
// if a commit passes the end.
func (h *harness) waitCommittedToEnd(timeout time.Duration) {
	h.t.Helper()
	end := h.endOffsets(topic, partitions)
	var last map[int]int64
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := rig.Wait(ctx, func() bool {
		last = h.committed()
		ok := true
		for p, e := range end {
			if last[p] > e {
				h.t.Fatalf("partition %d: committed %d past the end %d", p, last[p], e)
			}
			ok = ok && (e == 0 || last[p] == e)
		}
		return ok
	})
	if err != nil {
		h.t.Fatalf("timed out after %v waiting for commits to reach the end: committed %v, end %v", timeout, last, end)
	}
}

// readTopic reads every record of every partition of tp, in offset order
// per partition.
func (h *harness) readTopic(tp string, n int) []kafka.Message {
	h.t.Helper()
	end := h.endOffsets(tp, n)
	var out []kafka.Message
	for p := range n {
		if end[p] == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: h.brokers, Topic: tp, Partition: p,
			MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				cancel()
				_ = r.Close()
				h.t.Fatalf("read %s/%d: %v", tp, p, err)
			}
			out = append(out, m)
			if m.Offset >= end[p]-1 {
				break
			}
		}
		cancel()
		_ = r.Close()
	}
	return out
}

func header(m kafka.Message, key string) (string, bool) {
	for _, hd := range m.Headers {
		if hd.Key == key {
			return string(hd.Value), true
		}
	}
	return "", false
}

// ---- folds: the membership the API should end up with ------------------------

type memberKey struct{ cohort, uid string }

// foldLog folds the valid events of a log (in offset order per partition):
// the last action per (cohort, uid). keep filters the records.
func foldLog(msgs []kafka.Message, keep func(event.Event) bool) map[memberKey]event.Action {
	out := map[memberKey]event.Action{}
	for _, m := range msgs {
		ev, err := event.Decode(m.Value, "")
		if err != nil || (keep != nil && !keep(ev)) {
			continue
		}
		for _, u := range ev.UIDs {
			out[memberKey{ev.CohortID, u}] = ev.Action
		}
	}
	return out
}

// ---- the recording sink -------------------------------------------------------

// sentReq is one Send call.
type sentReq struct {
	seq      int // global send order, across replicas
	replica  string
	at       time.Time
	req      wire.Request
	assigned map[int]bool // the replica's assignment when it sent
	parts    map[int]bool // the partitions of the changes it carries

	outcome  string // "sending", "held", "accepted", "cancelled"
	rejected map[string]bool
}

// recorder records the requests of every replica's sink, in one order, and
// checks that no two replicas send changes of one partition at once and that
// no replica sends changes of a partition it does not own.
type recorder struct {
	h          *harness
	mu         sync.Mutex
	reqs       []*sentReq
	inflight   map[int]map[string]int // partition -> replica -> sends under way
	violations []string
}

func (r *recorder) begin(replica string, req wire.Request, assigned map[int]bool) *sentReq {
	req.UIDs = slices.Clone(req.UIDs)
	s := &sentReq{replica: replica, at: time.Now(), req: req, assigned: assigned, parts: map[int]bool{}, outcome: "sending"}
	for _, u := range req.UIDs {
		p, ok := r.h.partOf(u)
		if !ok {
			continue
		}
		s.parts[p] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s.seq = len(r.reqs)
	r.reqs = append(r.reqs, s)
	for p := range s.parts {
		if assigned != nil && !assigned[p] {
			r.violations = append(r.violations, fmt.Sprintf("send #%d by %s carries partition %d, assigned %v", s.seq, replica, p, keys(assigned)))
		}
		m := r.inflight[p]
		if m == nil {
			m = map[string]int{}
			r.inflight[p] = m
		}
		for other, n := range m {
			if other != replica && n > 0 {
				r.violations = append(r.violations, fmt.Sprintf("send #%d by %s carries partition %d while %s has %d sends of it under way", s.seq, replica, p, other, n))
			}
		}
		m[replica]++
	}
	return s
}

func (r *recorder) end(s *sentReq, outcome string, rejected map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.outcome, s.rejected = outcome, rejected
	for p := range s.parts {
		r.inflight[p][s.replica]--
	}
}

func (r *recorder) setOutcome(s *sentReq, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.outcome = outcome
}

// snapshot returns copies of the recorded requests, in send order.
func (r *recorder) snapshot() []sentReq {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]sentReq, len(r.reqs))
	for i, s := range r.reqs {
		out[i] = *s
	}
	return out
}

func (r *recorder) count(replica, outcome string) int {
	n := 0
	for _, s := range r.snapshot() {
		if (replica == "" || s.replica == replica) && (outcome == "" || s.outcome == outcome) {
			n++
		}
	}
	return n
}

func (r *recorder) checkNoViolations(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.violations {
		t.Error(v)
	}
}

// foldAccepted folds the accepted requests in send order (rejected members
// excluded): the membership the API holds.
func (r *recorder) foldAccepted(keep func(wire.Request) bool) map[memberKey]event.Action {
	out := map[memberKey]event.Action{}
	for _, s := range r.snapshot() {
		if s.outcome != "accepted" || (keep != nil && !keep(s.req)) {
			continue
		}
		for _, u := range s.req.UIDs {
			if !s.rejected[u] {
				out[memberKey{s.req.CohortID, u}] = s.req.Action
			}
		}
	}
	return out
}

// fakeSink is one replica's Sink. It can hold requests (until released or
// cancelled, as a real sink's retries are by the batcher's fencing) and
// reject members.
type fakeSink struct {
	name     string
	rec      *recorder
	assigned func() map[int]bool

	mu      sync.Mutex
	hold    func(wire.Request) bool
	release chan struct{}
	reject  map[string]string // uid -> rejection reason
	delay   time.Duration     // each accepted request takes up to this long
}

func (s *fakeSink) Send(ctx context.Context, req wire.Request) ([]wire.Rejection, error) {
	var asg map[int]bool
	if s.assigned != nil {
		asg = s.assigned()
	}
	r := s.rec.begin(s.name, req, asg)
	s.mu.Lock()
	held := s.hold != nil && s.hold(req)
	release, reject := s.release, s.reject
	s.mu.Unlock()
	if held {
		s.rec.setOutcome(r, "held")
		select {
		case <-release:
		case <-ctx.Done():
			s.rec.end(r, "cancelled", nil)
			return nil, ctx.Err()
		}
	}
	if s.delay > 0 {
		select {
		case <-time.After(time.Duration(rand.Int64N(int64(s.delay)))):
		case <-ctx.Done():
		}
	}
	if ctx.Err() != nil {
		s.rec.end(r, "cancelled", nil)
		return nil, ctx.Err()
	}
	var rej []wire.Rejection
	rejected := map[string]bool{}
	for _, u := range req.UIDs {
		if why, ok := reject[u]; ok {
			rej = append(rej, wire.Rejection{UID: u, Reason: why})
			rejected[u] = true
		}
	}
	s.rec.end(r, "accepted", rejected)
	return rej, nil
}

// setHold makes the sink hold the requests hold selects (nil: none) and
// releases (accepts) every request held so far.
func (s *fakeSink) setHold(hold func(wire.Request) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.release != nil {
		close(s.release)
	}
	s.hold, s.release = hold, make(chan struct{})
}

func holdAll(wire.Request) bool { return true }

// ---- consumer replicas ----------------------------------------------------------

type replicaOpts struct {
	window     time.Duration // default 50ms
	maxPending int
	maxMembers int
	drain      time.Duration // default 20s
	hold       func(wire.Request) bool
	reject     map[string]string
	delay      time.Duration
	// maxProcessing is consumer.Config.MaxProcessingTime (0: no hand-over
	// proofs, no wait); settle, when set, runs after the batcher's Revoke,
	// as the app's sink.Client.Settle does (handoff_kfake_test.go).
	maxProcessing time.Duration
	settle        func(context.Context) error
	lagInterval   time.Duration     // consumer.Config.LagInterval (0: its default)
	workspace     string            // consumer.Config.Workspace
	serves        func(string) bool // consumer.Config.Serves
	// parking, blocked, blockedChanged: consumer.Config.Parking, .Blocked,
	// .BlockedChanged (parking_kfake_test.go).
	parking        *consumer.Parking
	blocked        func(string) bool
	blockedChanged func() <-chan struct{}
	wrapReaders    func(tp consumer.TopicPartition, open func() (consumer.PartitionReader, error)) (consumer.PartitionReader, error)
}

// assignment is one OnAssign call, with the batcher's state at that moment
// (after the previous generation was fenced, before fetching).
type assignment struct {
	at       time.Time
	parts    map[int]bool
	total    int
	pending  int
	inFlight int
}

type replica struct {
	name string
	h    *harness
	b    *batcher.Batcher
	sink *fakeSink
	dlq  *deadletter.DLQ
	c    *consumer.Consumer
	m    *metrics.Metrics
	tr   *kafka.Transport

	mu      sync.Mutex
	assigns []assignment

	cancelRun context.CancelFunc
	runDone   chan error
	runErr    error
	stopped   bool
	stopTook  time.Duration
	cancelBg  context.CancelFunc
	bg        sync.WaitGroup
	batchErr  error
}

func (h *harness) startReplica(name string, o replicaOpts) *replica {
	h.t.Helper()
	if o.window == 0 {
		o.window = 50 * time.Millisecond
	}
	if o.drain == 0 {
		o.drain = 20 * time.Second
	}
	log := h.log.With("replica", name)
	r := &replica{name: name, h: h, m: metrics.New(prometheus.NewRegistry()), tr: &kafka.Transport{}}
	r.sink = &fakeSink{name: name, rec: h.rec, assigned: r.current, reject: o.reject, delay: o.delay}
	r.sink.setHold(o.hold)
	r.dlq = deadletter.New(deadletter.NewWriter(h.brokers, dlqTopic, r.tr, log), dlqTopic, consumer.Locate, log, r.m)
	var err error
	r.b, err = batcher.New(batcher.Config{Limits: batcher.Limits{Window: o.window, MaxPending: o.maxPending, MaxMembers: o.maxMembers},
		Sink: r.sink, DeadLetter: r.dlq.DeadLetter, Logger: log, Metrics: r.m})
	if err != nil {
		h.t.Fatal(err)
	}
	r.c, err = consumer.New(consumer.Config{
		Brokers: h.brokers, Topics: []string{topic}, GroupID: h.group, DefaultPartner: partner,
		Transport: r.tr, Batcher: settling(r.b, o.settle), DLQ: r.dlq, OnAssign: r.onAssign,
		CommitInterval: commitInterval, MaxWait: 100 * time.Millisecond,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 200 * time.Millisecond,
		RebalanceTimeout: 10 * time.Second, DrainTimeout: o.drain, MaxProcessingTime: o.maxProcessing,
		LagInterval: o.lagInterval, Workspace: o.workspace, Serves: o.serves, Logger: log, Metrics: r.m,
		Parking: o.parking, Blocked: o.blocked, BlockedChanged: o.blockedChanged,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if o.wrapReaders != nil {
		r.c.WrapReaders(o.wrapReaders)
	}
	bctx, bcancel := context.WithCancel(context.Background())
	r.cancelBg = bcancel
	r.bg.Add(2)
	go func() {
		defer r.bg.Done()
		if err := r.b.Run(bctx); err != nil && !errors.Is(err, context.Canceled) {
			r.mu.Lock()
			r.batchErr = err
			r.mu.Unlock()
		}
	}()
	go func() {
		defer r.bg.Done()
		r.dlq.Run(bctx)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancelRun, r.runDone = cancel, make(chan error, 1)
	go func() { r.runDone <- r.c.Run(ctx) }()
	h.t.Cleanup(func() {
		r.sink.setHold(nil) // a test that failed while holding must not wait out the drain
		_ = r.stop()
	})
	return r
}

func (r *replica) onAssign(assigned []consumer.TopicPartition, total int) {
	a := assignment{at: time.Now(), parts: map[int]bool{}, total: total, pending: r.b.Pending(), inFlight: r.b.InFlight()}
	for _, tp := range assigned {
		if tp.Topic == topic {
			a.parts[tp.Partition] = true
		}
	}
	r.mu.Lock()
	r.assigns = append(r.assigns, a)
	r.mu.Unlock()
}

// current is the replica's assignment now (nil before the first).
func (r *replica) current() map[int]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.assigns) == 0 {
		return nil
	}
	return r.assigns[len(r.assigns)-1].parts
}

func (r *replica) assignments() []assignment {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.assigns)
}

func (r *replica) consumed() int { return int(testutil.ToFloat64(r.m.EventsConsumed)) }

// stop cancels Run and waits for it (it drains), then stops the batcher and
// the DLQ and closes their connections. It returns Run's error.
func (r *replica) stop() error {
	t := r.h.t
	r.mu.Lock()
	if r.stopped {
		defer r.mu.Unlock()
		return r.runErr
	}
	r.stopped = true
	r.mu.Unlock()
	start := time.Now()
	r.cancelRun()
	var err error
	select {
	case err = <-r.runDone:
	case <-time.After(40 * time.Second):
		t.Errorf("%s: Run did not return 40s after cancel", r.name)
	}
	took := time.Since(start)
	r.cancelBg()
	r.bg.Wait()
	_ = r.dlq.Close()
	r.tr.CloseIdleConnections()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runErr, r.stopTook = err, took
	if r.batchErr != nil {
		t.Errorf("%s: batcher stopped: %v", r.name, r.batchErr)
	}
	return err
}

func keys(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k, v := range m {
		if v {
			out = append(out, k)
		}
	}
	sort.Ints(out)
	return out
}

func fmtFold(m map[memberKey]event.Action) string {
	ks := make([]memberKey, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].cohort != ks[j].cohort {
			return ks[i].cohort < ks[j].cohort
		}
		return ks[i].uid < ks[j].uid
	})
	var b strings.Builder
	for _, k := range ks {
		fmt.Fprintf(&b, "%s/%s=%s ", k.cohort, k.uid, m[k])
	}
	return b.String()
}

// checkFold fails unless the API's membership (the accepted requests, in
// send order) equals the fold of the log.
func checkFold(t testing.TB, got, want map[memberKey]event.Action) {
	t.Helper()
	if len(want) == 0 {
		t.Fatal("test bug: empty fold")
	}
	for k, a := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s/%s: never sent (want %s)", k.cohort, k.uid, a)
		} else if g != a {
			t.Errorf("%s/%s: the API's last change is %s, the log's is %s", k.cohort, k.uid, g, a)
		}
	}
	for k, a := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s/%s=%s sent but not in the log", k.cohort, k.uid, a)
		}
	}
	if t.Failed() {
		t.Logf("got  %s\nwant %s", fmtFold(got), fmtFold(want))
	}
}
