//go:build linux

package localkafka

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
)

// requireJavaKafka skips tests that run a real broker in -short mode, with
// LOCALKAFKA_SKIP set, or when java (or, with a cold jar cache, mvn) is
// missing.
func requireJavaKafka(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("localkafka: -short: skipping test that runs a real Kafka broker (needs java 17+ and mvn or cached jars)")
	}
	if os.Getenv("LOCALKAFKA_SKIP") != "" {
		t.Skip("localkafka: LOCALKAFKA_SKIP is set: skipping test that runs a real Kafka broker")
	}
	if _, err := javaPath(); err != nil {
		t.Skipf("localkafka: skipping test that runs a real Kafka broker: %v", err)
	}
	if _, err := exec.LookPath("mvn"); err != nil {
		o, err2 := Options{}.withDefaults()
		if err2 != nil || !fetched(filepath.Join(o.CacheDir, "kafka-"+o.Version), o.Version) {
			t.Skipf("localkafka: skipping test that runs a real Kafka broker: jars not cached and mvn not found: %v", err)
		}
	}
}

// testLogger sends slog output to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestBrokerLifecycle(t *testing.T) {
	requireJavaKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	goroutines := runtime.NumGoroutine()

	start := time.Now()
	b, err := Start(ctx, Options{Logger: testLogger(t), Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start took %s (Kafka %s at %s)", time.Since(start).Round(time.Millisecond), b.Version(), b.Addr())
	t.Cleanup(func() { _ = b.Stop() })
	pid1, dataDir := b.PID(), b.DataDir()
	if pid1 == 0 || !b.Running() {
		t.Fatal("broker not running after Start")
	}
	if !strings.HasPrefix(b.Addr(), "127.0.0.1:") || b.Addr() == b.ControllerAddr() {
		t.Fatalf("addresses: %s %s", b.Addr(), b.ControllerAddr())
	}
	if !logContains(t, b, "Kafka Server started") {
		t.Error("broker.log lacks Kafka's log lines: is the slf4j binding missing?")
	}

	const topic = "localkafka-test"
	if err := b.CreateTopic(ctx, topic, 3); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateTopic(ctx, topic, 3); !errors.Is(err, kafka.TopicAlreadyExists) {
		t.Fatalf("second CreateTopic: %v, want TopicAlreadyExists", err)
	}

	want := produce(ctx, t, b.Addr(), topic, 0, 10)
	if got := consumeGroup(ctx, t, b.Addr(), topic, "g1", len(want)); !sameSet(got, want) {
		t.Fatalf("g1 read %v, want %v", got, want)
	}

	// Hard kill and restart: same ports, data and committed offsets.
	start = time.Now()
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Restart (SIGKILL + start) took %s", time.Since(start).Round(time.Millisecond))
	if alive(pid1) {
		t.Fatalf("old JVM %d still alive after Restart", pid1)
	}
	pid2 := b.PID()
	if pid2 == 0 || pid2 == pid1 {
		t.Fatalf("PID after Restart: %d (before %d)", pid2, pid1)
	}
	if got := consumeGroup(ctx, t, b.Addr(), topic, "g2", len(want)); !sameSet(got, want) {
		t.Fatalf("after restart, g2 read %v, want %v", got, want)
	}
	more := produce(ctx, t, b.Addr(), topic, 10, 1)
	if got := consumeGroup(ctx, t, b.Addr(), topic, "g1", 1); !sameSet(got, more) {
		t.Fatalf("after restart, g1 resumed with %v, want %v (committed offsets lost?)", got, more)
	}

	// Graceful stop keeping data, then restart.
	start = time.Now()
	if err := b.Terminate(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Terminate (SIGTERM) took %s", time.Since(start).Round(time.Millisecond))
	if b.Running() || alive(pid2) {
		t.Fatal("JVM alive after Terminate")
	}
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := consumeGroup(ctx, t, b.Addr(), topic, "g3", len(want)+1); !sameSet(got, append(want, more...)) {
		t.Fatalf("after terminate+restart, g3 read %v", got)
	}

	pid3 := b.PID()
	start = time.Now()
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop took %s", time.Since(start).Round(time.Millisecond))
	if alive(pid3) {
		t.Fatalf("JVM %d alive after Stop", pid3)
	}
	if pids := jvmsUsing(dataDir); len(pids) > 0 {
		t.Fatalf("stray JVMs using %s: %v", dataDir, pids)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp data dir not removed: %v", err)
	}
	if err := b.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := b.Restart(ctx); err == nil {
		t.Fatal("Restart after Stop succeeded")
	}
	checkGoroutines(t, goroutines)
}

// TestCrashedGoProcessLeavesNoJVM starts a broker in a child test process
// that then exits without Stop, and checks that the kernel killed the JVM.
func TestCrashedGoProcessLeavesNoJVM(t *testing.T) {
	if os.Getenv("LOCALKAFKA_CRASH_HELPER") == "1" {
		b, err := Start(context.Background(), Options{})
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		fmt.Printf("PID %d %s\n", b.PID(), b.DataDir())
		os.Exit(3) // "crash": no Stop
	}
	requireJavaKafka(t)
	if runtime.GOOS != "linux" {
		t.Skip("parent-death signal is Linux-only")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashedGoProcessLeavesNoJVM$")
	cmd.Env = append(os.Environ(), "LOCALKAFKA_CRASH_HELPER=1")
	out, _ := cmd.Output()
	var pid int
	var dir string
	if _, err := fmt.Sscanf(lastLine(string(out), "PID "), "PID %d %s", &pid, &dir); err != nil {
		t.Fatalf("helper output: %q", out)
	}
	defer os.RemoveAll(dir)
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) && !zombie(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("JVM %d survived its Go parent", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStartFailureReportsLog(t *testing.T) {
	requireJavaKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "kafka")
	_, err := Start(ctx, Options{DataDir: dir, ExtraConfig: map[string]string{"num.partitions": "lots"}})
	if err == nil {
		t.Fatal("Start with a broken config succeeded")
	}
	t.Logf("error (as expected): %v", err)
	if !strings.Contains(err.Error(), "num.partitions") {
		t.Fatalf("error lacks the broker's complaint: %v", err)
	}
	if pids := jvmsUsing(dir); len(pids) > 0 {
		t.Fatalf("stray JVMs: %v", pids)
	}
	if _, err := os.Stat(filepath.Join(dir, brokerLogName)); err != nil {
		t.Fatalf("caller's data dir lost its log: %v", err)
	}
}

func TestPersistentDataDir(t *testing.T) {
	requireJavaKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "kafka")
	b, err := Start(ctx, Options{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	addr, id := b.Addr(), b.ClusterID()
	if err := b.CreateTopic(ctx, "kept", 1); err != nil {
		t.Fatal(err)
	}
	want := produce(ctx, t, addr, "kept", 0, 3)
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "meta.properties")); err != nil {
		t.Fatalf("caller's data dir removed: %v", err)
	}

	b, err = Start(ctx, Options{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	if b.Addr() != addr || b.ClusterID() != id {
		t.Fatalf("second start: %s %s, want %s %s", b.Addr(), b.ClusterID(), addr, id)
	}
	if got := consumeGroup(ctx, t, b.Addr(), "kept", "p", len(want)); !sameSet(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}

	// A Restart that fails (someone took the port) reports the broker log,
	// leaves no JVM, and a later Restart works.
	if err := b.Terminate(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	err = b.Restart(ctx)
	l.Close()
	if err == nil || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("Restart on a taken port: %v", err)
	}
	if b.Running() || len(jvmsUsing(dir)) > 0 {
		t.Fatal("JVM left after failed Restart")
	}
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := consumeGroup(ctx, t, b.Addr(), "kept", "q", len(want)); !sameSet(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
}

// TestExtraSASLListener checks the extension point for security tests: an
// extra listener from Options.Listeners configured through ExtraConfig.
func TestExtraSASLListener(t *testing.T) {
	requireJavaKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := Start(ctx, Options{
		Logger:    testLogger(t),
		Listeners: []Listener{{Name: "SASL_PLAINTEXT"}},
		ExtraConfig: map[string]string{
			"listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN",
			"listener.name.sasl_plaintext.plain.sasl.jaas.config": `org.apache.kafka.common.security.plain.PlainLoginModule required ` +
				`username="admin" password="admin-secret" user_admin="admin-secret" user_app="app-secret";`,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	addr := b.ListenerAddr("SASL_PLAINTEXT")
	if addr == "" || addr == b.Addr() {
		t.Fatalf("SASL listener address %q", addr)
	}
	if err := b.CreateTopic(ctx, "secure", 1); err != nil {
		t.Fatal(err)
	}
	write := func(password string) error {
		tr := &kafka.Transport{SASL: plain.Mechanism{Username: "app", Password: password}}
		defer tr.CloseIdleConnections()
		w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: "secure", Transport: tr, BatchTimeout: time.Millisecond}
		defer w.Close()
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		return w.WriteMessages(wctx, kafka.Message{Value: []byte("hello")})
	}
	if err := write("app-secret"); err != nil {
		t.Fatalf("write with the right password: %v", err)
	}
	if err := write("wrong"); err == nil {
		t.Fatal("write with a wrong password succeeded")
	} else {
		t.Logf("wrong password (as expected): %v", err)
	}
}

func TestStartPortInUse(t *testing.T) {
	requireJavaKafka(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	_, err = Start(ctx, Options{Port: port})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Start on a taken port: %v", err)
	}
	t.Logf("failed in %s: %v", time.Since(start).Round(time.Millisecond), err)
}

func TestFetchConcurrentColdCache(t *testing.T) {
	requireJavaKafka(t)
	if _, err := exec.LookPath("mvn"); err != nil {
		t.Skip("mvn not in PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var logs bytes.Buffer
	var mu sync.Mutex
	o := Options{CacheDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))}
	const n = 3
	dirs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() { dirs[i], errs[i] = Fetch(ctx, o) })
	}
	wg.Wait()
	t.Logf("%d concurrent cold-cache fetches took %s", n, time.Since(start).Round(time.Millisecond))
	for i := range n {
		if errs[i] != nil || dirs[i] != dirs[0] {
			t.Fatalf("fetch %d: %q, %v", i, dirs[i], errs[i])
		}
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if c := strings.Count(out, "fetching Kafka jars with Maven"); c != 1 {
		t.Errorf("mvn ran %d times:\n%s", c, out)
	}
	start = time.Now()
	if d, err := Fetch(ctx, o); err != nil || d != dirs[0] {
		t.Fatalf("cached fetch: %q, %v", d, err)
	}
	t.Logf("cached fetch took %s", time.Since(start))
	entries, _ := os.ReadDir(dirs[0])
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	for _, want := range []string{"kafka_2.13-" + DefaultVersion + ".jar", "log4j-slf4j-impl-2.25.5.jar", "log4j-core-2.25.5.jar", "slf4j-api-1.7.36.jar"} {
		if os.Getenv(EnvVersion) == "" && !slices.Contains(names, want) {
			t.Errorf("%s missing from %v", want, names)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(dirs[0]), "fetch-*"))
	if len(leftovers) > 0 {
		t.Errorf("temp dirs left: %v", leftovers)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// produce writes n messages keyed k<first>..k<first+n-1> and returns their values.
func produce(ctx context.Context, t *testing.T, addr, topic string, first, n int) []string {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Addr:         kafka.TCP(addr),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 10 * time.Millisecond,
		Transport:    tr,
	}
	defer w.Close()
	var msgs []kafka.Message
	var vals []string
	for i := first; i < first+n; i++ {
		v := "v" + strconv.Itoa(i)
		msgs = append(msgs, kafka.Message{Key: []byte("k" + strconv.Itoa(i)), Value: []byte(v)})
		vals = append(vals, v)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(wctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
	return vals
}

// consumeGroup reads n messages as consumer group group (from the committed
// offsets, or the start of the topic), commits them and returns their values.
func consumeGroup(ctx context.Context, t *testing.T, addr, topic, group string, n int) []string {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        []string{addr},
		Topic:          topic,
		GroupID:        group,
		StartOffset:    kafka.FirstOffset,
		MaxWait:        500 * time.Millisecond,
		CommitInterval: 0,
	})
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var vals []string
	for len(vals) < n {
		m, err := r.FetchMessage(rctx)
		if err != nil {
			t.Fatalf("group %s: fetch after %d of %d messages: %v", group, len(vals), n, err)
		}
		if err := r.CommitMessages(rctx, m); err != nil {
			t.Fatalf("group %s: commit: %v", group, err)
		}
		vals = append(vals, string(m.Value))
	}
	return vals
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func logContains(t *testing.T, b *Broker, s string) bool {
	data, err := os.ReadFile(b.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(data, []byte(s))
}

// alive reports whether a process with this pid exists.
func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// zombie reports whether pid is an exited, not yet reaped process.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 {
		return s[i+2] == 'Z'
	}
	return false
}

// jvmsUsing lists live processes whose command line mentions dir (Linux).
func jvmsUsing(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || zombie(pid) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func lastLine(out, prefix string) string {
	var last string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			last = sc.Text()
		}
	}
	return last
}

// checkGoroutines fails if more goroutines run than before the test, after
// giving kafka-go's background goroutines a few seconds to wind down.
func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the test:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkStart measures Start (with cached jars) on a fresh temp data dir;
// Stop is not timed. Run: go test -run '^$' -bench Start -benchtime 3x.
func BenchmarkStart(b *testing.B) {
	requireJavaKafka(b)
	ctx := context.Background()
	if _, err := Fetch(ctx, Options{}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		br, err := Start(ctx, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := br.Stop(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
