package localkafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Broker is a running (or stopped) single-node Apache Kafka: one JVM in
// KRaft combined mode (broker and controller), listening on 127.0.0.1.
// Its methods are safe for concurrent use.
type Broker struct {
	o       Options
	libs    string
	java    string
	dataDir string
	ownsDir bool // dataDir is a temp dir that Stop removes
	st      state

	mu      sync.Mutex
	proc    *process // nil when no JVM is running
	stopped bool     // Stop was called
	stopErr error
	exitErr error // how the last JVM ended on its own (not via Kill/Terminate/Stop)
}

// process is one JVM run.
type process struct {
	cmd      *exec.Cmd
	done     chan struct{} // closed when the JVM has exited and been reaped
	err      error         // Wait's error, valid after done
	signaled bool          // we signalled it (so its exit is expected)
}

// Start fetches the jars (see Fetch), writes server.properties for a
// combined KRaft node on free loopback ports (PLAINTEXT and CONTROLLER, or
// the ports in opts), formats the storage, starts the JVM and waits until
// the broker answers a metadata request listing itself and its group
// coordinator answers (which creates __consumer_offsets, so a first consumer
// group join does not stall). The broker's output goes to LogPath. On failure everything started is cleaned up and the error
// includes the tail of the broker log. ctx bounds the start only, not the
// broker's life: call Stop.
func Start(ctx context.Context, opts Options) (*Broker, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	java, err := javaPath()
	if err != nil {
		return nil, err
	}
	begin := time.Now()
	libs, err := fetch(ctx, o)
	if err != nil {
		return nil, err
	}
	b := &Broker{o: o, libs: libs, java: java, dataDir: o.DataDir}
	if b.dataDir == "" {
		if b.dataDir, err = os.MkdirTemp("", "localkafka-"); err != nil {
			return nil, fmt.Errorf("localkafka: %w", err)
		}
		b.ownsDir = true
	} else if err := os.MkdirAll(b.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("localkafka: %w", err)
	}

	// A port picked as free may be taken before the JVM binds it; retry
	// with new ports then (only if we chose them and formatted afresh).
	for attempt := 1; ; attempt++ {
		autoPorts, err := b.prepare(ctx)
		if err == nil {
			err = b.launch(ctx)
		}
		if err == nil {
			o.Logger.Info("localkafka: broker started", "addr", b.Addr(), "version", o.Version,
				"took", time.Since(begin).Round(time.Millisecond), "log", b.LogPath())
			return b, nil
		}
		if autoPorts && attempt < 3 && errors.Is(err, errAddrInUse) && ctx.Err() == nil {
			o.Logger.Info("localkafka: port taken, retrying with new ports", "err", err)
			_ = os.RemoveAll(filepath.Join(b.dataDir, kafkaDataName))
			_ = os.Remove(filepath.Join(b.dataDir, stateName))
			continue
		}
		_ = b.Stop()
		return nil, err
	}
}

var errAddrInUse = errors.New("address already in use")

// prepare settles the cluster id and ports, writes the config files and
// formats the storage if needed. autoPorts tells whether the ports were
// picked here (so that a bind failure may be retried with others).
func (b *Broker) prepare(ctx context.Context) (autoPorts bool, err error) {
	o := b.o
	prev, err := loadState(b.dataDir)
	if err != nil {
		return false, fmt.Errorf("localkafka: %w", err)
	}
	isFormatted := formatted(b.dataDir)
	st := state{ClusterID: o.ClusterID, Port: o.Port, ControllerPort: o.ControllerPort, Listeners: map[string]int{}}
	for _, l := range o.Listeners {
		st.Listeners[l.Name] = l.Port
	}
	if isFormatted && prev != nil { // reuse what the data dir was formatted with
		if st.ClusterID == "" {
			st.ClusterID = prev.ClusterID
		}
		if st.Port == 0 {
			st.Port = prev.Port
		}
		if st.ControllerPort == 0 {
			st.ControllerPort = prev.ControllerPort
		}
		for name, p := range st.Listeners {
			if p == 0 {
				st.Listeners[name] = prev.Listeners[name]
			}
		}
	}
	if isFormatted && prev == nil {
		return false, fmt.Errorf("localkafka: %s holds formatted Kafka storage but no %s: use an empty or localkafka-made data dir", b.dataDir, stateName)
	}
	if st.ClusterID == "" {
		if st.ClusterID, err = newClusterID(); err != nil {
			return false, fmt.Errorf("localkafka: cluster id: %w", err)
		}
	}
	if !validClusterID(st.ClusterID) {
		return false, fmt.Errorf("localkafka: invalid cluster id %q (want 22 characters of URL-safe base64)", st.ClusterID)
	}
	// A fixed (or remembered) port must be free now; free ports are picked
	// for the others.
	allAuto := true
	// Picked ports stay bound until all are picked, so that no two
	// listeners get the same one.
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	pick := func(p *int) error {
		if *p != 0 {
			allAuto = false
			if !portFree(*p) {
				return fmt.Errorf("port %d on 127.0.0.1 is in use", *p)
			}
			return nil
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		held = append(held, l)
		*p = l.Addr().(*net.TCPAddr).Port
		return nil
	}
	if err := pick(&st.Port); err != nil {
		return false, fmt.Errorf("localkafka: %w", err)
	}
	if err := pick(&st.ControllerPort); err != nil {
		return false, fmt.Errorf("localkafka: %w", err)
	}
	for _, l := range o.Listeners {
		p := st.Listeners[l.Name]
		if err := pick(&p); err != nil {
			return false, fmt.Errorf("localkafka: %w", err)
		}
		st.Listeners[l.Name] = p
	}
	autoPorts = allAuto && !isFormatted // never reformat existing storage
	if err := checkDistinctPorts(st); err != nil {
		return false, err
	}
	b.st = st

	for _, d := range []string{kafkaDataName, kafkaLogsName} {
		if err := os.MkdirAll(filepath.Join(b.dataDir, d), 0o755); err != nil {
			return false, fmt.Errorf("localkafka: %w", err)
		}
	}
	if err := os.WriteFile(b.serverProps(), renderProperties(serverConfig(o, &st, b.dataDir)), 0o644); err != nil {
		return false, fmt.Errorf("localkafka: %w", err)
	}
	if err := os.WriteFile(filepath.Join(b.dataDir, log4jName), []byte(log4jConfig), 0o644); err != nil {
		return false, fmt.Errorf("localkafka: %w", err)
	}
	if !isFormatted {
		if err := b.format(ctx); err != nil {
			return false, err
		}
	}
	if err := st.save(b.dataDir); err != nil {
		return false, fmt.Errorf("localkafka: %w", err)
	}
	return autoPorts, nil
}

func checkDistinctPorts(st state) error {
	seen := map[int]bool{st.Port: true}
	ports := []int{st.ControllerPort}
	for _, p := range st.Listeners {
		ports = append(ports, p)
	}
	for _, p := range ports {
		if seen[p] {
			return fmt.Errorf("localkafka: port %d used by two listeners", p)
		}
		seen[p] = true
	}
	return nil
}

// format runs `kafka-storage format --standalone` on the data dir.
func (b *Broker) format(ctx context.Context) error {
	start := time.Now()
	args := append(b.toolJVMArgs(), "kafka.tools.StorageTool", "format", "--standalone",
		"-t", b.st.ClusterID, "-c", b.serverProps())
	cmd := exec.CommandContext(ctx, b.java, args...)
	cmd.Dir = b.dataDir
	cmd.SysProcAttr = sysProcAttr()
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	b.appendLog("=== localkafka: kafka-storage format ===\n", out.Bytes())
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("localkafka: format storage: %w", ctx.Err())
		}
		return fmt.Errorf("localkafka: format storage: %w; output:\n%s", err, tail(out.Bytes(), 30))
	}
	b.o.Logger.Info("localkafka: formatted storage", "cluster_id", b.st.ClusterID, "dir", b.dataDir,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// appendLog appends a header and data to broker.log (best effort).
func (b *Broker) appendLog(header string, data []byte) {
	f, err := os.OpenFile(b.LogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = io.WriteString(f, header)
	_, _ = f.Write(data)
}

func (b *Broker) serverProps() string { return filepath.Join(b.dataDir, serverPropsName) }

// jvmArgs are the broker's JVM flags: those of Kafka's own
// kafka-server-start.sh (1 GB heap, G1), the log settings and classpath,
// then Options.JVMArgs.
func (b *Broker) jvmArgs() []string {
	return b.javaArgs("-Xms1G", "-Xmx1G",
		"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
		"-XX:+ExplicitGCInvokesConcurrent")
}

// toolJVMArgs are the flags for the short-lived kafka-storage tool: Kafka's
// tool heap (256 MB) and, to start faster, only the C1 JIT and serial GC.
func (b *Broker) toolJVMArgs() []string {
	return b.javaArgs("-Xmx256M", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
}

func (b *Broker) javaArgs(vmFlags ...string) []string {
	args := append(vmFlags,
		"-Djava.awt.headless=true",
		"-Dkafka.logs.dir="+filepath.Join(b.dataDir, kafkaLogsName),
		"-Dlog4j2.configurationFile="+filepath.Join(b.dataDir, log4jName),
	)
	args = append(args, b.o.JVMArgs...)
	return append(args, "-cp", filepath.Join(b.libs, "*"))
}

// launch starts the JVM and waits until the broker is ready; on failure the
// JVM is killed. It does not lock b.mu: Start calls it before b is shared,
// Restart with b.mu held.
func (b *Broker) launch(ctx context.Context) error {
	logf, err := os.OpenFile(b.LogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("localkafka: %w", err)
	}
	fmt.Fprintf(logf, "=== localkafka: starting broker at %s ===\n", time.Now().Format(time.RFC3339Nano))
	args := append(b.jvmArgs(), "kafka.Kafka", b.serverProps())
	cmd := exec.Command(b.java, args...)
	cmd.Dir = b.dataDir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	p := &process{cmd: cmd, done: make(chan struct{})}

	// Pdeathsig fires when the *thread* that forked the child exits, so fork
	// from a goroutine locked to its thread that lives until the JVM exits.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			logf.Close()
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("localkafka: start %s: %w", b.java, err)
	}
	b.proc = p
	b.exitErr = nil
	b.o.Logger.Info("localkafka: JVM started, waiting for the broker", "pid", cmd.Process.Pid, "addr", b.Addr())

	if err := b.waitReady(ctx, p); err != nil {
		b.killProc(p)
		b.proc = nil
		logTail := b.logTail(40)
		if strings.Contains(logTail, "Address already in use") {
			err = fmt.Errorf("%w (%w)", err, errAddrInUse)
		}
		return fmt.Errorf("%w\n--- tail of %s ---\n%s", err, b.LogPath(), logTail)
	}
	return nil
}

// waitReady polls the broker until it lists itself in a metadata response
// (it is then registered and unfenced) and its group coordinator answers, or
// the JVM exits, ctx ends or StartTimeout passes.
func (b *Broker) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, b.o.StartTimeout)
	defer cancel()
	start := time.Now()
	var lastErr error
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		md, err := b.metadata(pctx, nil)
		pcancel()
		if err == nil {
			err = errors.New("broker not yet registered")
			for _, br := range md.Brokers {
				if br.ID == nodeID {
					err = nil
				}
			}
		}
		if err == nil {
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			err = b.groupCoordinatorReady(pctx)
			pcancel()
			if err == nil {
				b.o.Logger.Info("localkafka: broker ready", "addr", b.Addr(), "waited", time.Since(start).Round(time.Millisecond))
				return nil
			}
		}
		lastErr = err
		select {
		case <-p.done:
			return fmt.Errorf("localkafka: broker exited during startup: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("localkafka: broker not ready after %s (last probe: %v): %w",
				time.Since(start).Round(time.Millisecond), lastErr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// groupCoordinatorReady checks that the group coordinator answers, which
// creates __consumer_offsets on a new broker. Without this, the first
// consumer group join fails with "coordinator not available" while the topic
// is being created, and kafka-go's Reader then waits JoinGroupBackoff (5 s).
func (b *Broker) groupCoordinatorReady(ctx context.Context) error {
	t := &kafka.Transport{DialTimeout: time.Second}
	defer t.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(b.Addr()), Transport: t}
	fc, err := c.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: "localkafka-probe", KeyType: kafka.CoordinatorKeyTypeConsumer})
	if err == nil {
		err = fc.Error
	}
	if err != nil {
		return fmt.Errorf("group coordinator: %w", err)
	}
	dg, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{"localkafka-probe"}})
	if err == nil && len(dg.Groups) == 1 {
		err = dg.Groups[0].Error
	}
	if err != nil {
		return fmt.Errorf("group coordinator: %w", err)
	}
	return nil
}

// metadata sends one Metadata request over a fresh connection (kafka-go's
// Transport would answer from its cache and keep pooled connections across
// restarts).
func (b *Broker) metadata(ctx context.Context, topics []string) (*kafka.MetadataResponse, error) {
	t := &kafka.Transport{DialTimeout: time.Second}
	defer t.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(b.Addr()), Transport: t}
	return c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
}

// Addr returns the PLAINTEXT bootstrap address, "127.0.0.1:PORT".
func (b *Broker) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.st.Port) }

// ControllerAddr returns the KRaft controller listener address.
func (b *Broker) ControllerAddr() string { return "127.0.0.1:" + strconv.Itoa(b.st.ControllerPort) }

// ListenerAddr returns the address of the extra listener named name (see
// Options.Listeners), or "" if there is none.
func (b *Broker) ListenerAddr(name string) string {
	p, ok := b.st.Listeners[name]
	if !ok {
		return ""
	}
	return "127.0.0.1:" + strconv.Itoa(p)
}

// Version returns the Apache Kafka version the broker runs.
func (b *Broker) Version() string { return b.o.Version }

// ClusterID returns the KRaft cluster id the storage was formatted with.
func (b *Broker) ClusterID() string { return b.st.ClusterID }

// DataDir returns the directory holding the config, the log and the data.
func (b *Broker) DataDir() string { return b.dataDir }

// LogPath returns the file receiving the broker's stdout and stderr (and the
// storage format output): DataDir/broker.log.
func (b *Broker) LogPath() string { return filepath.Join(b.dataDir, brokerLogName) }

// logTail returns the last n lines of broker.log.
func (b *Broker) logTail(n int) string {
	f, err := os.Open(b.LogPath())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	const max = 64 << 10
	fi, err := f.Stat()
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	off := fi.Size() - max
	if off < 0 {
		off = 0
	}
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return "(no log: " + err.Error() + ")"
	}
	return tail(buf, n)
}

// javaPath finds java: $JAVA_HOME/bin/java, else java in PATH.
func javaPath() (string, error) {
	if home := os.Getenv("JAVA_HOME"); home != "" {
		p := filepath.Join(home, "bin", "java")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("java")
	if err != nil {
		return "", fmt.Errorf("localkafka: java (17+) not found in JAVA_HOME or PATH: %w", err)
	}
	return p, nil
}
