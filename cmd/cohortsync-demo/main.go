// Command cohortsync-demo runs the whole pipeline on one machine and reports
// what happened: a Kafka broker, the cohortsync emulator, the worker, and a
// few thousand sample membership events (a few of them malformed).
//
// By default everything runs in this process and needs nothing but Go: an
// in-process Kafka (kfake, which speaks the real protocol) and the in-process
// emulator. KAFKA_BROKERS switches to a real cluster (or -kafka=local starts
// a real Apache Kafka broker from Maven Central), and MOENGAGE_BASE_URL with
// MOENGAGE_WORKSPACE_ID and MOENGAGE_DATA_API_KEY to a real API or a running
// emulator.
package main

import (
	"context"
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
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync-worker/internal/app"
	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/kafkaadmin"
	"github.com/cohortsync/cohortsync-worker/internal/localkafka"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type options struct {
	events     int
	cohorts    int
	users      int
	partitions int
	poison     int
	errorRate  float64
	kafkaMode  string
	verbose    bool
	timeout    time.Duration
	seed       uint64
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("cohortsync-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.events, "events", 5000, "sample events to produce")
	fs.IntVar(&o.cohorts, "cohorts", 12, "cohorts the events are spread over")
	fs.IntVar(&o.users, "users", 800, "distinct uids")
	fs.IntVar(&o.partitions, "partitions", 4, "partitions of the demo topic")
	fs.IntVar(&o.poison, "poison", 5, "malformed events mixed in (they go to the dead-letter topic)")
	fs.Float64Var(&o.errorRate, "error-rate", 0.05, "fraction of requests the in-process emulator answers with 500 (to show retries)")
	fs.StringVar(&o.kafkaMode, "kafka", "embedded", "embedded (in-process kfake) or local (a real Apache Kafka broker fetched with Maven); KAFKA_BROKERS overrides both")
	fs.BoolVar(&o.verbose, "v", false, "show the worker's logs")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "give up after this long")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed for the sample events")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	logLevel := slog.LevelWarn
	if o.verbose {
		logLevel = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel}))
	say := func(format string, a ...any) { fmt.Fprintf(stdout, "• "+format+"\n", a...) }
	started := time.Now()

	// 1. Kafka.
	topic := "cohort-membership-changes"
	dlqTopic := topic + ".dlq"
	brokers, stopKafka, kafkaDesc, err := startKafka(ctx, o, log, topic, dlqTopic)
	if err != nil {
		return err
	}
	defer stopKafka()
	say("Kafka: %s at %s", kafkaDesc, strings.Join(brokers, ","))

	// 2. The API.
	baseURL, workspace, apiKey := os.Getenv("MOENGAGE_BASE_URL"), os.Getenv("MOENGAGE_WORKSPACE_ID"), os.Getenv("MOENGAGE_DATA_API_KEY")
	var emu *emulator.Emulator
	if baseURL == "" {
		workspace, apiKey = "demo-workspace", "demo-data-api-key"
		ecfg := emulator.DefaultConfig()
		ecfg.Credentials = map[string]string{workspace: apiKey}
		ecfg.Faults.ErrorRate = o.errorRate
		ecfg.Logger = log
		emu, err = emulator.New(ecfg)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		baseURL = "http://" + ln.Addr().String()
		say("Cohort Sync API: in-process emulator at %s (300 requests/min, 128 KB bodies, %.0f%% injected 500s)", baseURL, o.errorRate*100)
	} else {
		say("Cohort Sync API: %s", baseURL)
	}

	// 3. Sample events.
	want, err := produce(ctx, brokers, topic, o)
	if err != nil {
		return err
	}
	say("produced %d events (%d malformed) over %d cohorts to %s", o.events+o.poison, o.poison, o.cohorts, topic)

	// 4. The worker, until the group has no lag.
	cfg := config.Default()
	cfg.KafkaBrokers = brokers
	cfg.KafkaTopics = []string{topic}
	cfg.KafkaDLQTopic = dlqTopic
	cfg.KafkaGroupID = fmt.Sprintf("cohortsync-demo-%d", time.Now().UnixNano())
	cfg.MoEngageBaseURL = baseURL
	cfg.MoEngageWorkspaceID = workspace
	cfg.MoEngageDataAPIKey = config.NewSecret(apiKey)
	cfg.BatchWindow = time.Second
	cfg.RetryInitialInterval = 200 * time.Millisecond
	cfg.RetryMaxInterval = 2 * time.Second
	cfg.HTTPAddr = ""
	cfg.ShutdownTimeout = 10 * time.Second
	reg := prometheus.NewRegistry()
	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	done := make(chan error, 1)
	workerStart := time.Now()
	go func() {
		done <- app.Run(wctx, app.Options{Config: cfg, Logger: log, Registry: reg, Version: "demo", ReplicaID: "demo"})
	}()
	say("worker started (group %s); waiting until the group lag is zero…", cfg.KafkaGroupID)
	if err := waitNoLag(ctx, brokers, topic, cfg.KafkaGroupID, done); err != nil {
		return err
	}
	caughtUp := time.Since(workerStart)
	stopWorker()
	if err := <-done; err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	say("caught up in %s; the worker drained and stopped", caughtUp.Round(time.Millisecond))

	// 5. Report.
	return report(ctx, stdout, reg, emu, baseURL, workspace, want, o, time.Since(started))
}

func startKafka(ctx context.Context, o options, log *slog.Logger, topics ...string) ([]string, func(), string, error) {
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		brokers := strings.Split(env, ",")
		if err := kafkaadmin.New(brokers, nil).CreateTopics(ctx, o.partitions, topics...); err != nil {
			return nil, nil, "", err
		}
		return brokers, func() {}, "the cluster named by KAFKA_BROKERS", nil
	}
	if o.kafkaMode == "local" {
		b, err := localkafka.Start(ctx, localkafka.Options{Partitions: o.partitions, Logger: log})
		if err != nil {
			return nil, nil, "", err
		}
		for _, t := range topics {
			if err := b.CreateTopic(ctx, t, o.partitions); err != nil {
				_ = b.Stop()
				return nil, nil, "", err
			}
		}
		return []string{b.Addr()}, func() { _ = b.Stop() }, "a real Apache Kafka broker (KRaft, local)", nil
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(o.partitions), topics...))
	if err != nil {
		return nil, nil, "", err
	}
	return c.ListenAddrs(), c.Close, "in-process (kfake)", nil
}

type cohortKey struct{ partner, id string }

// produce writes the sample events keyed by cohort_id and returns the
// membership they imply: the fold of the log.
func produce(ctx context.Context, brokers []string, topic string, o options) (map[cohortKey]map[string]bool, error) {
	rng := rand.New(rand.NewPCG(o.seed, 42))
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		BatchTimeout: 5 * time.Millisecond, BatchSize: 500, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	want := map[cohortKey]map[string]bool{}
	msgs := make([]kafka.Message, 0, o.events+o.poison)
	poisonAt := map[int]string{}
	kinds := []string{
		`{"action":"add_members","cohort_id":`,                  // malformed JSON
		`{"action":"add_members","uid":"u1","cohort_name":"x"}`, // no cohort_id
		`{"action":"add_members","uid":"u1","cohort_id":"c","cohort_name":"a|b"}`,
		`{"action":"upsert","uid":"u1","cohort_id":"c","cohort_name":"n"}`,
		`not json at all`,
	}
	for i := 0; len(poisonAt) < min(o.poison, o.events); i++ {
		if at := rng.IntN(o.events); poisonAt[at] == "" {
			poisonAt[at] = kinds[len(poisonAt)%len(kinds)]
		}
	}
	for i := range o.events {
		if p, ok := poisonAt[i]; ok {
			msgs = append(msgs, kafka.Message{Key: []byte("poison"), Value: []byte(p)})
		}
		c := rng.IntN(o.cohorts)
		ev := event.Event{
			Action:     event.Add,
			Partner:    "demo-partner",
			CohortID:   fmt.Sprintf("cohort-%02d", c),
			CohortName: fmt.Sprintf("Demo_Cohort_%02d", c),
			UIDs:       []string{fmt.Sprintf("user-%05d", rng.IntN(o.users))},
			OccurredAt: time.Now().UTC(),
		}
		if rng.Float64() >= 0.7 {
			ev.Action = event.Remove
		}
		k := cohortKey{ev.Partner, ev.CohortID}
		if want[k] == nil {
			want[k] = map[string]bool{}
		}
		if ev.Action == event.Add {
			want[k][ev.UIDs[0]] = true
		} else {
			delete(want[k], ev.UIDs[0])
		}
		msgs = append(msgs, kafka.Message{Key: []byte(ev.CohortID), Value: event.Encode(ev)})
	}
	for len(msgs) > 0 {
		n := min(len(msgs), 1000)
		if err := w.WriteMessages(ctx, msgs[:n]...); err != nil {
			return nil, fmt.Errorf("produce: %w", err)
		}
		msgs = msgs[n:]
	}
	return want, nil
}

// waitNoLag polls until the group's committed offsets reach the end of every
// partition of topic.
func waitNoLag(ctx context.Context, brokers []string, topic, group string, done <-chan error) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("the group did not catch up in time: %w", ctx.Err())
		case err := <-done:
			return fmt.Errorf("the worker stopped early: %v", err)
		case <-t.C:
		}
		lag, err := kafkaadmin.New(brokers, nil).GroupLag(ctx, topic, group)
		if err == nil && lag == 0 {
			return nil
		}
	}
}

func report(ctx context.Context, w io.Writer, reg *prometheus.Registry, emu *emulator.Emulator, baseURL, workspace string,
	want map[cohortKey]map[string]bool, o options, took time.Duration) error {
	mfs, err := reg.Gather()
	if err != nil {
		return err
	}
	sum := func(name string, match func(labels map[string]string) bool) (total float64, count uint64) {
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if match != nil && !match(labels) {
					continue
				}
				switch {
				case m.Counter != nil:
					total += m.Counter.GetValue()
				case m.Histogram != nil:
					total += m.Histogram.GetSampleSum()
					count += m.Histogram.GetSampleCount()
				}
			}
		}
		return
	}
	consumed, _ := sum("cohortsync_events_consumed_total", nil)
	accepted, _ := sum("cohortsync_requests_total", func(l map[string]string) bool { return strings.HasPrefix(l["code"], "2") })
	allReqs, _ := sum("cohortsync_requests_total", nil)
	members, batches := sum("cohortsync_batch_members", nil)
	retries, _ := sum("cohortsync_retries_total", nil)
	dead, _ := sum("cohortsync_events_dead_lettered_total", nil)
	compacted, _ := sum("cohortsync_events_compacted_total", nil)

	var segs []emulator.Segment
	if emu != nil {
		segs = emu.Segments()
	} else {
		segs, err = (&emulator.AdminClient{BaseURL: baseURL}).Segments(ctx)
		if err != nil {
			fmt.Fprintf(w, "\n(could not read the API's state from %s: %v; membership not checked)\n", baseURL, err)
		}
	}
	got := map[cohortKey][]string{}
	for _, s := range segs {
		if s.Workspace == workspace {
			got[cohortKey{s.Partner, s.CohortID}] = s.Members
		}
	}

	fmt.Fprintf(w, "\nReport (%s in all)\n", took.Round(time.Millisecond))
	fmt.Fprintf(w, "  events consumed        %8.0f\n", consumed)
	fmt.Fprintf(w, "  dead-lettered          %8.0f   (malformed events produced: %d)\n", dead, o.poison)
	fmt.Fprintf(w, "  changes compacted      %8.0f   (superseded before sending)\n", compacted)
	fmt.Fprintf(w, "  requests sent          %8.0f   (%0.f accepted, %.0f retries)\n", allReqs, accepted, retries)
	if batches > 0 {
		fmt.Fprintf(w, "  members per batch      %8.1f   (mean over %d batches)\n", members/float64(batches), batches)
	}
	if segs == nil {
		return nil
	}
	fmt.Fprintf(w, "\n  %-20s %9s %9s  %s\n", "cohort", "expected", "actual", "")
	keys := make([]cohortKey, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b cohortKey) int { return strings.Compare(a.id, b.id) })
	bad := 0
	for _, k := range keys {
		exp := want[k]
		act := got[k]
		ok := len(act) == len(exp)
		for _, u := range act {
			ok = ok && exp[u]
		}
		mark := "ok"
		if !ok {
			mark = "MISMATCH"
			bad++
		}
		fmt.Fprintf(w, "  %-20s %9d %9d  %s\n", k.id, len(exp), len(act), mark)
	}
	if bad > 0 || int(dead) != o.poison {
		return fmt.Errorf("%d cohorts differ from the fold of the log; %0.f dead-lettered of %d malformed", bad, dead, o.poison)
	}
	fmt.Fprintf(w, "\nEvery cohort's membership equals the fold of the event log.\n")
	return nil
}
