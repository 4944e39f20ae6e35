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
//	e. under a light steady load, p50/p99 time from produce to acceptance;
//	h. 20 workspaces with budgets of their own, 1 and 3 replicas: each
//	   workspace's use of its budget, its busiest 60 s, and packing;
//	h'. the same with one workspace's key revoked for 2 minutes mid-run:
//	   the others' use of their budgets and the source topic's commit lag
//	   during the revocation, the revoked workspace's convergence after the
//	   restore, and the worker's peak RSS with 1 M changes parked;
//	h''. 1,000 workspaces in the registry, 200 active: per-replica RSS and
//	   CPU, and the registry's reload time.
//
// It prints a table and writes the same figures as JSON.
//
// Files: main.go (flags, the order of the phases), setup.go (Kafka, the
// emulator, the producer, in-process workers), phase_ab.go, phase_a.go,
// phase_b.go, rate.go (c), memory.go (d, dl), latency.go (e),
// workspaces.go (h, h″), workspaces_parked.go and
// workspaces_parked_rss.go (h'), report.go
// (the results, the table and the JSON).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/harness/kafkaadmin"
)

type options struct {
	events       int
	cohorts      int
	partitions   int
	backlog      int
	backlogCoh   int
	rateRun      time.Duration
	shareRun     time.Duration
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
	hprimeRuns   string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// parseOptions reads the flags; it returns nil options after -help.
func parseOptions(args []string, stderr io.Writer) (*options, error) {
	var o options
	fs := flag.NewFlagSet("cohortsync-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.events, "events", 1_000_000, "events for (a) and (b)")
	fs.IntVar(&o.cohorts, "cohorts", 1000, "cohorts for (a), (b) and (e)")
	fs.IntVar(&o.partitions, "partitions", 6, "partitions of the benchmark topics")
	fs.IntVar(&o.backlog, "backlog", 3_000_000, "backlog events for (c): enough for full bodies at the budget for the whole run, with 25% to spare")
	fs.IntVar(&o.backlogCoh, "backlog-cohorts", 24, "cohorts of the (c) backlog: few, so that full bodies exist; spread evenly over the partitions, so that no replica's backlog runs out first")
	fs.DurationVar(&o.rateRun, "rate-run", 75*time.Second, "how long each (c) run lasts (over 60 s, for the busiest-window figure)")
	fs.DurationVar(&o.shareRun, "share-run", 150*time.Second, "how long each (f), (f') and (g) run lasts")
	fs.IntVar(&o.pending, "pending", 1_000_000, "MAX_PENDING_MEMBERS for (d)")
	fs.IntVar(&o.latencyRate, "latency-rate", 50, "events per second for (e)")
	fs.DurationVar(&o.latencyRun, "latency-run", 30*time.Second, "how long (e) produces")
	fs.IntVar(&o.latencyCoh, "latency-cohorts", 3, "cohorts of the (e) load: light means few requests per window (the budget is 5/s)")
	fs.StringVar(&o.memLimit, "memlimit", "200MiB", "GOMEMLIMIT of the second (d) run (empty: skip it)")
	fs.IntVar(&o.largeRecords, "large-records", 150, "records of 900 KB per partition for (dl)")
	fs.DurationVar(&o.window, "window", time.Second, "BATCH_WINDOW for (e)")
	fs.StringVar(&o.out, "out", "bench-results/bench.json", "where the JSON goes")
	fs.StringVar(&o.phases, "phases", "a,b,c,d,dl,e,f,g,h,h',h''", "which phases to run (f' alone: only the (f') runs of f)")
	fs.StringVar(&o.hprimeRuns, "hprime-runs", "1/probe,1/registry,3/probe,rss", "the sub-runs of (h'): replicas/how the key comes back (probe: the emulator's RestoreKey, found by the worker's probe; registry: a new key in the emulator and the key file), and rss (1 M changes parked, one worker process)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of phase (b) to this file (its first run)")
	fs.IntVar(&o.repeat, "repeat", 3, "runs of (a) and (b), alternating over the same topic; the figures are the medians, the ratio the median of the runs' ratios")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, err
	}
	return &o, nil
}

// bench is what every phase needs: the options, the cluster, and the
// results it adds its figures and targets to. The phases run one after
// another on run's goroutine.
type bench struct {
	o       options
	brokers []string
	admin   *kafkaadmin.Admin
	log     *slog.Logger // the in-process workers' log
	res     *results
	stderr  io.Writer
	bin     string // the worker binary, built on first use
}

// say reports progress on stderr.
func (b *bench) say(format string, a ...any) { fmt.Fprintf(b.stderr, "bench: "+format+"\n", a...) }

// phase reports whether -phases names p.
func (b *bench) phase(p string) bool { return slices.Contains(splitList(b.o.phases), p) }

// splitList splits a comma-separated flag value, trimming spaces.
func splitList(s string) []string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if o == nil {
		return err
	}
	b := &bench{o: *o, stderr: stderr, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		res: &results{Events: o.events, Cohorts: o.cohorts, Partitions: o.partitions, Targets: map[string]verdict{}}}
	host, _ := os.Hostname()
	b.res.Machine = fmt.Sprintf("%s, %d cores", host, numCPU())
	brokers, version, stopKafka, err := kafkaCluster(ctx, b.log)
	if err != nil {
		return err
	}
	defer stopKafka()
	defer func() {
		if b.bin != "" {
			os.RemoveAll(filepath.Dir(b.bin))
		}
	}()
	b.brokers, b.admin, b.res.KafkaVersion = brokers, kafkaadmin.New(brokers, nil), version
	b.say("Kafka %s at %s", version, strings.Join(brokers, ","))
	for _, p := range []struct {
		names []string
		run   func(context.Context) error
	}{
		{[]string{"a", "b"}, b.phasesAB},
		{[]string{"c"}, b.phaseC},
		{[]string{"d"}, b.phaseD},
		{[]string{"dl"}, b.phaseDL},
		{[]string{"e"}, b.phaseE},
		{[]string{"f", "f'"}, b.phaseF},
		{[]string{"g"}, b.phaseG},
		{[]string{"h"}, b.phaseH},
		{[]string{"h'"}, b.phaseHPrime},
		{[]string{"h''"}, b.phaseH2},
	} {
		if slices.ContainsFunc(p.names, b.phase) {
			if err := p.run(ctx); err != nil {
				return err
			}
		}
	}
	printTable(stdout, b.res)
	return writeJSON(stdout, o.out, b.res)
}
