// Command cohortsync-demo runs the whole pipeline on one machine and reports
// what happened: a Kafka broker, the cohortsync emulator, the worker, and a
// few thousand sample membership events (a few of them malformed).
//
// By default the events are spread over three workspaces (a registry in a
// temporary MOENGAGE_WORKSPACES_DIR); mid-run the last one's key is revoked
// through the emulator's admin API, and restored later (workspaces.go): the
// report shows, per workspace, the fold check, its requests, and what the
// others got through while it was stopped. -workspaces 1 runs one
// workspace, without a revocation.
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
	"maps"
	"math/rand/v2"
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
	"github.com/cohortsync/cohortsync-worker/internal/harness/kafkaadmin"
	"github.com/cohortsync/cohortsync-worker/internal/harness/localkafka"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
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
	workspaces int
	revokeFor  time.Duration
}

// parseOptions reads the flags; it returns nil options after -help.
func parseOptions(args []string, stderr io.Writer) (*options, error) {
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
	fs.IntVar(&o.workspaces, "workspaces", 3, "workspaces the events are spread over (1: one, no revocation; more need the in-process emulator)")
	fs.DurationVar(&o.revokeFor, "revoke-for", 6*time.Second, "how long the last workspace's key stays revoked (with -workspaces > 1); the second half of the events is produced meanwhile")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, err
	}
	return &o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if o == nil {
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
	brokers, stopKafka, kafkaDesc, err := startKafka(ctx, *o, log, topic, dlqTopic)
	if err != nil {
		return err
	}
	defer stopKafka()
	say("Kafka: %s at %s", kafkaDesc, strings.Join(brokers, ","))

	// 2. The API.
	a, err := startAPI(*o, log)
	if err != nil {
		return err
	}
	defer a.close()
	say("Cohort Sync API: %s", a.desc)

	// 3. Sample events: all of them, or the first half before a revocation.
	s := newSample(*o, a.workspaces)
	first := s.msgs
	if len(a.workspaces) > 1 {
		first = s.msgs[:len(s.msgs)/2]
	}
	w := newWriter(brokers, topic)
	defer w.Close()
	if err := writeAll(ctx, w, first); err != nil {
		return err
	}
	say("produced %d of %d events (%d malformed) over %d cohorts in %d workspaces to %s",
		len(first), len(s.msgs), o.poison, o.cohorts, len(a.workspaces), topic)

	// 4. The worker, until the group has no lag (after the revocation, if any).
	cfg, err := workerConfig(brokers, topic, dlqTopic, a)
	if err != nil {
		return err
	}
	defer a.removeRegistry()
	say("worker started (group %s); waiting until the group lag is zero…", cfg.KafkaGroupID)
	var rev *revocation
	during := func(ctx context.Context) error {
		if len(a.workspaces) == 1 {
			return nil
		}
		var err error
		rev, err = revokeMidRun(ctx, say, a, w, s.msgs[len(first):], cfg, *o)
		return err
	}
	reg, caughtUp, err := runWorker(ctx, cfg, log, during)
	if err != nil {
		return err
	}
	say("caught up in %s; the worker drained and stopped", caughtUp.Round(time.Millisecond))

	// 5. Report.
	return report(ctx, stdout, reg, a, s.want, rev, *o, time.Since(started))
}

// api is where the worker sends its requests: the API named by
// MOENGAGE_BASE_URL, or else the in-process emulator (emu).
type api struct {
	baseURL, workspace, key string
	desc                    string
	emu                     *emulator.Emulator // nil for an API named by the environment
	close                   func()
	// workspaces are the workspaces the events go to: workspace alone, or
	// several (the first one the default), each with its key in keys and
	// in the registry directory regDir (workspaces.go).
	workspaces []string
	keys       map[string]string
	regDir     string
}

func startAPI(o options, log *slog.Logger) (*api, error) {
	if url := os.Getenv("MOENGAGE_BASE_URL"); url != "" {
		ws := os.Getenv("MOENGAGE_WORKSPACE_ID")
		return &api{baseURL: url, workspace: ws, key: os.Getenv("MOENGAGE_DATA_API_KEY"),
			desc: url, close: func() {}, workspaces: []string{ws}}, nil
	}
	a := &api{workspace: "demo-workspace", key: "demo-data-api-key"}
	ecfg := emulator.DefaultConfig()
	if o.workspaces > 1 {
		ecfg.Workspaces = a.demoWorkspaces(o.workspaces)
	} else {
		a.workspaces = []string{a.workspace}
		ecfg.Credentials = map[string]string{a.workspace: a.key}
	}
	ecfg.Faults.ErrorRate = o.errorRate
	ecfg.Logger = log
	srv, err := rig.ServeAPI(ecfg)
	if err != nil {
		return nil, err
	}
	a.emu, a.baseURL, a.close = srv.Emulator, srv.URL, func() { _ = srv.Close() }
	a.desc = fmt.Sprintf("in-process emulator at %s (300 requests/min, 128 KB bodies, %.0f%% injected 500s)", a.baseURL, o.errorRate*100)
	return a, nil
}

func workerConfig(brokers []string, topic, dlqTopic string, a *api) (config.Config, error) {
	cfg := config.Default()
	cfg.KafkaBrokers = brokers
	cfg.KafkaTopics = []string{topic}
	cfg.KafkaDLQTopic = dlqTopic
	cfg.KafkaGroupID = fmt.Sprintf("cohortsync-demo-%d", time.Now().UnixNano())
	cfg.MoEngageBaseURL = a.baseURL
	cfg.MoEngageWorkspaceID = a.workspace
	cfg.MoEngageDataAPIKey = config.NewSecret(a.key)
	cfg.BatchWindow = time.Second
	cfg.RetryInitialInterval = 200 * time.Millisecond
	cfg.RetryMaxInterval = 2 * time.Second
	cfg.HTTPAddr = ""
	cfg.ShutdownTimeout = 10 * time.Second
	// A first start has no proof of a clean hand-over, so it reads nothing
	// for MOENGAGE_MAX_PROCESSING_TIME (DESIGN.md, Non-obvious 11); the
	// in-process emulator never processes a request late, so the demo
	// takes the shortest bound the configuration accepts.
	cfg.MoEngageMaxProcessingTime = config.AttemptTimeout + time.Second
	if len(a.workspaces) > 1 {
		return cfg, a.useRegistry(&cfg)
	}
	return cfg, nil
}

// runWorker runs the worker in-process, and during beside it, until during
// has returned and the group has no lag; then it stops the worker (it
// drains first) and returns its metrics and the time it took to catch up.
func runWorker(ctx context.Context, cfg config.Config, log *slog.Logger,
	during func(context.Context) error) (*prometheus.Registry, time.Duration, error) {
	reg := prometheus.NewRegistry()
	start := time.Now()
	w := rig.Start(ctx, func(ctx context.Context) error {
		return app.Run(ctx, app.Options{Config: cfg, Logger: log, Registry: reg, Version: "demo", ReplicaID: "demo"})
	})
	admin := kafkaadmin.New(cfg.KafkaBrokers, nil)
	err := during(ctx)
	if err == nil {
		err = rig.WaitNoLag(ctx, admin, cfg.KafkaTopics[0], cfg.KafkaGroupID, w.Done())
	}
	if err == nil && cfg.MoEngageWorkspacesDir != "" { // and every parked change delivered
		err = rig.WaitNoLag(ctx, admin, parkio.TopicName(cfg.KafkaGroupID), cfg.KafkaGroupID, w.Done())
	}
	if err != nil {
		if werr := w.Stop(); werr != nil {
			err = fmt.Errorf("%w: %w", err, werr)
		}
		return nil, 0, err
	}
	caughtUp := time.Since(start)
	if err := w.Stop(); err != nil {
		return nil, 0, fmt.Errorf("worker: %w", err)
	}
	return reg, caughtUp, nil
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

type cohortKey struct{ workspace, partner, id string }

// sample is the demo's events and the membership they imply.
type sample struct {
	msgs []kafka.Message
	want map[cohortKey]map[string]bool // the fold of the log
}

// newSample makes the sample events, keyed by cohort_id, and their fold.
// Cohort c belongs to workspace c mod len(workspaces); the first, the
// default, is named in workspace_id only every other time (never with one
// workspace). The workspaces share the partitions.
func newSample(o options, workspaces []string) sample {
	rng := rand.New(rand.NewPCG(o.seed, 42))
	s := sample{want: map[cohortKey]map[string]bool{}, msgs: make([]kafka.Message, 0, o.events+o.poison)}
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
			s.msgs = append(s.msgs, kafka.Message{Key: []byte("poison"), Value: []byte(p)})
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
		ws := workspaces[c%len(workspaces)]
		if ws != workspaces[0] || len(workspaces) > 1 && rng.IntN(2) == 0 {
			ev.Workspace = ws
		}
		k := cohortKey{ws, ev.Partner, ev.CohortID}
		if s.want[k] == nil {
			s.want[k] = map[string]bool{}
		}
		if ev.Action == event.Add {
			s.want[k][ev.UIDs[0]] = true
		} else {
			delete(s.want[k], ev.UIDs[0])
		}
		s.msgs = append(s.msgs, kafka.Message{Key: []byte(ev.CohortID), Value: event.Encode(ev)})
	}
	return s
}

func newWriter(brokers []string, topic string) *kafka.Writer {
	return &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{},
		BatchTimeout: 5 * time.Millisecond, BatchSize: 500, RequiredAcks: kafka.RequireAll}
}

// writeAll writes msgs, in order.
func writeAll(ctx context.Context, w *kafka.Writer, msgs []kafka.Message) error {
	for len(msgs) > 0 {
		n := min(len(msgs), 1000)
		if err := w.WriteMessages(ctx, msgs[:n]...); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		msgs = msgs[n:]
	}
	return nil
}

// report prints the worker's figures and compares every cohort's
// membership in the API with the fold of the event log.
func report(ctx context.Context, w io.Writer, reg *prometheus.Registry, a *api,
	want map[cohortKey]map[string]bool, rev *revocation, o options, took time.Duration) error {
	m, err := rig.Gather(reg)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nReport (%s in all)\n", took.Round(time.Millisecond))
	dead := printFigures(w, m, o)
	var segs []emulator.Segment
	if a.emu != nil {
		segs = a.emu.Segments()
	} else if segs, err = (&emulator.AdminClient{BaseURL: a.baseURL}).Segments(ctx); err != nil {
		fmt.Fprintf(w, "\n(could not read the API's state from %s: %v; membership not checked)\n", a.baseURL, err)
	}
	if segs == nil {
		return nil
	}
	got := map[cohortKey][]string{}
	for _, s := range segs {
		if slices.Contains(a.workspaces, s.Workspace) {
			got[cohortKey{s.Workspace, s.Partner, s.CohortID}] = s.Members
		}
	}
	var bad int
	if len(a.workspaces) == 1 {
		bad = printCohorts(w, want, got)
	} else {
		bad = printWorkspaces(w, a, want, got, rev)
	}
	// A malformed record is dead-lettered at least once: again when it is
	// read again after a replan (a workspace parked) before its commit.
	if bad > 0 || int(dead) < o.poison {
		return fmt.Errorf("%d cohorts differ from the fold of the log; %0.f dead-lettered of %d malformed", bad, dead, o.poison)
	}
	fmt.Fprintf(w, "\nEvery cohort's membership equals the fold of the event log.\n")
	return nil
}

// printFigures prints what the worker's metrics say it did and returns the
// events it dead-lettered.
func printFigures(w io.Writer, m rig.Metrics, o options) (dead float64) {
	var accepted, members float64
	for _, s := range m.Samples("cohortsync_requests_total") {
		if strings.HasPrefix(s.Labels["code"], "2") {
			accepted += s.Value
		}
	}
	var batches uint64
	for _, s := range m.Samples("cohortsync_batch_members") {
		members, batches = members+s.Value, batches+s.Count
	}
	dead = m.Sum("cohortsync_events_dead_lettered_total")
	fmt.Fprintf(w, "  events consumed        %8.0f\n", m.Sum("cohortsync_events_consumed_total"))
	note := ""
	if int(dead) > o.poison {
		note = "; at least once each: a record read again after a replan (a workspace parked) before its commit is dead-lettered again"
	}
	fmt.Fprintf(w, "  dead-lettered          %8.0f   (malformed events produced: %d%s)\n", dead, o.poison, note)
	fmt.Fprintf(w, "  changes compacted      %8.0f   (superseded before sending)\n", m.Sum("cohortsync_events_compacted_total"))
	fmt.Fprintf(w, "  requests sent          %8.0f   (%0.f accepted, %.0f retries)\n",
		m.Sum("cohortsync_requests_total"), accepted, m.Sum("cohortsync_retries_total"))
	if batches > 0 {
		fmt.Fprintf(w, "  members per batch      %8.1f   (mean over %d batches)\n", members/float64(batches), batches)
	}
	return dead
}

// printCohorts prints each cohort's expected and actual member count and
// returns how many differ.
func printCohorts(w io.Writer, want map[cohortKey]map[string]bool, got map[cohortKey][]string) (bad int) {
	fmt.Fprintf(w, "\n  %-20s %9s %9s  %s\n", "cohort", "expected", "actual", "")
	keys := slices.Collect(maps.Keys(want))
	slices.SortFunc(keys, func(a, b cohortKey) int { return strings.Compare(a.id, b.id) })
	for _, k := range keys {
		exp, act := want[k], got[k]
		mark := "ok"
		if !folds(exp, act) {
			mark = "MISMATCH"
			bad++
		}
		fmt.Fprintf(w, "  %-20s %9d %9d  %s\n", k.id, len(exp), len(act), mark)
	}
	return bad
}

// folds reports whether act, a cohort's members in the API, are exactly
// exp, the fold of its events.
func folds(exp map[string]bool, act []string) bool {
	ok := len(act) == len(exp)
	for _, u := range act {
		ok = ok && exp[u]
	}
	return ok
}
