package main

// Phase (e): produce-to-acceptance latency under a light steady load.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

type latencyResult struct {
	Cohorts int     `json:"cohorts"`
	Rate    int     `json:"events_per_second"`
	Samples int     `json:"samples"`
	P50     float64 `json:"p50_seconds"`
	P99     float64 `json:"p99_seconds"`
	Window  float64 `json:"batch_window_seconds"`
}

// phaseE runs (e).
func (b *bench) phaseE(ctx context.Context) error {
	lr, err := b.latency(ctx)
	if err != nil {
		return err
	}
	b.res.Latency = lr
	b.say("(e) latency p50 %.3fs p99 %.3fs", lr.P50, lr.P99)
	b.res.Targets["e"] = verdict{fmt.Sprintf("p99 <= %.1fs", lr.Window+1), fmt.Sprintf("%.3fs", lr.P99), lr.P99 <= lr.Window+1}
	return nil
}

// latency produces a light steady load of unique uids and measures, for
// each, the time from produce to the emulator's acceptance.
func (b *bench) latency(ctx context.Context) (*latencyResult, error) {
	o := b.o
	topic := fmt.Sprintf("bench-latency-%d", time.Now().Unix())
	if err := b.admin.CreateTopics(ctx, o.partitions, topic, topic+".dlq"); err != nil {
		return nil, err
	}
	a, err := startAPI(300, emulator.Faults{}, false)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	cfg := workerConfig(b.brokers, topic, "bench-latency-"+topic, a.URL)
	cfg.BatchWindow = o.window
	w := startWorker(ctx, cfg, "l", b.log)
	defer w.Stop()
	time.Sleep(3 * time.Second) // joined
	wr := &kafka.Writer{Addr: kafka.TCP(b.brokers...), Topic: topic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireOne}
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
