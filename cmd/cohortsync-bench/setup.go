package main

// The bench's fixtures: the Kafka cluster, the sample events, the emulator
// and workers running in this process.

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/app"
	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/localkafka"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

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

// startAPI starts an emulator; discard keeps no segment membership.
func startAPI(rateLimit int, faults emulator.Faults, discard bool) (*rig.API, error) {
	cfg := emulator.DefaultConfig()
	cfg.DiscardMembers = discard
	cfg.Credentials = map[string]string{"bench": "bench-key"}
	cfg.RateLimit = rateLimit
	cfg.RequestLogMaxMembers = -1 // every record kept: the counts must be complete
	cfg.Faults = faults
	return rig.ServeAPI(cfg)
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

// inproc is a worker running in this process (app.Run), with its own
// metrics registry.
type inproc struct {
	*rig.Run
	reg *prometheus.Registry
}

func startWorker(ctx context.Context, cfg config.Config, replica string, log *slog.Logger) *inproc {
	reg := prometheus.NewRegistry()
	return &inproc{reg: reg, Run: rig.Start(ctx, func(ctx context.Context) error {
		return app.Run(ctx, app.Options{Config: cfg, Logger: log, Registry: reg, ReplicaID: replica, Version: "bench"})
	})}
}

// workerBinary builds the worker from this checkout once per bench run.
func (b *bench) workerBinary(ctx context.Context) (string, error) {
	if b.bin != "" {
		return b.bin, nil
	}
	dir, err := os.MkdirTemp("", "cohortsync-bench-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "cohortsync-worker")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/cohortsync-worker")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("build worker: %w", err)
	}
	b.bin = bin
	return bin, nil
}
