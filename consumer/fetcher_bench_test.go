package consumer

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync-worker/internal/harness/localkafka"
)

// benchBrokers is a kfake cluster with the topic "bench", or with
// CONSUMER_BENCH_KAFKA=1 a real Apache Kafka broker (localkafka).
func benchBrokers(b *testing.B) []string {
	if os.Getenv("CONSUMER_BENCH_KAFKA") == "1" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		k, err := localkafka.Start(ctx, localkafka.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = k.Stop() })
		client := &kafka.Client{Addr: kafka.TCP(k.Addr())}
		if _, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: "bench", NumPartitions: 1, ReplicationFactor: 1}}}); err != nil {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		return []string{k.Addr()}
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "bench"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	return c.ListenAddrs()
}

// BenchmarkPartitionRead reads one partition of benchRecords records of
// about 150 bytes (kfake), with kafka-go's Reader as the consumer used it
// before and with committedReader, spending work per record in the
// reading goroutine's consumer as process would (spin).
func BenchmarkPartitionRead(b *testing.B) {
	const benchRecords = 100_000
	brokers := benchBrokers(b)
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "bench", BatchSize: 5000, BatchBytes: 1_000_000,
		BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
	msgs := make([]kafka.Message, benchRecords)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(fmt.Sprintf("cohort-%03d", i%1000)),
			Value: []byte(fmt.Sprintf(`{"action":"add_members","cohort_id":"cohort-%03d","cohort_name":"Bench","partner":"p","uid":"u%09d"}`, i%1000, i))}
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		b.Fatal(err)
	}
	w.Close()
	cfg := Config{Brokers: brokers, Topics: []string{"bench"}, MaxWait: 100 * time.Millisecond, Transport: &kafka.Transport{}}
	open := map[string]func() partitionReader{
		"kafka-go-reader": func() partitionReader {
			rc := cfg.readerConfig("bench", 0)
			rc.Logger, rc.ErrorLogger = nil, nil
			r := kafka.NewReader(rc)
			_ = r.SetOffset(kafka.FirstOffset)
			return r
		},
		"committed-reader": func() partitionReader { return cfg.newCommittedReader("bench", 0, kafka.FirstOffset) },
	}
	for _, name := range []string{"kafka-go-reader", "committed-reader"} {
		b.Run(name, func(b *testing.B) {
			var first time.Duration
			start, cpu0 := time.Now(), cpuTime()
			for b.Loop() {
				r := open[name]()
				t0 := time.Now()
				for i := 0; i < benchRecords; i++ {
					m, err := r.FetchMessage(context.Background())
					if err != nil {
						b.Fatal(err)
					}
					if i == 0 {
						first += time.Since(t0)
					}
					_ = m
				}
				r.Close()
			}
			secs := time.Since(start).Seconds()
			b.ReportMetric(float64(benchRecords*b.N)/secs, "records/s")
			b.ReportMetric(float64(first.Milliseconds())/float64(b.N), "ms-to-first")
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(benchRecords*b.N), "cpu-ns/record")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
