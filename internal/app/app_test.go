package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/cohortsync/cohortsync-worker/internal/app"
	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

type stack struct {
	brokers []string
	emu     *emulator.Emulator
	url     string
}

func newStack(t *testing.T, creds map[string]string) *stack {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "in", "in.dlq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ecfg := emulator.DefaultConfig()
	ecfg.Credentials = creds
	emu, err := emulator.New(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: emu}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &stack{brokers: c.ListenAddrs(), emu: emu, url: "http://" + ln.Addr().String()}
}

func (s *stack) config(key string) config.Config {
	cfg := config.Default()
	cfg.KafkaBrokers = s.brokers
	cfg.KafkaTopics = []string{"in"}
	cfg.KafkaGroupID = fmt.Sprint("g", time.Now().UnixNano())
	cfg.MoEngageBaseURL = s.url
	cfg.MoEngageWorkspaceID = "ws"
	cfg.MoEngageDataAPIKey = config.NewSecret(key)
	cfg.BatchWindow = 100 * time.Millisecond
	cfg.RateLimitRPM = 0
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.ShutdownTimeout = 10 * time.Second
	// The least accepted: a first start has no proof of a clean hand-over
	// and reads its partitions only this long after the assignment
	// (DESIGN.md Non-obvious 11).
	cfg.MoEngageMaxProcessingTime = 16 * time.Second
	return cfg
}

func produce(t *testing.T, brokers []string, n int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "in", Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond}
	defer w.Close()
	var msgs []kafka.Message
	for i := range n {
		ev := event.Event{Action: event.Add, Partner: "p", CohortID: fmt.Sprint("c", i%3), CohortName: "n", UIDs: []string{fmt.Sprint("u", i)}}
		msgs = append(msgs, kafka.Message{Key: []byte(ev.CohortID), Value: event.Encode(ev)})
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	rig.WaitFor(t, 20*time.Second, what, cond)
}

// TestRunEndToEnd runs the app in-process: it becomes ready, syncs the
// events, serves lint-clean metrics, drains on cancel and leaks no goroutine.
func TestRunEndToEnd(t *testing.T) {
	s := newStack(t, map[string]string{"ws": "key"})
	produce(t, s.brokers, 300)
	// Everything the app starts must be gone once Run returns (the broker,
	// the emulator and the test's producer pool were started before).
	leaks := goleak.IgnoreCurrent()
	http.DefaultClient.CloseIdleConnections()
	reg := prometheus.NewRegistry()
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Options{Config: s.config("key"), Registry: reg, Version: "test",
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Listening: func(a string) { addr <- a }})
	}()
	base := "http://" + <-addr
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	waitFor(t, "ready", func() bool { code, _ := get(t, base+"/readyz"); return code == 200 })
	rig.WaitFor(t, time.Minute, "synced (after the first start's hand-over wait)", func() bool {
		n := 0
		for _, c := range []string{"c0", "c1", "c2"} {
			n += len(s.emu.Members("ws", "p", c))
		}
		return n == 300
	})
	code, body := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, "cohortsync_events_consumed_total 300") || !strings.Contains(body, `cohortsync_build_info{goversion=`) {
		t.Fatalf("/metrics %d:\n%s", code, body)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	http.DefaultClient.CloseIdleConnections() // the test's own /metrics requests
	goleak.VerifyNone(t, leaks,
		// kfake serves each client connection with two goroutines that end
		// when it notices the close.
		goleak.IgnoreTopFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).read"),
		goleak.IgnoreTopFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).write"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).read.func1"))
}

// TestReadyOnAuthFailure: with a wrong key the line stops, but the pod
// stays ready (issue 19 §1: a rejected key is outside the pod, and an unready
// fleet stalls rollouts and drains); /readyz's body and the metrics say the
// line is stopped, and the key never appears in /metrics.
func TestReadyOnAuthFailure(t *testing.T) {
	s := newStack(t, map[string]string{"ws": "right"})
	produce(t, s.brokers, 10)
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	lw := &rig.Buffer{}
	go func() {
		cfg := s.config("wrong-key-123456")
		cfg.ShutdownTimeout = 2 * time.Second // nothing can drain while the key is rejected
		done <- app.Run(ctx, app.Options{Config: cfg, Registry: prometheus.NewRegistry(),
			Logger: slog.New(slog.NewJSONHandler(lw, nil)), Listening: func(a string) { addr <- a }})
	}()
	base := "http://" + <-addr
	waitFor(t, "a 401", func() bool {
		for _, r := range s.emu.Requests() {
			if r.Status == 401 {
				return true
			}
		}
		return false
	})
	waitFor(t, "the line stopped", func() bool {
		_, m := get(t, base+"/metrics")
		return strings.Contains(m, "cohortsync_auth_failing 1")
	})
	if code, body := get(t, base+"/readyz"); code != 200 || !strings.Contains(body, "line_stopped: true") {
		t.Fatalf("/readyz during auth failure: %d %q, want 200 naming the stopped line", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz during auth failure: %d, want 200", code)
	}
	_, m := get(t, base+"/metrics")
	if !strings.Contains(m, "cohortsync_ready 1") {
		t.Fatal("cohortsync_ready is not 1 during auth failure")
	}
	cancel()
	<-done
	if strings.Contains(m+lw.String(), "wrong-key-123456") {
		t.Fatal("the API key was printed")
	}
}

// TestProbesBrokerDown: with the broker gone, the worker's loops wait on it:
// /healthz stays 200 well past the liveness bound (a broker outage must not
// restart the pods), and so does /readyz (the pod is joining, as every
// replica would be).
func TestProbesBrokerDown(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "in", "in.dlq"))
	if err != nil {
		t.Fatal(err)
	}
	s := newStack(t, map[string]string{"ws": "key"})
	s.brokers = c.ListenAddrs()
	produce(t, s.brokers, 30)
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		cfg := s.config("key")
		cfg.ShutdownTimeout = 2 * time.Second
		done <- app.Run(ctx, app.Options{Config: cfg, Registry: prometheus.NewRegistry(), LiveBound: 300 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Listening: func(a string) { addr <- a }})
	}()
	base := "http://" + <-addr
	rig.WaitFor(t, time.Minute, "synced (after the first start's hand-over wait)", func() bool {
		n := 0
		for _, c := range []string{"c0", "c1", "c2"} {
			n += len(s.emu.Members("ws", "p", c))
		}
		return n == 30
	})
	c.Close() // the broker goes away
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, body := get(t, base+"/healthz"); code != 200 {
			t.Fatalf("/healthz with the broker down: %d %q, want 200", code, body)
		}
		if code, body := get(t, base+"/readyz"); code != 200 {
			t.Fatalf("/readyz with the broker down: %d %q, want 200", code, body)
		}
	}
	cancel()
	<-done
}
