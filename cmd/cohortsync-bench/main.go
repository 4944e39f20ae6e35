// Command cohortsync-bench measures the worker against its two ceilings in
// one run, on a real Apache Kafka broker (started from Maven Central, or the
// cluster named by KAFKA_BROKERS) and the in-process emulator:
//
//	a. a bare kafka-go reader consuming the topic: the input ceiling;
//	b. the worker over the same topic with no rate limit, until its lag is
//	   zero, and its ratio to (a): against an emulator that keeps no segment
//	   membership (the API's bookkeeping is not the worker's work, and here
//	   it would share the worker's cores), and again, as (b'), against one
//	   that keeps it;
//	c. the worker at RATE_LIMIT_RPM=300 over a backlog, with one replica and
//	   with three: requests in the busiest 60-second window, requests/min
//	   over the run ÷ 300, and mean body bytes ÷ BATCH_MAX_BYTES (packing);
//	d. the worker's peak RSS with MAX_PENDING_MEMBERS members pending;
//	dl. its peak RSS with the API down and every partition full of 900 KB
//	   records (the consumer's byte bound, not the member bound, holds it);
//	e. under a light steady load, p50/p99 time from produce to acceptance.
//
// It prints a table and writes the same figures as JSON.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/app"
	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/kafkaadmin"
	"github.com/cohortsync/cohortsync-worker/internal/localkafka"
)

type options struct {
	events       int
	cohorts      int
	partitions   int
	backlog      int
	backlogCoh   int
	rateRun      time.Duration
	pending      int
	latencyRate  int
	latencyRun   time.Duration
	latencyCoh   int
	memLimit     string
	largeRecords int
	window       time.Duration
	out          string
	phases       string
	cpuprofile   string
	repeat       int
}

type results struct {
	Machine      string      `json:"machine"`
	KafkaVersion string      `json:"kafka_version"`
	Events       int         `json:"events"`
	Cohorts      int         `json:"cohorts"`
	Partitions   int         `json:"partitions"`
	BareReader   *throughput `json:"bare_reader,omitempty"` // the median run
	Worker       *throughput `json:"worker_unlimited,omitempty"`
	WorkerRatio  float64     `json:"worker_to_bare_ratio,omitempty"` // median of the runs' ratios
	BareRuns     []float64   `json:"bare_reader_runs_events_per_second,omitempty"`
	WorkerRuns   []float64   `json:"worker_runs_events_per_second,omitempty"`
	RatioRuns    []float64   `json:"ratio_runs,omitempty"`
	// (b) again against an emulator that keeps every segment's members, as
	// the other phases do: the bookkeeping then runs on the same cores.
	WorkerState      *throughput         `json:"worker_unlimited_emulator_state,omitempty"`
	WorkerStateRatio float64             `json:"worker_emulator_state_to_bare_ratio,omitempty"`
	WorkerStateRuns  []float64           `json:"worker_emulator_state_runs_events_per_second,omitempty"`
	StateRatioRuns   []float64           `json:"ratio_emulator_state_runs,omitempty"`
	RateLimited      []rateResult        `json:"rate_limited,omitempty"`
	PeakRSS          *rssResult          `json:"peak_rss,omitempty"`
	PeakRSSLimited   *rssResult          `json:"peak_rss_with_gomemlimit,omitempty"`
	LargeRecords     *largeRecordsResult `json:"peak_rss_large_records,omitempty"`
	Latency          *latencyResult      `json:"latency,omitempty"`
	Targets          map[string]verdict  `json:"targets"`
}

type throughput struct {
	Events   int     `json:"events"`
	Seconds  float64 `json:"seconds"`
	PerSec   float64 `json:"events_per_second"`
	Requests int     `json:"requests,omitempty"`
	// For the worker: from its first fetched record to the last member
	// accepted (the throughput compared with the bare reader), and the
	// wall time from start to a zero lag (with the group join and the
	// one-second commit cadence).
	FirstFetchSeconds float64 `json:"first_fetch_seconds,omitempty"`
	AllReadSeconds    float64 `json:"all_read_seconds,omitempty"`
	AllAcceptedSecs   float64 `json:"all_accepted_seconds,omitempty"`
	LastRequestSecs   float64 `json:"last_request_seconds,omitempty"`
	RequestsAfterRead int     `json:"requests_after_all_read,omitempty"`
	LagZeroSeconds    float64 `json:"lag_zero_seconds,omitempty"`
}

type rateResult struct {
	Replicas      int     `json:"replicas"`
	Seconds       float64 `json:"seconds"`
	Requests      int     `json:"requests"`
	Busiest60s    int     `json:"busiest_60s_window"`
	PerMinOverRPM float64 `json:"requests_per_min_over_budget"`
	Packing       float64 `json:"packing"`
	MeanBodyBytes float64 `json:"mean_body_bytes"`
	Rejected429   int     `json:"answered_429"`
}

type rssResult struct {
	PendingMembers int     `json:"pending_members"`
	PeakRSSMiB     float64 `json:"peak_rss_mib"`
	GOMEMLIMIT     string  `json:"gomemlimit,omitempty"`
}

type latencyResult struct {
	Cohorts int     `json:"cohorts"`
	Rate    int     `json:"events_per_second"`
	Samples int     `json:"samples"`
	P50     float64 `json:"p50_seconds"`
	P99     float64 `json:"p99_seconds"`
	Window  float64 `json:"batch_window_seconds"`
}

type verdict struct {
	Target string `json:"target"`
	Value  string `json:"value"`
	Met    bool   `json:"met"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("cohortsync-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.events, "events", 1_000_000, "events for (a) and (b)")
	fs.IntVar(&o.cohorts, "cohorts", 1000, "cohorts for (a), (b) and (e)")
	fs.IntVar(&o.partitions, "partitions", 6, "partitions of the benchmark topics")
	fs.IntVar(&o.backlog, "backlog", 3_000_000, "backlog events for (c): enough for full bodies at the budget for the whole run, with 25% to spare")
	fs.IntVar(&o.backlogCoh, "backlog-cohorts", 24, "cohorts of the (c) backlog: few, so that full bodies exist; spread evenly over the partitions, so that no replica's backlog runs out first")
	fs.DurationVar(&o.rateRun, "rate-run", 75*time.Second, "how long each (c) run lasts (over 60 s, for the busiest-window figure)")
	fs.IntVar(&o.pending, "pending", 1_000_000, "MAX_PENDING_MEMBERS for (d)")
	fs.IntVar(&o.latencyRate, "latency-rate", 50, "events per second for (e)")
	fs.DurationVar(&o.latencyRun, "latency-run", 30*time.Second, "how long (e) produces")
	fs.IntVar(&o.latencyCoh, "latency-cohorts", 3, "cohorts of the (e) load: light means few requests per window (the budget is 5/s)")
	fs.StringVar(&o.memLimit, "memlimit", "200MiB", "GOMEMLIMIT of the second (d) run (empty: skip it)")
	fs.IntVar(&o.largeRecords, "large-records", 150, "records of 900 KB per partition for (dl)")
	fs.DurationVar(&o.window, "window", time.Second, "BATCH_WINDOW for (e)")
	fs.StringVar(&o.out, "out", "bench-results/bench.json", "where the JSON goes")
	fs.StringVar(&o.phases, "phases", "a,b,c,d,dl,e", "which phases to run")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of phase (b) to this file (its first run)")
	fs.IntVar(&o.repeat, "repeat", 3, "runs of (a) and (b), alternating over the same topic; the figures are the medians, the ratio the median of the runs' ratios")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	say := func(format string, a ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", a...) }
	phase := func(p string) bool { return slices.Contains(strings.Split(o.phases, ","), p) }

	res := &results{Events: o.events, Cohorts: o.cohorts, Partitions: o.partitions, Targets: map[string]verdict{}}
	host, _ := os.Hostname()
	res.Machine = fmt.Sprintf("%s, %d cores", host, numCPU())
	brokers, version, stopKafka, err := kafkaCluster(ctx, log)
	if err != nil {
		return err
	}
	defer stopKafka()
	res.KafkaVersion = version
	say("Kafka %s at %s", version, strings.Join(brokers, ","))

	topic := fmt.Sprintf("bench-%d", time.Now().Unix())
	if phase("a") || phase("b") {
		if err := kafkaadmin.New(brokers, nil).CreateTopics(ctx, o.partitions, topic, topic+".dlq"); err != nil {
			return err
		}
		start := time.Now()
		if err := produce(ctx, brokers, topic, o.events, cohortIDs(o.cohorts), 1); err != nil {
			return err
		}
		say("produced %d events in %s", o.events, time.Since(start).Round(time.Millisecond))
	}
	if phase("a") || phase("b") {
		// Alternating runs over the same topic: on a shared machine one run
		// can be slowed by a neighbour, and a pair run back to back sees
		// about the same machine.
		var bares, workers, states []*throughput
		for i := range max(o.repeat, 1) {
			var a, b, st *throughput
			if phase("a") {
				if a, err = bareReader(ctx, brokers, topic, o.events); err != nil {
					return err
				}
				bares = append(bares, a)
				res.BareRuns = append(res.BareRuns, a.PerSec)
				say("(a) bare reader, run %d: %.0f events/s", i+1, a.PerSec)
			}
			if phase("b") {
				if b, err = workerUnlimited(ctx, brokers, topic, fmt.Sprintf("bench-unlimited-%s-%d", topic, i), false, i == 0, o, log); err != nil {
					return err
				}
				workers = append(workers, b)
				res.WorkerRuns = append(res.WorkerRuns, b.PerSec)
				say("(b) worker, no rate limit, run %d: %.0f events/s", i+1, b.PerSec)
				if st, err = workerUnlimited(ctx, brokers, topic, fmt.Sprintf("bench-unlimited-state-%s-%d", topic, i), true, false, o, log); err != nil {
					return err
				}
				states = append(states, st)
				res.WorkerStateRuns = append(res.WorkerStateRuns, st.PerSec)
				say("(b) worker, no rate limit, emulator keeping members, run %d: %.0f events/s", i+1, st.PerSec)
			}
			if a != nil && b != nil {
				res.RatioRuns = append(res.RatioRuns, b.PerSec/a.PerSec)
				res.StateRatioRuns = append(res.StateRatioRuns, st.PerSec/a.PerSec)
			}
		}
		res.BareReader, res.Worker, res.WorkerState = medianRun(bares), medianRun(workers), medianRun(states)
		if len(res.RatioRuns) > 0 {
			res.WorkerRatio = median(res.RatioRuns)
			res.WorkerStateRatio = median(res.StateRatioRuns)
			res.Targets["b/a"] = verdict{">= 0.7", fmt.Sprintf("%.2f", res.WorkerRatio), res.WorkerRatio >= 0.7}
		}
	}
	if phase("c") {
		for _, replicas := range []int{1, 3} {
			rr, err := rateLimited(ctx, brokers, o, replicas, log, say)
			if err != nil {
				return err
			}
			res.RateLimited = append(res.RateLimited, *rr)
			say("(c) %d replica(s): busiest 60 s %d requests, %.3f of the budget, packing %.3f", replicas, rr.Busiest60s, rr.PerMinOverRPM, rr.Packing)
			k := fmt.Sprintf("c/%d", replicas)
			res.Targets[k+" packing"] = verdict{">= 0.97", fmt.Sprintf("%.3f", rr.Packing), rr.Packing >= 0.97}
			res.Targets[k+" budget"] = verdict{"0.95..1.00, busiest 60 s <= 300", fmt.Sprintf("%.3f, %d", rr.PerMinOverRPM, rr.Busiest60s),
				rr.PerMinOverRPM >= 0.95 && rr.PerMinOverRPM <= 1.0 && rr.Busiest60s <= 300}
		}
	}
	if phase("d") {
		rss, err := peakRSS(ctx, brokers, o, "", say)
		if err != nil {
			return err
		}
		res.PeakRSS = rss
		say("(d) peak RSS %.1f MiB with %d members pending", rss.PeakRSSMiB, rss.PendingMembers)
		res.Targets["d"] = verdict{"<= 256 MiB", fmt.Sprintf("%.1f MiB", rss.PeakRSSMiB), rss.PeakRSSMiB <= 256}
		if o.memLimit != "" {
			rss, err := peakRSS(ctx, brokers, o, o.memLimit, say)
			if err != nil {
				return err
			}
			res.PeakRSSLimited = rss
			say("(d) with GOMEMLIMIT=%s: peak RSS %.1f MiB", o.memLimit, rss.PeakRSSMiB)
			res.Targets["d, GOMEMLIMIT="+o.memLimit] = verdict{"<= 256 MiB", fmt.Sprintf("%.1f MiB", rss.PeakRSSMiB), rss.PeakRSSMiB <= 256}
		}
	}
	if phase("dl") {
		lr, err := peakRSSLarge(ctx, brokers, o, o.largeRecords, 900_000)
		if err != nil {
			return err
		}
		res.LargeRecords = lr
		say("(d-large) peak RSS %.1f MiB, %d of %d records of %d bytes read", lr.PeakRSSMiB, lr.Consumed, lr.Records, lr.RecordBytes)
		res.Targets["d-large"] = verdict{"<= 256 MiB", fmt.Sprintf("%.1f MiB", lr.PeakRSSMiB), lr.PeakRSSMiB <= 256}
	}
	if phase("e") {
		lr, err := latency(ctx, brokers, o, log)
		if err != nil {
			return err
		}
		res.Latency = lr
		say("(e) latency p50 %.3fs p99 %.3fs", lr.P50, lr.P99)
		res.Targets["e"] = verdict{fmt.Sprintf("p99 <= %.1fs", lr.Window+1), fmt.Sprintf("%.3fs", lr.P99), lr.P99 <= lr.Window+1}
	}
	printTable(stdout, res)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(o.out, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nJSON: %s\n", o.out)
	return nil
}

// median returns the median of xs (the lower middle one of an even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// medianRun returns the run with the median throughput, or nil.
func medianRun(runs []*throughput) *throughput {
	if len(runs) == 0 {
		return nil
	}
	s := slices.Clone(runs)
	slices.SortFunc(s, func(a, b *throughput) int { return cmp.Compare(a.PerSec, b.PerSec) })
	return s[(len(s)-1)/2]
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}

func kafkaCluster(ctx context.Context, log *slog.Logger) ([]string, string, func(), error) {
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		return strings.Split(env, ","), "external", func() {}, nil
	}
	b, err := localkafka.Start(ctx, localkafka.Options{Logger: log, JVMArgs: nil})
	if err != nil {
		return nil, "", nil, err
	}
	return []string{b.Addr()}, b.Version(), func() { _ = b.Stop() }, nil
}

// uid returns a 10-character uid.
func uid(rng *rand.Rand) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var b [10]byte
	for i := range b {
		b[i] = letters[rng.IntN(len(letters))]
	}
	return string(b[:])
}

// cohortIDs returns the cohort ids cohort-0000 … of n cohorts.
func cohortIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("cohort-%04d", i)
	}
	return ids
}

// balancedCohortIDs returns n cohort ids that the producer's balancer
// (kafka.Hash on the cohort_id key) spreads evenly over the partitions:
// the first ids of the sequence cohort-0000 … that keep every partition's
// count within ceil(n/partitions).
func balancedCohortIDs(n, partitions int) []string {
	parts := make([]int, partitions)
	for i := range parts {
		parts[i] = i
	}
	per := (n + partitions - 1) / partitions
	count := make([]int, partitions)
	var ids []string
	for i := 0; len(ids) < n; i++ {
		id := fmt.Sprintf("cohort-%04d", i)
		p := (&kafka.Hash{}).Balance(kafka.Message{Key: []byte(id)}, parts...)
		if count[p] < per {
			count[p]++
			ids = append(ids, id)
		}
	}
	return ids
}

// produce writes n events over the cohorts ids (70% adds, 10-character
// uids) keyed by cohort_id.
func produce(ctx context.Context, brokers []string, topic string, n int, ids []string, seed uint64) error {
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		BatchSize: 5000, BatchBytes: 4 << 20, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireOne,
		Compression: kafka.Lz4}
	defer w.Close()
	const workers = 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	per := n / workers
	for g := range workers {
		count := per
		if g == workers-1 {
			count = n - per*(workers-1)
		}
		wg.Add(1)
		go func(g, count int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			msgs := make([]kafka.Message, 0, 5000)
			for i := 0; i < count; i++ {
				id := ids[rng.IntN(len(ids))]
				ev := event.Event{Action: event.Add, Partner: "bench", CohortID: id,
					CohortName: "Bench_" + id, UIDs: []string{uid(rng)}}
				if rng.Float64() >= 0.7 {
					ev.Action = event.Remove
				}
				msgs = append(msgs, kafka.Message{Key: []byte(ev.CohortID), Value: event.Encode(ev)})
				if len(msgs) == cap(msgs) || i == count-1 {
					if err := w.WriteMessages(ctx, msgs...); err != nil {
						errs <- err
						return
					}
					msgs = msgs[:0]
				}
			}
		}(g, count)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// bareReader reads every record of topic with one kafka-go Reader per
// partition (as the worker does) and nothing else.
func bareReader(ctx context.Context, brokers []string, topic string, want int) (*throughput, error) {
	parts, err := kafkaadmin.New(brokers, nil).Partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	var total atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	ends, err := kafkaadmin.New(brokers, nil).EndOffsets(ctx, topic, parts)
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p,
				MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 500 * time.Millisecond})
			defer r.Close()
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					return
				}
				total.Add(1)
				if m.Offset+1 >= ends[p] {
					return
				}
			}
		}(p)
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	n := int(total.Load())
	if n < want {
		return nil, fmt.Errorf("bare reader read %d of %d", n, want)
	}
	return &throughput{Events: n, Seconds: secs, PerSec: float64(n) / secs}, nil
}

// api runs an in-process emulator.
type api struct {
	*emulator.Emulator
	url   string
	close func()
}

// startAPI starts an emulator; discard keeps no segment membership.
func startAPI(rateLimit int, faults emulator.Faults, discard bool) (*api, error) {
	cfg := emulator.DefaultConfig()
	cfg.DiscardMembers = discard
	cfg.Credentials = map[string]string{"bench": "bench-key"}
	cfg.RateLimit = rateLimit
	cfg.RequestLogMaxMembers = -1 // every record kept: the counts must be complete
	cfg.Faults = faults
	e, err := emulator.New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: e}
	go func() { _ = srv.Serve(ln) }()
	return &api{Emulator: e, url: "http://" + ln.Addr().String(), close: func() { _ = srv.Close() }}, nil
}

func workerConfig(brokers []string, topic, group, url string) config.Config {
	cfg := config.Default()
	cfg.KafkaBrokers = brokers
	cfg.KafkaTopics = []string{topic}
	cfg.KafkaGroupID = group
	cfg.MoEngageBaseURL = url
	cfg.MoEngageWorkspaceID = "bench"
	cfg.MoEngageDataAPIKey = config.NewSecret("bench-key")
	cfg.HTTPAddr = ""
	cfg.ShutdownTimeout = 30 * time.Second
	return cfg
}

type inproc struct {
	cancel context.CancelFunc
	done   chan error
	reg    *prometheus.Registry
}

func startWorker(ctx context.Context, cfg config.Config, replica string, log *slog.Logger) *inproc {
	wctx, cancel := context.WithCancel(ctx)
	w := &inproc{cancel: cancel, done: make(chan error, 1), reg: prometheus.NewRegistry()}
	go func() {
		w.done <- app.Run(wctx, app.Options{Config: cfg, Logger: log, Registry: w.reg, ReplicaID: replica, Version: "bench"})
	}()
	return w
}

// gauge reads one unlabelled metric of the in-process worker.
func (w *inproc) metric(name string) float64 {
	mfs, _ := w.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return 0
}

func (w *inproc) stop() error { w.cancel(); return <-w.done }

func waitLag(ctx context.Context, brokers []string, topic, group string, done <-chan error) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-done:
			return fmt.Errorf("worker stopped: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if lag, err := kafkaadmin.New(brokers, nil).GroupLag(ctx, topic, group); err == nil && lag == 0 {
			return nil
		}
	}
}

// workerUnlimited runs the worker over topic, in consumer group group, with
// no rate limit until its lag is zero. The emulator keeps no membership
// unless keepMembers: its bookkeeping is the API's work, not the worker's,
// and here it would run on the same cores. profile says whether to write
// the CPU profile asked for.
func workerUnlimited(ctx context.Context, brokers []string, topic, group string, keepMembers, profile bool, o options, log *slog.Logger) (*throughput, error) {
	a, err := startAPI(0, emulator.Faults{}, !keepMembers)
	if err != nil {
		return nil, err
	}
	defer a.close()
	cfg := workerConfig(brokers, topic, group, a.url)
	cfg.RateLimitRPM = 0
	cfg.BatchWindow = 200 * time.Millisecond
	if profile && o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
		runtime.SetBlockProfileRate(10000)
		runtime.SetMutexProfileFraction(5)
		defer func() {
			for _, p := range []string{"block", "mutex"} {
				if pf, err := os.Create(o.cpuprofile + "." + p); err == nil {
					_ = pprof.Lookup(p).WriteTo(pf, 0)
					pf.Close()
				}
			}
		}()
	}
	start := time.Now()
	w := startWorker(ctx, cfg, "b", log)
	var first, allRead, allAccepted time.Time
	watch := make(chan struct{})
	go func() { // samples the worker's own metrics every 5 ms
		defer close(watch)
		for allAccepted.IsZero() && ctx.Err() == nil {
			now := time.Now()
			consumed := w.metric("cohortsync_events_consumed_total")
			if first.IsZero() && consumed > 0 {
				first = now
			}
			if allRead.IsZero() && consumed >= float64(o.events) {
				allRead = now
			}
			if !allRead.IsZero() && w.metric("cohortsync_pending_members") == 0 && w.metric("cohortsync_in_flight_requests") == 0 {
				allAccepted = now
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	err = waitLag(ctx, brokers, topic, cfg.KafkaGroupID, w.done)
	lagZero := time.Since(start).Seconds()
	<-watch
	_ = w.stop()
	if err != nil {
		return nil, err
	}
	busy := allAccepted.Sub(first).Seconds()
	reqs := a.Requests()
	tp := &throughput{Events: o.events, Seconds: busy, PerSec: float64(o.events) / busy, Requests: len(reqs),
		FirstFetchSeconds: first.Sub(start).Seconds(), AllReadSeconds: allRead.Sub(start).Seconds(),
		AllAcceptedSecs: allAccepted.Sub(start).Seconds(), LagZeroSeconds: lagZero}
	for _, r := range reqs {
		if r.Time.After(allRead) {
			tp.RequestsAfterRead++
		}
		tp.LastRequestSecs = max(tp.LastRequestSecs, r.Time.Sub(start).Seconds())
	}
	return tp, nil
}

// rateLimited runs replicas at RATE_LIMIT_RPM=300 over a fresh backlog for
// o.rateRun and measures the requests the emulator saw.
func rateLimited(ctx context.Context, brokers []string, o options, replicas int, log *slog.Logger, say func(string, ...any)) (*rateResult, error) {
	topic := fmt.Sprintf("bench-rate%d-%d", replicas, time.Now().Unix())
	if err := kafkaadmin.New(brokers, nil).CreateTopics(ctx, o.partitions, topic, topic+".dlq"); err != nil {
		return nil, err
	}
	if err := produce(ctx, brokers, topic, o.backlog, balancedCohortIDs(o.backlogCoh, o.partitions), uint64(replicas)+10); err != nil {
		return nil, err
	}
	a, err := startAPI(300, emulator.Faults{}, false)
	if err != nil {
		return nil, err
	}
	defer a.close()
	cfg := workerConfig(brokers, topic, "bench-rate-"+topic, a.url)
	cfg.RateLimitRPM = 300
	var ws []*inproc
	for i := range replicas {
		ws = append(ws, startWorker(ctx, cfg, fmt.Sprint("r", i), log))
	}
	say("(c) %d replica(s) over a backlog of %d events for %s…", replicas, o.backlog, o.rateRun)
	// The run is measured from the first request on, so that the group's
	// join time does not count against the budget.
	var first time.Time
	for first.IsZero() {
		if rs := a.Requests(); len(rs) > 0 {
			first = rs[0].Time
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-time.After(time.Until(first.Add(o.rateRun))):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	reqs := a.Requests()
	for _, w := range ws {
		w.cancel()
	}
	var in []emulator.RequestRecord
	end := first.Add(o.rateRun)
	for _, r := range reqs {
		if r.Time.Before(end) {
			in = append(in, r)
		}
	}
	for _, w := range ws {
		<-w.done
	}
	rr := &rateResult{Replicas: replicas, Seconds: o.rateRun.Seconds(), Requests: len(in)}
	var bodies, ok int
	for i, r := range in {
		if r.Status == 429 {
			rr.Rejected429++
		}
		if r.Status == 200 {
			bodies += r.BodyBytes
			ok++
		}
		n := 0
		for _, s := range in[i:] {
			if s.Time.Sub(r.Time) < time.Minute {
				n++
			}
		}
		rr.Busiest60s = max(rr.Busiest60s, n)
	}
	rr.PerMinOverRPM = float64(len(in)) / o.rateRun.Minutes() / 300
	if ok > 0 {
		rr.MeanBodyBytes = float64(bodies) / float64(ok)
		rr.Packing = rr.MeanBodyBytes / float64(cfg.BatchMaxBytes)
	}
	return rr, nil
}

// peakRSS runs the worker binary against an API that accepts nothing, so
// that MAX_PENDING_MEMBERS members end up pending, and reads its peak RSS.
func peakRSS(ctx context.Context, brokers []string, o options, memLimit string, say func(string, ...any)) (*rssResult, error) {
	topic := fmt.Sprintf("bench-rss-%d", time.Now().Unix())
	if err := kafkaadmin.New(brokers, nil).CreateTopics(ctx, o.partitions, topic, topic+".dlq"); err != nil {
		return nil, err
	}
	if err := produce(ctx, brokers, topic, o.pending+o.pending/10, cohortIDs(o.cohorts), 77); err != nil {
		return nil, err
	}
	env := []string{"MAX_PENDING_MEMBERS=" + strconv.Itoa(o.pending)}
	if memLimit != "" {
		env = append(env, "GOMEMLIMIT="+memLimit)
	}
	say("(d) filling %d pending members…", o.pending)
	pending := 0.0
	mib, err := rssWorker(ctx, brokers, topic, env, func(url string) bool {
		pending = scrape(url, "cohortsync_pending_members")
		return pending >= float64(o.pending)
	})
	if err != nil {
		return nil, fmt.Errorf("(d) %.0f members pending: %w", pending, err)
	}
	return &rssResult{PendingMembers: int(pending), PeakRSSMiB: mib, GOMEMLIMIT: memLimit}, nil
}

func scrape(url, name string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
			return v
		}
	}
	return 0
}

// latency produces a light steady load of unique uids and measures, for
// each, the time from produce to the emulator's acceptance.
func latency(ctx context.Context, brokers []string, o options, log *slog.Logger) (*latencyResult, error) {
	topic := fmt.Sprintf("bench-latency-%d", time.Now().Unix())
	if err := kafkaadmin.New(brokers, nil).CreateTopics(ctx, o.partitions, topic, topic+".dlq"); err != nil {
		return nil, err
	}
	a, err := startAPI(300, emulator.Faults{}, false)
	if err != nil {
		return nil, err
	}
	defer a.close()
	cfg := workerConfig(brokers, topic, "bench-latency-"+topic, a.url)
	cfg.BatchWindow = o.window
	w := startWorker(ctx, cfg, "l", log)
	defer w.stop()
	time.Sleep(3 * time.Second) // joined
	wr := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireOne}
	defer wr.Close()
	sent := map[string]time.Time{}
	rng := rand.New(rand.NewPCG(5, 5))
	tick := time.NewTicker(time.Second / time.Duration(o.latencyRate))
	stopAt := time.Now().Add(o.latencyRun)
	for time.Now().Before(stopAt) {
		<-tick.C
		c := rng.IntN(o.latencyCoh)
		u := uid(rng)
		ev := event.Event{Action: event.Add, Partner: "bench", CohortID: fmt.Sprintf("cohort-%04d", c), CohortName: "Latency", UIDs: []string{u}}
		t := time.Now()
		if err := wr.WriteMessages(ctx, kafka.Message{Key: []byte(ev.CohortID), Value: event.Encode(ev)}); err != nil {
			return nil, err
		}
		sent[u] = t
	}
	tick.Stop()
	time.Sleep(o.window + 3*time.Second)
	var lat []float64
	for _, r := range a.Requests() {
		if r.Status != 200 {
			continue
		}
		for _, m := range r.Members {
			if t, ok := sent[m]; ok {
				lat = append(lat, r.Time.Sub(t).Seconds())
				delete(sent, m)
			}
		}
	}
	if len(lat) == 0 {
		return nil, errors.New("no accepted member observed")
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return lat[min(int(p*float64(len(lat))), len(lat)-1)] }
	if len(sent) > 0 {
		return nil, fmt.Errorf("%d of %d events not accepted %s after the load ended", len(sent), len(sent)+len(lat), o.window+3*time.Second)
	}
	return &latencyResult{Cohorts: o.latencyCoh, Rate: o.latencyRate, Samples: len(lat), P50: q(0.5), P99: q(0.99), Window: o.window.Seconds()}, nil
}

// runs formats a run list as "x / y / z".
func runs(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, " / ")
}

func printTable(w io.Writer, r *results) {
	fmt.Fprintf(w, "\ncohortsync-worker benchmark — %s, Apache Kafka %s, %d partitions\n\n", r.Machine, r.KafkaVersion, r.Partitions)
	fmt.Fprintf(w, "%-48s %s\n", "figure", "value")
	row := func(k, v string) { fmt.Fprintf(w, "%-48s %s\n", k, v) }
	if r.BareReader != nil {
		row("(a) bare kafka-go reader", fmt.Sprintf("%.0f events/s (%d events, %.2fs; median of runs %s)", r.BareReader.PerSec, r.BareReader.Events, r.BareReader.Seconds, runs(r.BareRuns, "%.0f")))
	}
	if r.Worker != nil {
		row("(b) worker, no rate limit", fmt.Sprintf("%.0f events/s (first fetch to last acceptance %.2fs, %d requests)", r.Worker.PerSec, r.Worker.Seconds, r.Worker.Requests))
		row("(b) from start: first fetch / all read / all accepted / lag 0", fmt.Sprintf("%.2fs / %.2fs / %.2fs / %.2fs",
			r.Worker.FirstFetchSeconds, r.Worker.AllReadSeconds, r.Worker.AllAcceptedSecs, r.Worker.LagZeroSeconds))
		row("(b) last request received / requests after all read", fmt.Sprintf("%.2fs / %d", r.Worker.LastRequestSecs, r.Worker.RequestsAfterRead))
		row("(b) runs", runs(r.WorkerRuns, "%.0f")+" events/s")
		row("(b)/(a)", fmt.Sprintf("%.2f (median of the runs' ratios %s)", r.WorkerRatio, runs(r.RatioRuns, "%.2f")))
		if r.WorkerState != nil {
			row("(b') emulator keeping members: events/s", fmt.Sprintf("%.0f (runs %s)", r.WorkerState.PerSec, runs(r.WorkerStateRuns, "%.0f")))
			row("(b')/(a)", fmt.Sprintf("%.2f (median of the runs' ratios %s)", r.WorkerStateRatio, runs(r.StateRatioRuns, "%.2f")))
		}
	}
	for _, rr := range r.RateLimited {
		p := fmt.Sprintf("(c) %d replica(s), RATE_LIMIT_RPM=300", rr.Replicas)
		row(p+": requests", fmt.Sprintf("%d in %.0fs (busiest 60 s window: %d; 429s: %d)", rr.Requests, rr.Seconds, rr.Busiest60s, rr.Rejected429))
		row(p+": req/min ÷ 300", fmt.Sprintf("%.3f", rr.PerMinOverRPM))
		row(p+": packing", fmt.Sprintf("%.3f (mean body %.0f bytes)", rr.Packing, rr.MeanBodyBytes))
	}
	if r.PeakRSS != nil {
		row("(d) peak RSS", fmt.Sprintf("%.1f MiB with %d members pending", r.PeakRSS.PeakRSSMiB, r.PeakRSS.PendingMembers))
	}
	if r.PeakRSSLimited != nil {
		row("(d) peak RSS, GOMEMLIMIT="+r.PeakRSSLimited.GOMEMLIMIT, fmt.Sprintf("%.1f MiB", r.PeakRSSLimited.PeakRSSMiB))
	}
	if r.LargeRecords != nil {
		l := r.LargeRecords
		row("(d-large) peak RSS, API down", fmt.Sprintf("%.1f MiB (%d partitions × %d records of %d bytes = %.0f MiB; %d read when it stopped)",
			l.PeakRSSMiB, l.Partitions, l.Records/l.Partitions, l.RecordBytes, l.TopicMiB, l.Consumed))
	}
	if r.Latency != nil {
		row("(e) produce→accept latency", fmt.Sprintf("p50 %.3fs, p99 %.3fs (%d samples at %d/s over %d cohorts, BATCH_WINDOW=%.1fs)", r.Latency.P50, r.Latency.P99, r.Latency.Samples, r.Latency.Rate, r.Latency.Cohorts, r.Latency.Window))
	}
	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "\n%-20s %-36s %-22s %s\n", "target", "goal", "measured", "met")
		keys := make([]string, 0, len(r.Targets))
		for k := range r.Targets {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v := r.Targets[k]
			fmt.Fprintf(w, "%-20s %-36s %-22s %v\n", k, v.Target, v.Value, v.Met)
		}
	}
}
