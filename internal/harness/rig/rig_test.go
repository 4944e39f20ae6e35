package rig_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/harness/kafkaadmin"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

// fakeTB records a failure instead of ending the test.
type fakeTB struct{ failed string }

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

var _ rig.TB = (testing.TB)(nil)

func TestWaitFor(t *testing.T) {
	start := time.Now()
	rig.WaitFor(t, 5*time.Second, "30 ms to pass", func() bool { return time.Since(start) > 30*time.Millisecond })
	var f fakeTB
	rig.WaitFor(&f, 20*time.Millisecond, "never", func() bool { return false })
	if !strings.Contains(f.failed, "timed out after 20ms waiting for never") {
		t.Errorf("failure %q", f.failed)
	}
}

func TestPollReturnsCondError(t *testing.T) {
	boom := errors.New("boom")
	if err := rig.Poll(t.Context(), func() (bool, error) { return false, boom }); err != boom {
		t.Errorf("Poll = %v, want %v", err, boom)
	}
}

func registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "requests_total", Help: "h"}, []string{"action", "code"})
	reqs.WithLabelValues("add", "200").Add(3)
	reqs.WithLabelValues("add", "429").Add(2)
	reqs.WithLabelValues("remove", "200").Add(5)
	pending := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pending", Help: "h"})
	pending.Set(7)
	size := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "batch_members", Help: "h"})
	size.Observe(4)
	size.Observe(6)
	reg.MustRegister(reqs, pending, size)
	return reg
}

// Scraped over HTTP (text format) and gathered in process, a registry
// reads the same.
func TestMetrics(t *testing.T) {
	reg := registry()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	scraped, err := rig.Scrape(t.Context(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	gathered, err := rig.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []rig.Metrics{scraped, gathered} {
		for sel, want := range map[string]float64{
			"requests_total":                          10,
			`requests_total{code="200"}`:              8,
			`requests_total{action="add",code="429"}`: 2,
			`requests_total{code="200",action="add"}`: 3,
			`requests_total{action="none"}`:           0,
			"pending":                                 7,
			"batch_members":                           10,
			"absent_total":                            0,
		} {
			if got := m.Sum(sel); got != want {
				t.Errorf("Sum(%s) = %v, want %v", sel, got, want)
			}
		}
		if s := m.Samples("batch_members"); len(s) != 1 || s[0].Count != 2 {
			t.Errorf("batch_members samples %+v, want one of count 2", s)
		}
	}
	if _, err := rig.Scrape(t.Context(), srv.URL+"/x\x7f"); err == nil {
		t.Error("Scrape of a bad URL: no error")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a bad selector did not panic")
			}
		}()
		scraped.Sum(`requests_total{code=200}`)
	}()
}

func TestScrapeStatus(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, err := rig.Scrape(t.Context(), srv.URL); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Scrape of a 404: %v", err)
	}
}

func TestBuffer(t *testing.T) {
	var b rig.Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprint(&b, "x")
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := len(b.String()); n != 400 {
		t.Errorf("%d bytes, want 400", n)
	}
}

func TestRunAndNoLeaks(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	r := rig.Start(t.Context(), func(ctx context.Context) error {
		<-ctx.Done()
		go func() { time.Sleep(100 * time.Millisecond) }() // ends a little after
		return errors.New("stopped")
	})
	if err := r.Stop(); err == nil || err.Error() != "stopped" {
		t.Errorf("Stop = %v", err)
	}
	if err := r.Stop(); err == nil {
		t.Error("a second Stop lost the error")
	}
	rig.NoLeaks(t, 5*time.Second, leaks)

	stop := make(chan struct{})
	defer close(stop)
	go func() { <-stop }()
	var f fakeTB
	rig.NoLeaks(&f, 100*time.Millisecond, leaks)
	if !strings.Contains(f.failed, "goroutines still running after 100ms") {
		t.Errorf("failure %q", f.failed)
	}
}

func TestWaitNoLag(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	admin := kafkaadmin.New(c.ListenAddrs(), tr)
	client := &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...), Transport: tr}
	w := &kafka.Writer{Addr: client.Addr, Topic: "t", Transport: tr, Balancer: &kafka.RoundRobin{}, BatchTimeout: time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(t.Context(), kafka.Message{Value: []byte("a")}, kafka.Message{Value: []byte("b")}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err = rig.WaitNoLag(ctx, admin, "t", "g", nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "lag 2") {
		t.Errorf("WaitNoLag with lag 2 = %v", err)
	}
	stopped := make(chan struct{})
	close(stopped)
	if err := rig.WaitNoLag(t.Context(), admin, "t", "g", stopped); !errors.Is(err, rig.ErrStopped) {
		t.Errorf("WaitNoLag with the consumer stopped = %v", err)
	}

	ends, _, err := admin.Offsets(t.Context(), "t", "g")
	if err != nil {
		t.Fatal(err)
	}
	commit := map[string][]kafka.OffsetCommit{}
	for p, end := range ends {
		commit["t"] = append(commit["t"], kafka.OffsetCommit{Partition: p, Offset: end})
	}
	if _, err := client.OffsetCommit(t.Context(), &kafka.OffsetCommitRequest{GroupID: "g", GenerationID: -1, Topics: commit}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := rig.WaitNoLag(ctx, admin, "t", "g", nil); err != nil {
		t.Errorf("WaitNoLag after committing the ends = %v", err)
	}
}

func TestServeAPI(t *testing.T) {
	cfg := emulator.DefaultConfig()
	cfg.Credentials = map[string]string{"ws": "key"}
	a, err := rig.ServeAPI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(a.URL + emulator.AdminPrefix + "healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz: %s", resp.Status)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(a.URL + emulator.AdminPrefix + "healthz"); err == nil {
		t.Error("still serving after Close")
	}
}
