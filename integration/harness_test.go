package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/kafkaadmin"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

const (
	workspace = "it-workspace"
	apiKey    = "it-key-5f3c9a1e"
	partner   = "it-partner"
)

var (
	brokerAddr string
	broker     testBroker        // nil when KAFKA_BROKERS names a cluster (see startBroker)
	admin      *kafkaadmin.Admin // on brokerAddr, through kafka.DefaultTransport as createTopics
	workerBin  string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("integration: skipped in -short mode")
		os.Exit(0)
	}
	os.Exit(setupAndRun(m))
}

func setupAndRun(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tmp, err := os.MkdirTemp("", "cohortsync-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(tmp)

	workerBin = filepath.Join(tmp, "cohortsync-worker")
	build := exec.CommandContext(ctx, "go", "build", "-race", "-o", workerBin, "../cmd/cohortsync-worker")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: building the worker:", err)
		return 1
	}

	start := time.Now()
	var src brokerSource
	brokerAddr, broker, src, err = startBroker(ctx, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: starting Apache Kafka:", err)
		return 1
	}
	if broker == nil {
		fmt.Printf("integration: using the cluster at %s\n", brokerAddr)
	} else {
		defer broker.Stop()
		fmt.Printf("integration: Apache Kafka %s (%s) started at %s in %s\n", broker.Version(), src, brokerAddr, time.Since(start).Round(time.Millisecond))
	}
	admin = kafkaadmin.New([]string{brokerAddr}, nil)
	return m.Run()
}

// ---- topics and events ----

var topicSeq int

// newTopic creates a fresh input topic and its dead-letter topic.
func newTopic(t *testing.T, partitions int) (topic, dlq string) {
	t.Helper()
	topicSeq++
	topic = fmt.Sprintf("it-%s-%d-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), topicSeq, time.Now().UnixNano()%1e6)
	dlq = topic + ".dlq"
	createTopics(t,
		kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1},
		kafka.TopicConfig{Topic: dlq, NumPartitions: 1, ReplicationFactor: 1})
	return topic, dlq
}

// createTopics creates topics and waits until every partition of each has a
// leader.
func createTopics(t *testing.T, topics ...kafka.TopicConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokerAddr), Timeout: 20 * time.Second}
	res, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: topics})
	if err != nil {
		t.Fatalf("create topics: %v", err)
	}
	names := make([]string, len(topics))
	for i, tc := range topics {
		names[i] = tc.Topic
		if err := res.Errors[tc.Topic]; err != nil {
			t.Fatalf("create topic %s: %v", tc.Topic, err)
		}
	}
	waitFor(t, 30*time.Second, "topic metadata", func() bool {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
		if err != nil || len(md.Topics) != len(names) {
			return false
		}
		for _, tp := range md.Topics {
			if tp.Error != nil || len(tp.Partitions) == 0 {
				return false
			}
			for _, p := range tp.Partitions {
				if p.Leader.Port == 0 {
					return false
				}
			}
		}
		return true
	})
}

type cohortKey struct{ partner, id string }

// model is the fold of the event log: the membership it implies.
type model map[cohortKey]map[string]bool

func (m model) apply(ev event.Event) {
	k := cohortKey{ev.Partner, ev.CohortID}
	if m[k] == nil {
		m[k] = map[string]bool{}
	}
	for _, u := range ev.UIDs {
		if ev.Action == event.Add {
			m[k][u] = true
		} else {
			delete(m[k], u)
		}
	}
}

// gen makes random valid events over cohorts and users.
type gen struct {
	rng     *rand.Rand
	cohorts int
	users   int
	bulk    bool // sometimes emit the bulk "uids" form
}

func newGen(seed uint64, cohorts, users int) *gen {
	return &gen{rng: rand.New(rand.NewPCG(seed, 99)), cohorts: cohorts, users: users}
}

func (g *gen) next() event.Event {
	c := g.rng.IntN(g.cohorts)
	ev := event.Event{Action: event.Add, Partner: partner, CohortID: fmt.Sprintf("cohort-%03d", c),
		CohortName: fmt.Sprintf("IT_Cohort_%03d", c)}
	if g.rng.Float64() >= 0.7 {
		ev.Action = event.Remove
	}
	n := 1
	if g.bulk && g.rng.IntN(10) == 0 {
		n = 1 + g.rng.IntN(20)
	}
	for range n {
		ev.UIDs = append(ev.UIDs, fmt.Sprintf("u%07d", g.rng.IntN(g.users)))
	}
	slices.Sort(ev.UIDs)
	ev.UIDs = slices.Compact(ev.UIDs)
	return ev
}

// producer writes events keyed by cohort_id (or uid) and folds them.
type producer struct {
	t    *testing.T
	w    *kafka.Writer
	mu   sync.Mutex
	want model
	// others holds the expected membership of each workspace other than
	// the default that events name (TestChaos with workspaces).
	others  map[string]model
	count   int // events
	changes int // member changes (a bulk event carries several)
	byUID   bool
}

func newProducer(t *testing.T, topic string) *producer {
	w := &kafka.Writer{Addr: kafka.TCP(brokerAddr), Topic: topic, Balancer: &kafka.Hash{},
		BatchTimeout: 2 * time.Millisecond, BatchSize: 1000, RequiredAcks: kafka.RequireAll}
	t.Cleanup(func() { w.Close() })
	return &producer{t: t, w: w, want: model{}}
}

// key is ev's record key: its cohort, or with byUID its uid when it
// carries one (a marker, checkLogOrder's, aside).
func (p *producer) key(ev event.Event) []byte {
	if !p.byUID {
		return []byte(ev.CohortID)
	}
	if _, uids := splitMarker(ev.UIDs); len(uids) == 1 {
		return []byte(uids[0])
	}
	return []byte(ev.CohortID)
}

// send produces events; valid ones are folded into the expected model.
func (p *producer) send(ctx context.Context, evs ...event.Event) error {
	msgs := make([]kafka.Message, len(evs))
	for i, ev := range evs {
		msgs[i] = kafka.Message{Key: p.key(ev), Value: event.Encode(ev)}
	}
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range evs {
		p.fold(ev)
		p.changes += len(ev.UIDs)
	}
	p.count += len(evs)
	return nil
}

// fold applies ev to the model of its workspace (the default when it names
// none). Call it with p.mu held.
func (p *producer) fold(ev event.Event) {
	if ev.Workspace == "" || ev.Workspace == workspace {
		p.want.apply(ev)
		return
	}
	if p.others == nil {
		p.others = map[string]model{}
	}
	if p.others[ev.Workspace] == nil {
		p.others[ev.Workspace] = model{}
	}
	p.others[ev.Workspace].apply(ev)
}

// raw produces records as they are (poison).
func (p *producer) raw(ctx context.Context, msgs ...kafka.Message) error {
	return p.w.WriteMessages(ctx, msgs...)
}

func (p *producer) sendN(t *testing.T, g *gen, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const chunk = 1000
	for n > 0 {
		k := min(n, chunk)
		evs := make([]event.Event, k)
		for i := range evs {
			evs[i] = g.next()
		}
		if err := p.send(ctx, evs...); err != nil {
			t.Fatalf("produce: %v", err)
		}
		n -= k
	}
}

// background produces at roughly rate events/s until stop is called.
func (p *producer) background(t *testing.T, g *gen, rate int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		per := max(rate/20, 1)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			evs := make([]event.Event, per)
			for i := range evs {
				evs[i] = g.next()
			}
			// Not ctx: a write cancelled half-way may still land in the log
			// without being folded into the model.
			wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
			err := p.send(wctx, evs...)
			wcancel()
			if err != nil {
				t.Errorf("background produce: %v", err)
				return
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func (p *producer) model() model { return p.modelOf(workspace) }

// modelOf returns a copy of workspace ws's expected membership.
func (p *producer) modelOf(ws string) model {
	p.mu.Lock()
	defer p.mu.Unlock()
	src := p.want
	if ws != workspace {
		src = p.others[ws]
	}
	out := model{}
	for k, v := range src {
		out[k] = map[string]bool{}
		for u := range v {
			out[k][u] = true
		}
	}
	return out
}

// ---- emulator ----

type api struct{ *rig.API }

func startAPI(t *testing.T, mutate func(*emulator.Config)) *api {
	t.Helper()
	cfg := emulator.DefaultConfig()
	cfg.Credentials = map[string]string{workspace: apiKey}
	cfg.RateLimit = 6000 // tests that exercise the real limit set it back
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := rig.ServeAPI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return &api{a}
}

// state returns the emulator's membership for our workspace.
func (a *api) state() model {
	out := model{}
	for _, s := range a.Segments() {
		if s.Workspace != workspace {
			continue
		}
		k := cohortKey{s.Partner, s.CohortID}
		out[k] = map[string]bool{}
		for _, u := range s.Members {
			out[k][u] = true
		}
	}
	return out
}

// diff describes how got differs from want ("" when equal). Cohorts that
// are empty in want may be absent or empty in got.
func diff(want, got model) string {
	var b strings.Builder
	n := 0
	for k := range keysOf(want, got) {
		for u := range want[k] {
			if !got[k][u] {
				n++
				if n <= 5 {
					fmt.Fprintf(&b, "  %s: %s missing\n", k.id, u)
				}
			}
		}
		for u := range got[k] {
			if !want[k][u] {
				n++
				if n <= 5 {
					fmt.Fprintf(&b, "  %s: %s should not be a member\n", k.id, u)
				}
			}
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d differences, e.g.\n%s", n, b.String())
}

// waitConverged waits until the emulator's state equals want.
func waitConverged(t *testing.T, a *api, want model, timeout time.Duration) {
	t.Helper()
	waitState(t, a.state, want, timeout)
}

// waitState waits until state() equals want.
func waitState(t *testing.T, state func() model, want model, timeout time.Duration) {
	t.Helper()
	waitStateExplained(t, "", state, want, timeout, nil)
}

// waitStateExplained is waitState for what (named in the failure), adding
// explain's report, if any, to the failure.
func waitStateExplained(t *testing.T, what string, state func() model, want model, timeout time.Duration, explain func(got model) string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d string
	if rig.Wait(ctx, func() bool { d = diff(want, state()); return d == "" }) != nil {
		var more string
		if explain != nil {
			more = explain(state())
		}
		t.Fatalf("%smembership did not converge in %s: %s%s", what, timeout, d, more)
	}
}

// checkRequests asserts that every request the emulator saw from the worker
// was authenticated and no larger than maxBytes, and returns the accepted ones.
func checkRequests(t *testing.T, a *api, maxBytes int) []emulator.RequestRecord {
	t.Helper()
	var ok []emulator.RequestRecord
	for _, r := range a.Requests() {
		if r.BodyBytes > maxBytes {
			t.Errorf("request %d body %d bytes > %d", r.Seq, r.BodyBytes, maxBytes)
		}
		if r.Status == 401 || r.Status == 403 || r.Status == 415 || r.Status == 400 {
			t.Errorf("request %d answered %d %s: %s", r.Seq, r.Status, r.ErrorType, r.ErrorMessage)
		}
		if r.Status == 200 {
			ok = append(ok, r)
		}
	}
	return ok
}

// ---- the worker process ----

type worker struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	out    *rig.Buffer
	done   chan struct{}
	err    error
	addr   string // HTTP address
	exited bool
}

// workerEnv is the base configuration for a worker on topic.
func workerEnv(a *api, topic, dlq, group string) map[string]string {
	env := map[string]string{
		"KAFKA_BROKERS":          brokerAddr,
		"KAFKA_TOPIC":            topic,
		"KAFKA_DLQ_TOPIC":        dlq,
		"KAFKA_GROUP_ID":         group,
		"MOENGAGE_BASE_URL":      a.URL,
		"MOENGAGE_WORKSPACE_ID":  workspace,
		"MOENGAGE_DATA_API_KEY":  apiKey,
		"BATCH_WINDOW":           "300ms",
		"RATE_LIMIT_RPM":         "6000",
		"RETRY_INITIAL_INTERVAL": "100ms",
		"RETRY_MAX_INTERVAL":     "1s",
		"HTTP_ADDR":              "127.0.0.1:0",
		"SHUTDOWN_TIMEOUT":       "20s",
		"LOG_LEVEL":              "info",
		"LOG_FORMAT":             "json",
	}
	// The least the configuration accepts: a partition taken over without
	// proof of a clean hand-over (a first start, a crash, a pause) is read
	// only this long after the assignment (DESIGN.md Non-obvious 11).
	// TestChaos, whose late fault needs the real bound, sets the default.
	env["MOENGAGE_MAX_PROCESSING_TIME"] = "16s"
	return env
}

// startWorker starts the worker binary and waits until it serves HTTP.
func startWorker(t *testing.T, name string, env map[string]string) *worker {
	t.Helper()
	w := &worker{t: t, name: name, out: &rig.Buffer{}, done: make(chan struct{})}
	w.cmd = exec.Command(workerBin)
	w.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "GORACE=halt_on_error=1"}
	for k, v := range env {
		w.cmd.Env = append(w.cmd.Env, k+"="+v)
	}
	w.cmd.Stdout = w.out
	w.cmd.Stderr = w.out
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		w.kill()
		if t.Failed() {
			t.Logf("---- worker %s output (tail) ----\n%s", name, tail(w.out.String(), 60))
		}
		if strings.Contains(w.out.String(), "WARNING: DATA RACE") {
			t.Errorf("worker %s: data race:\n%s", name, w.out.String())
		}
	})
	waitFor(t, 30*time.Second, "worker HTTP address", func() bool {
		for _, l := range w.logs() {
			if l["msg"] == "serving /metrics, /healthz, /readyz" {
				w.addr, _ = l["addr"].(string)
				return true
			}
		}
		select {
		case <-w.done:
			t.Fatalf("worker %s exited at start: %v\n%s", name, w.err, w.out.String())
		default:
		}
		return false
	})
	return w
}

// logs parses the worker's JSON log lines.
func (w *worker) logs() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(w.out.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// ready reports whether /readyz answers 200.
func (w *worker) ready() bool {
	resp, err := http.Get("http://" + w.addr + "/readyz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == 200
}

// joined reports whether /readyz says the worker is in a consumer-group
// generation (readiness does not depend on it: joining is ready too).
func (w *worker) joined() bool {
	resp, err := http.Get("http://" + w.addr + "/readyz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.Contains(string(b), "group: joined")
}

// metric returns the sum of the series selector selects on /metrics (a
// name, or a name with labels: see rig.Metrics.Samples), or -1 when
// the scrape fails.
func (w *worker) metric(selector string) float64 {
	m, err := rig.Scrape(context.Background(), "http://"+w.addr+"/metrics")
	if err != nil {
		return -1
	}
	return m.Sum(selector)
}

// stop sends SIGTERM and waits for a clean exit.
func (w *worker) stop(timeout time.Duration) error {
	if w.exited {
		return nil
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
		w.exited = true
		return w.err
	case <-time.After(timeout):
		w.kill()
		return fmt.Errorf("worker %s did not stop within %s", w.name, timeout)
	}
}

// kill sends SIGKILL (a crash) and waits for the process to go.
func (w *worker) kill() {
	if w.exited {
		return
	}
	_ = w.cmd.Process.Kill()
	<-w.done
	w.exited = true
}

// ---- Kafka helpers ----

// offsets returns the end offset and the committed offset (-1: none) of
// every partition of topic.
func offsets(ctx context.Context, topic, group string) (ends, committed map[int]int64, err error) {
	return admin.Offsets(ctx, topic, group)
}

func waitNoLag(t *testing.T, topic, group string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := rig.WaitNoLag(ctx, admin, topic, group, nil); err != nil {
		t.Fatal(err)
	}
}

// readTopic reads want records of a single-partition topic (and any one
// more that arrives within a second).
func readTopic(t *testing.T, topic string, want int, timeout time.Duration) []kafka.Message {
	t.Helper()
	return readTopicAt(t, brokerAddr, topic, want, timeout)
}

// readTopicAt is readTopic on the broker at addr.
func readTopicAt(t *testing.T, addr, topic string, want int, timeout time.Duration) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: topic, Partition: 0,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []kafka.Message
	for len(out) < want {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("reading %s: got %d of %d records: %v", topic, len(out), want, err)
		}
		out = append(out, m)
	}
	// Anything more arriving shortly after is unexpected.
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if m, err := r.ReadMessage(ctx2); err == nil {
		out = append(out, m)
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	rig.WaitFor(t, timeout, what, cond)
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// eventT names the event type for helpers in other files.
type eventT = event.Event

// readAll reads every record of topic up to its end offsets, partition
// by partition (in partition, then offset order).
func readAll(t *testing.T, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ends, _, err := offsets(ctx, topic, "none")
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	var out []kafka.Message
	for k := range len(ends) {
		if ends[k] > 0 {
			out = append(out, readPartition(ctx, t, topic, k, ends[k])...)
		}
	}
	return out
}
