package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// The chaos run: over a duration, a seeded random schedule of worker
// SIGKILLs and restarts, replicas paused (SIGSTOP) past the group's session
// timeout and resumed, replicas scaled between one and three, the broker
// killed and restarted, the broker (and so the group coordinator) stalled
// for a few seconds (SIGSTOP, or the engine's pause for a container),
// metadata requests failing during a rebalance (the workers bootstrap
// through a Kafka-aware proxy that cuts a connection sending one; the
// group leader assigns from its own counts, so the other members are hit),
// TCP faults between worker and API (latency, resets, black holes) through
// an in-process proxy, and emulator 5xx, 429 and outages — while a
// producer writes throughout, poison included. At the end the emulator's
// membership must equal the fold of the log in every workspace, the API
// must have seen every uid's changes in log order (checkLogOrder: the
// events of half the uids carry a marker) and the dead-letter topic must
// hold exactly the poison records.
//
// The emulator's late fault (on by default; CHAOS_LATE=0 turns it off): a
// share of requests is held past the worker's attempt timeout (15 s) and
// then processed all the same, within MOENGAGE_MAX_PROCESSING_TIME -- an
// outcome the worker took as unknown turns out accepted. The worker bounds
// unknown outcomes (DESIGN.md Non-obvious 11): no request a late copy could
// overtake is sent before the bound, by the same replica or by the next
// owner of its partitions (which waits unless the hand-over was proved).
//
// The suite runs a short variant. A long run:
//
//	CHAOS_DURATION=30m CHAOS_SEED=7 go test -run TestChaos -v -timeout 2h ./integration/
//
// CHAOS_SEED reproduces a schedule (the log prints the seed of every run).

// proxy forwards TCP connections to target, with faults set at run time.
type proxy struct {
	ln      net.Listener
	target  string
	latency atomic.Int64 // per chunk, nanoseconds
	reset   atomic.Bool  // accept then close new connections at once
	black   atomic.Bool  // accept and swallow: the worker's attempts time out
	// kafka makes it read the client's side as Kafka requests; while
	// failMeta is set, a connection that sends a Metadata request is cut
	// instead (the client sees a metadata error; other requests pass).
	kafka    atomic.Bool
	failMeta atomic.Bool
	mu       sync.Mutex
	conns    map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

// cut closes every open connection (a reset of everything in flight).
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *proxy) handle(c net.Conn) {
	p.track(c, true)
	defer p.track(c, false)
	defer c.Close()
	if p.reset.Load() {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		return
	}
	if p.black.Load() {
		_, _ = io.Copy(io.Discard, c)
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.track(up, true)
	defer p.track(up, false)
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if d := time.Duration(p.latency.Load()); d > 0 {
					time.Sleep(d)
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}
	if p.kafka.Load() {
		go func() { p.pipeRequests(up, c); done <- struct{}{} }()
	} else {
		go pipe(up, c)
	}
	go pipe(c, up)
	<-done
}

// apiKeyMetadata is the Kafka protocol's Metadata API key.
const apiKeyMetadata = 3

// pipeRequests copies Kafka requests (a 4-byte size, then api_key first)
// from src to dst, and returns on a Metadata request while failMeta is set:
// handle then closes both connections.
func (p *proxy) pipeRequests(dst, src net.Conn) {
	var size [4]byte
	for {
		if _, err := io.ReadFull(src, size[:]); err != nil {
			return
		}
		frame := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(src, frame); err != nil {
			return
		}
		if len(frame) >= 2 && binary.BigEndian.Uint16(frame) == apiKeyMetadata && p.failMeta.Load() {
			return
		}
		if _, err := dst.Write(append(size[:], frame...)); err != nil {
			return
		}
	}
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// staller is a broker the suite can stall (localkafka, the container).
type staller interface {
	Stall(ctx context.Context, d time.Duration) error
}

// TestBrokerStall checks the chaos run's stall: while stalled the broker
// answers nothing (a metadata request times out, the connection stays
// open), and afterwards it serves again.
func TestBrokerStall(t *testing.T) {
	s, ok := broker.(staller)
	if !ok || os.Getenv("KAFKA_BROKERS") != "" {
		t.Skip("the suite's broker cannot be stalled")
	}
	topic, _ := newTopic(t, 1)
	meta := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// A new Transport each time: kafka-go answers metadata requests
		// from a Transport's cache.
		tr := &kafka.Transport{}
		defer tr.CloseIdleConnections()
		client := &kafka.Client{Addr: kafka.TCP(brokerAddr), Transport: tr, Timeout: time.Second}
		_, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		return err
	}
	if err := meta(); err != nil {
		t.Fatalf("metadata before the stall: %v", err)
	}
	stalled := make(chan error, 1)
	go func() { stalled <- s.Stall(context.Background(), 4*time.Second) }()
	time.Sleep(500 * time.Millisecond)
	err := meta()
	if serr := <-stalled; serr != nil { // resumed before any Fatal
		t.Fatalf("stall: %v", serr)
	}
	if err == nil {
		t.Fatal("the stalled broker answered a metadata request")
	}
	t.Logf("during the stall: %v", err)
	waitFor(t, 30*time.Second, "metadata after the stall", func() bool { return meta() == nil })
}

// TestKafkaProxyMetadataErrors checks the chaos run's metadata fault:
// through a Kafka proxy with failMeta set, a metadata request fails (on a
// new Transport, which kafka-go does not answer from a cache) while other
// requests (ApiVersions, FindCoordinator) pass; without it, metadata is
// served.
func TestKafkaProxyMetadataErrors(t *testing.T) {
	kp := startProxy(t, brokerAddr)
	kp.kafka.Store(true)
	meta := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tr := &kafka.Transport{}
		defer tr.CloseIdleConnections()
		client := &kafka.Client{Addr: kafka.TCP(kp.addr()), Transport: tr}
		_, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{"x"}})
		return err
	}
	if err := meta(); err != nil {
		t.Fatalf("metadata through the proxy: %v", err)
	}
	kp.failMeta.Store(true)
	if err := meta(); err == nil {
		t.Fatal("metadata served while failMeta is set")
	} else {
		t.Logf("metadata with failMeta: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", kp.addr())
	if err != nil {
		t.Fatalf("dial through the proxy with failMeta (ApiVersions): %v", err)
	}
	defer conn.Close()
	if _, err := conn.ApiVersions(); err != nil {
		t.Fatalf("ApiVersions with failMeta: %v", err)
	}
	kp.failMeta.Store(false)
	if err := meta(); err != nil {
		t.Fatalf("metadata after failMeta: %v", err)
	}
}

func TestChaos(t *testing.T) {
	for _, keying := range []string{"cohort", "uid"} {
		t.Run("keyed-by-"+keying, func(t *testing.T) { chaos(t, keying == "uid") })
	}
}

func chaos(t *testing.T, byUID bool) {
	duration := envDuration("CHAOS_DURATION", 30*time.Second)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	late := os.Getenv("CHAOS_LATE") != "0"
	t.Logf("chaos: seed %d, duration %s, keyed by %s, late fault %v (reproduce with CHAOS_SEED=%d CHAOS_LATE=%d)", seed, duration,
		map[bool]string{true: "uid", false: "cohort_id"}[byUID], late, seed, map[bool]int{true: 1}[late])
	rng := rand.New(rand.NewPCG(seed, 1))

	topic, dlq := newTopic(t, 6)
	// Three workspaces: the default (events naming it or none) and two in
	// the registry, whose keys are revoked, removed and rotated, and whose
	// API has outages of its own, among the faults (chaosWorkspaces).
	cw := newChaosWorkspaces(t)
	a := startAPI(t, func(c *emulator.Config) {
		c.RateWindow = 10 * time.Second
		c.RateLimit = 1000
		c.Credentials = cw.credentials()
		c.RequestLogSize, c.RequestLogMaxMembers = 1_000_000, -1 // checkLogOrder reads every request of the run
	})
	cw.a = a
	px := startProxy(t, a.URL[len("http://"):])
	p := newProducer(t, topic)
	p.byUID = byUID
	g := newGen(seed, 40, 1500)
	g.bulk = !byUID                 // the bulk form carries several uids: keyed by uid only with one
	kp := startProxy(t, brokerAddr) // the workers' bootstrap: metadata errors on demand
	kp.kafka.Store(true)
	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["MOENGAGE_BASE_URL"] = "http://" + px.addr()
	env["KAFKA_BROKERS"] = kp.addr()
	env["SHUTDOWN_TIMEOUT"] = "10s"
	env["MOENGAGE_MAX_PROCESSING_TIME"] = "30s" // the default: the late fault holds a request up to 20.5 s
	env["MOENGAGE_WORKSPACES_DIR"] = cw.dir
	group := env["KAFKA_GROUP_ID"]

	var poison atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prodDone := make(chan struct{})
	go func() { // the producer: valid events throughout, a poison record now and then
		defer close(prodDone)
		prng := rand.New(rand.NewPCG(seed, 2))
		marks := 0
		for ctx.Err() == nil {
			evs := make([]kafkaEvent, 0, 20)
			for range 20 {
				ev := g.next()
				ev.Workspace = chaosNames[prng.IntN(len(chaosNames))]
				// The events of half the uids carry a marker, for
				// checkLogOrder (which judges a key only when every change
				// of it has one); the others keep the worker's single-uid
				// path (an event keyed by its one uid) in the run.
				if slices.ContainsFunc(ev.UIDs, markedUID) {
					marks++
					markEvent(&ev, marks)
				}
				evs = append(evs, kafkaEvent{ev: ev})
			}
			if prng.IntN(10) == 0 {
				evs = append(evs, kafkaEvent{poison: fmt.Sprintf(`{"action":"add","cohort_id":"x","cohort_name":"bad|name","uid":"p%d"}`, poison.Load())})
			}
			if err := sendMixed(ctx, p, evs, &poison); err != nil {
				t.Errorf("produce: %v", err)
				return
			}
			time.Sleep(25 * time.Millisecond)
		}
	}()

	// Commit watcher: the longest time a partition with lag went without a commit.
	var longest atomic.Int64
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		last := map[int]int64{}
		since := map[int]time.Time{}
		for ctx.Err() == nil {
			ends, committed, err := offsets(context.Background(), topic, group)
			now := time.Now()
			if err == nil {
				for part, c := range committed {
					if c != last[part] || ends[part] <= c {
						last[part], since[part] = c, now
					} else if s, ok := since[part]; ok {
						if d := now.Sub(s); int64(d) > longest.Load() {
							longest.Store(int64(d))
						}
					}
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
	}()

	var replicas []*worker
	n := 0
	spawn := func() {
		n++
		replicas = append(replicas, startWorker(t, fmt.Sprint("c", n), env))
	}
	spawn()
	counts := map[string]int{}
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		time.Sleep(time.Duration(1000+rng.IntN(3000)) * time.Millisecond)
		cw.restoreDue(t, false)
		switch k := rng.IntN(17); {
		case k == 0 && len(replicas) > 0: // crash one and bring it back
			i := rng.IntN(len(replicas))
			replicas[i].kill()
			replicas = append(replicas[:i], replicas[i+1:]...)
			spawn()
			counts["kill"]++
		case k == 1 && len(replicas) < 3:
			spawn()
			counts["scale-up"]++
		case k == 2 && len(replicas) > 1:
			i := rng.IntN(len(replicas))
			_ = replicas[i].stop(30 * time.Second)
			replicas = append(replicas[:i], replicas[i+1:]...)
			counts["scale-down"]++
		case k == 3 && broker != nil && os.Getenv("KAFKA_BROKERS") == "":
			if err := broker.Kill(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(500+rng.IntN(2000)) * time.Millisecond)
			rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Minute)
			if err := broker.Restart(rctx); err != nil {
				rcancel()
				t.Fatalf("broker restart: %v", err)
			}
			rcancel()
			counts["broker-restart"]++
		case k == 4:
			px.latency.Store(int64(time.Duration(50+rng.IntN(400)) * time.Millisecond))
			counts["latency"]++
		case k == 5:
			px.cut()
			px.reset.Store(true)
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
			px.reset.Store(false)
			counts["resets"]++
		case k == 6:
			px.black.Store(true)
			time.Sleep(time.Duration(1000+rng.IntN(4000)) * time.Millisecond)
			px.black.Store(false)
			px.cut()
			counts["black-hole"]++
		case k == 7:
			f := emulator.Faults{ErrorRate: 0.3 + 0.5*rng.Float64(), Force429: rng.IntN(4)}
			if err := a.SetFaults(f); err != nil {
				t.Fatal(err)
			}
			counts["5xx-429"]++
		case k == 8:
			if err := a.SetFaults(emulator.Faults{Outage: true}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(1000+rng.IntN(5000)) * time.Millisecond)
			counts["outage"]++
		case k == 9 && len(replicas) > 0: // a pause past the session timeout (10s)
			w := replicas[rng.IntN(len(replicas))]
			select {
			case <-w.done:
				t.Fatalf("worker %s exited by itself: %v", w.name, w.err)
			default:
			}
			resume := w.pause(t)
			time.Sleep(time.Duration(11000+rng.IntN(9000)) * time.Millisecond)
			resume()
			counts["pause"]++
		case k == 10: // the coordinator stops answering for a while
			d := time.Duration(2000+rng.IntN(7000)) * time.Millisecond
			if s, ok := broker.(staller); ok && os.Getenv("KAFKA_BROKERS") == "" {
				if err := s.Stall(ctx, d); err != nil {
					t.Fatalf("stall the broker: %v", err)
				}
				counts["broker-stall"]++
			}
		case k == 11: // processed after the client gave up (unless CHAOS_LATE=0)
			f := emulator.Faults{LateRate: 0.05 + 0.25*rng.Float64(),
				LateDelay: sink.DefaultAttemptTimeout + time.Duration(500+rng.IntN(5000))*time.Millisecond}
			if late {
				if err := a.SetFaults(f); err != nil {
					t.Fatal(err)
				}
				counts["late"]++
			}
		case k == 12: // metadata errors while the group rebalances: the non-leaders read the partition counts then
			if len(replicas) < 3 {
				spawn() // it joins once it serves HTTP: in the window
			}
			kp.failMeta.Store(true)
			if len(replicas) > 2 && rng.IntN(2) == 0 {
				i := rng.IntN(len(replicas))
				_ = replicas[i].stop(30 * time.Second)
				replicas = append(replicas[:i], replicas[i+1:]...)
			}
			time.Sleep(time.Duration(3000+rng.IntN(5000)) * time.Millisecond)
			kp.failMeta.Store(false)
			counts["metadata-errors"]++
		case k >= 13: // one workspace's own trouble, or a key rotation
			counts[cw.fault(t, rng, k-13)]++
		}
		if rng.IntN(3) == 0 { // faults come and go
			_ = a.SetFaults(emulator.Faults{})
			px.latency.Store(0)
		}
	}
	cancel()
	<-prodDone
	<-watchDone
	_ = a.SetFaults(emulator.Faults{})
	px.latency.Store(0)
	cw.restoreDue(t, true)
	if len(replicas) == 0 {
		spawn()
	}
	for i, ws := range append([]string{workspace}, cw.ids...) {
		want, timeout := p.modelOf(ws), time.Minute
		if i == 0 {
			timeout = 3 * time.Minute
		}
		waitStateExplained(t, ws+": ", func() model { return wsState(a, ws) }, want, timeout, func(got model) string {
			return explainDiff(t, a, topic, group, ws, want, got, replicas)
		})
	}
	waitNoLag(t, topic, group, 2*time.Minute)
	// The API saw every uid's changes in log order, in every workspace,
	// through the crashes, pauses, rebalances, parking and late answers.
	checkLogOrder(t, a, topic, workspace, append([]string{workspace}, cw.ids...)...)

	// The dead-letter topic holds the poison records: each one at least
	// once (a crash between the dead-letter write and the commit repeats one).
	want := int(poison.Load())
	got := readAll(t, dlq)
	seen := map[string]bool{}
	for _, m := range got {
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		if h[deadletter.HeaderReason] != "forbidden_character" {
			t.Errorf("dead letter with reason %q: %s", h[deadletter.HeaderReason], m.Value)
		}
		seen[string(m.Value)] = true
	}
	if len(seen) != want {
		t.Fatalf("dead-letter topic holds %d distinct poison records, %d were produced", len(seen), want)
	}
	accepted, members, lateApplied := 0, 0, 0
	for _, r := range a.Requests() {
		if r.Status == 200 {
			accepted++
			members += len(r.Members)
		}
		if r.Fault == emulator.FaultLate && r.Applied && r.Status == 0 {
			lateApplied++ // applied after its client had gone
		}
	}
	retries, countsFailed := 0.0, 0
	for _, w := range replicas {
		retries += w.metric("cohortsync_retries_total")
		for _, l := range w.logs() {
			if strings.HasPrefix(fmt.Sprint(l["msg"]), "reading the partition counts failed") {
				countsFailed++
			}
		}
	}
	t.Logf("chaos: %d events (%d poison, %d dead letters), %d requests (%d accepted, %d members sent for %d member changes: %d sent more than once; %d applied after the client gave up), faults %v, longest partition without a commit %s, retries on the surviving replicas %.0f, partition counts unread at an assignment %d",
		p.count, want, len(got), len(a.Requests()), accepted, members, p.changes, members-p.changes, lateApplied, counts,
		time.Duration(longest.Load()).Round(100*time.Millisecond), retries, countsFailed)
	for _, w := range replicas {
		if err := w.stop(30 * time.Second); err != nil {
			t.Errorf("stopping %s: %v", w.name, err)
		}
	}
}

// markedUID reports whether the events naming uid carry a marker in
// TestChaos: for half the uids, by a hash.
func markedUID(uid string) bool {
	h := fnv.New32a()
	h.Write([]byte(uid))
	return h.Sum32()%2 == 0
}

type kafkaEvent struct {
	ev     eventT
	poison string
}

// sendMixed produces valid events (folded into the model) and poison
// records in order. A failed write is retried until it succeeds: with the
// broker being killed, a write that reported an error may still be in the
// log, and the retry only repeats it right after itself, which changes
// neither the fold nor the set of poison records.
func sendMixed(_ context.Context, p *producer, evs []kafkaEvent, poison *atomic.Int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, e := range evs {
		for {
			var err error
			if e.poison != "" {
				err = p.raw(ctx, kafka.Message{Key: []byte("poison"), Value: []byte(e.poison)})
			} else {
				err = p.send(ctx, e.ev)
			}
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return err
			}
			time.Sleep(200 * time.Millisecond)
		}
		if e.poison != "" {
			poison.Add(1)
		}
	}
	return nil
}
