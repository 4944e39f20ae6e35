package main

// Phases (d) and (dl): the worker binary's peak RSS with members pending,
// and with the API down and partitions full of large records.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

type rssResult struct {
	PendingMembers int     `json:"pending_members"`
	PeakRSSMiB     float64 `json:"peak_rss_mib"`
	GOMEMLIMIT     string  `json:"gomemlimit,omitempty"`
	// HeapMiB and NextGCMiB are the worker's Go heap (go_memstats_heap_alloc_bytes:
	// the live heap at the last collection and what was allocated since) and
	// its next collection's goal, when it reported the members pending: the
	// peak RSS less the heap is the GC's headroom (GOGC), not live memory.
	HeapMiB   float64 `json:"heap_alloc_mib"`
	NextGCMiB float64 `json:"next_gc_mib"`
}

// phaseD runs (d), and again with GOMEMLIMIT=o.memLimit unless it is empty.
func (b *bench) phaseD(ctx context.Context) error {
	rss, err := b.peakRSS(ctx, "")
	if err != nil {
		return err
	}
	b.res.PeakRSS = rss
	b.say("(d) peak RSS %.1f MiB with %d members pending (Go heap %.1f MiB, next collection at %.1f MiB)",
		rss.PeakRSSMiB, rss.PendingMembers, rss.HeapMiB, rss.NextGCMiB)
	b.res.Targets["d"] = verdict{"<= 256 MiB", fmt.Sprintf("%.1f MiB", rss.PeakRSSMiB), rss.PeakRSSMiB <= 256}
	if b.o.memLimit == "" {
		return nil
	}
	if rss, err = b.peakRSS(ctx, b.o.memLimit); err != nil {
		return err
	}
	b.res.PeakRSSLimited = rss
	b.say("(d) with GOMEMLIMIT=%s: peak RSS %.1f MiB (Go heap %.1f MiB, next collection at %.1f MiB)",
		b.o.memLimit, rss.PeakRSSMiB, rss.HeapMiB, rss.NextGCMiB)
	b.res.Targets["d, GOMEMLIMIT="+b.o.memLimit] = verdict{"<= 256 MiB", fmt.Sprintf("%.1f MiB", rss.PeakRSSMiB), rss.PeakRSSMiB <= 256}
	return nil
}

// peakRSS runs the worker binary against an API that accepts nothing, so
// that MAX_PENDING_MEMBERS members end up pending, and reads its peak RSS.
func (b *bench) peakRSS(ctx context.Context, memLimit string) (*rssResult, error) {
	o := b.o
	topic := fmt.Sprintf("bench-rss-%d", time.Now().Unix())
	if err := b.admin.CreateTopics(ctx, o.partitions, topic, topic+".dlq"); err != nil {
		return nil, err
	}
	if err := produce(ctx, b.brokers, topic, o.pending+o.pending/10, cohortIDs(o.cohorts), 77); err != nil {
		return nil, err
	}
	env := []string{"MAX_PENDING_MEMBERS=" + strconv.Itoa(o.pending)}
	if memLimit != "" {
		env = append(env, "GOMEMLIMIT="+memLimit)
	}
	b.say("(d) filling %d pending members…", o.pending)
	pending, heap, goal := 0.0, 0.0, 0.0
	mib, err := b.rssWorker(ctx, topic, env, func(m rig.Metrics) bool {
		pending = m.Sum("cohortsync_pending_members")
		heap, goal = m.Sum("go_memstats_heap_alloc_bytes")/(1<<20), m.Sum("go_memstats_next_gc_bytes")/(1<<20)
		return pending >= float64(o.pending)
	})
	if err != nil {
		return nil, fmt.Errorf("(d) %.0f members pending: %w", pending, err)
	}
	return &rssResult{PendingMembers: int(pending), PeakRSSMiB: mib, GOMEMLIMIT: memLimit, HeapMiB: heap, NextGCMiB: goal}, nil
}

// rssWorker runs the worker binary (workerBinary) against an
// API that accepts nothing (every request waits an hour), with env added to
// the usual settings, until full reports that what the phase wanted to pile
// up is there (it is called with the worker's metrics every half second,
// empty ones when a scrape fails); then it returns the process's peak RSS
// (VmHWM) in MiB.
func (b *bench) rssWorker(ctx context.Context, topic string, env []string, full func(rig.Metrics) bool) (float64, error) {
	brokers := b.brokers
	a, err := startAPI(0, emulator.Faults{Latency: time.Hour}, false)
	if err != nil {
		return 0, err
	}
	defer a.Close()
	bin, err := b.workerBinary(ctx)
	if err != nil {
		return 0, err
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(),
		"KAFKA_BROKERS="+strings.Join(brokers, ","), "KAFKA_TOPIC="+topic, "KAFKA_GROUP_ID=bench-rss-"+topic,
		"MOENGAGE_BASE_URL="+a.URL, "MOENGAGE_WORKSPACE_ID=bench", "MOENGAGE_DATA_API_KEY=bench-key",
		"RATE_LIMIT_RPM=0", "HTTP_ADDR="+addr, "BATCH_WINDOW=1h", "LOG_LEVEL=warn")
	cmd.Env = append(cmd.Env, env...)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		time.Sleep(500 * time.Millisecond)
		m, _ := rig.Scrape(ctx, "http://"+addr+"/metrics")
		if full(m) {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the worker did not fill up within 5 minutes")
		}
	}
	time.Sleep(2 * time.Second)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	var kb float64
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			fmt.Sscanf(strings.TrimPrefix(line, "VmHWM:"), "%f", &kb)
		}
	}
	return kb / 1024, nil
}

// largeRecordsResult is phase (d-large): the worker's peak RSS while the
// API accepts nothing and every partition holds large records.
type largeRecordsResult struct {
	Partitions  int     `json:"partitions"`
	Records     int     `json:"records"`
	RecordBytes int     `json:"record_bytes"`
	TopicMiB    float64 `json:"topic_mib"`
	Consumed    int     `json:"records_consumed_at_peak"`
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
}

// phaseDL runs (dl) with 900 KB records.
func (b *bench) phaseDL(ctx context.Context) error {
	lr, err := b.peakRSSLarge(ctx, b.o.largeRecords, 900_000)
	if err != nil {
		return err
	}
	b.res.LargeRecords = lr
	b.say("(d-large) peak RSS %.1f MiB, %d of %d records of %d bytes read", lr.PeakRSSMiB, lr.Consumed, lr.Records, lr.RecordBytes)
	b.res.Targets["d-large"] = verdict{"<= 256 MiB", fmt.Sprintf("%.1f MiB", lr.PeakRSSMiB), lr.PeakRSSMiB <= 256}
	return nil
}

// peakRSSLarge fills o.partitions partitions with records of about
// recordBytes each (valid events, one member, padded with an unknown field
// the worker ignores), starts the worker with the API accepting nothing and
// MAX_PENDING_MEMBERS=100, so that the batcher stops taking changes at once
// and whatever the consumer buffers beyond that is fetched-but-unprocessed
// record bytes, and reads its peak RSS once it has stopped consuming.
func (b *bench) peakRSSLarge(ctx context.Context, perPartition, recordBytes int) (*largeRecordsResult, error) {
	o := b.o
	topic := fmt.Sprintf("bench-large-%d", time.Now().Unix())
	if err := b.admin.CreateTopics(ctx, o.partitions, topic, topic+".dlq"); err != nil {
		return nil, err
	}
	w := &kafka.Writer{Addr: kafka.TCP(b.brokers...), Topic: topic, Balancer: &kafka.RoundRobin{},
		BatchSize: 1, BatchBytes: int64(recordBytes) + 64<<10, RequiredAcks: kafka.RequireOne}
	defer w.Close()
	rng := rand.New(rand.NewPCG(5, 5))
	pad := strings.Repeat("x", recordBytes-200)
	n := perPartition * o.partitions
	for i := 0; i < n; {
		msgs := make([]kafka.Message, 0, o.partitions)
		for ; len(msgs) < o.partitions && i < n; i++ {
			ev := event.Event{Action: event.Add, Partner: "bench", CohortID: "large", CohortName: "Bench_large",
				UIDs: []string{uid(rng)}}
			v := event.Encode(ev)
			v = append(append(v[:len(v)-1], `,"padding":"`...), pad...)
			v = append(v, `"}`...)
			msgs = append(msgs, kafka.Message{Key: []byte(strconv.Itoa(i)), Value: v})
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return nil, err
		}
	}
	var last float64
	stable := 0
	rss, err := b.rssWorker(ctx, topic, []string{"MAX_PENDING_MEMBERS=100"}, func(m rig.Metrics) bool {
		c := m.Sum("cohortsync_events_consumed_total")
		if c > 0 && c == last {
			stable++
		} else {
			stable = 0
		}
		last = c
		return stable >= 6 || c >= float64(n) // 3 s without a new record, or everything read
	})
	if err != nil {
		return nil, err
	}
	return &largeRecordsResult{Partitions: o.partitions, Records: n, RecordBytes: recordBytes,
		TopicMiB: float64(n*recordBytes) / (1 << 20), Consumed: int(last), PeakRSSMiB: rss}, nil
}
