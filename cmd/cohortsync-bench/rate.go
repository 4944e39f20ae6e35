package main

// Phase (c): the worker at RATE_LIMIT_RPM=300, with one replica and three.

import (
	"context"
	"fmt"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

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

// phaseC runs (c) with one replica and with three.
func (b *bench) phaseC(ctx context.Context) error {
	for _, replicas := range []int{1, 3} {
		rr, err := b.rateLimited(ctx, replicas)
		if err != nil {
			return err
		}
		b.res.RateLimited = append(b.res.RateLimited, *rr)
		b.say("(c) %d replica(s): busiest 60 s %d requests, %.3f of the budget, packing %.3f", replicas, rr.Busiest60s, rr.PerMinOverRPM, rr.Packing)
		k := fmt.Sprintf("c/%d", replicas)
		b.res.Targets[k+" packing"] = verdict{">= 0.97", fmt.Sprintf("%.3f", rr.Packing), rr.Packing >= 0.97}
		b.res.Targets[k+" budget"] = verdict{"0.95..1.00, busiest 60 s <= 300", fmt.Sprintf("%.3f, %d", rr.PerMinOverRPM, rr.Busiest60s),
			rr.PerMinOverRPM >= 0.95 && rr.PerMinOverRPM <= 1.0 && rr.Busiest60s <= 300}
	}
	return nil
}

// rateLimited runs replicas at RATE_LIMIT_RPM=300 over a fresh backlog for
// o.rateRun and measures the requests the emulator saw.
func (b *bench) rateLimited(ctx context.Context, replicas int) (*rateResult, error) {
	o := b.o
	topic := fmt.Sprintf("bench-rate%d-%d", replicas, time.Now().Unix())
	if err := b.admin.CreateTopics(ctx, o.partitions, topic, topic+".dlq"); err != nil {
		return nil, err
	}
	if err := produce(ctx, b.brokers, topic, o.backlog, balancedCohortIDs(o.backlogCoh, o.partitions), uint64(replicas)+10); err != nil {
		return nil, err
	}
	a, err := startAPI(300, emulator.Faults{}, false)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	cfg := workerConfig(b.brokers, topic, "bench-rate-"+topic, a.URL)
	cfg.RateLimitRPM = 300
	var ws []*inproc
	for i := range replicas {
		ws = append(ws, startWorker(ctx, cfg, fmt.Sprint("r", i), b.log))
	}
	defer func() {
		for _, w := range ws {
			w.Cancel()
		}
		for _, w := range ws {
			_ = w.Stop()
		}
	}()
	b.say("(c) %d replica(s) over a backlog of %d events for %s…", replicas, o.backlog, o.rateRun)
	// The run is measured from the first request on, so that the group's
	// join time does not count against the budget.
	first, err := firstRequest(ctx, a)
	if err != nil {
		return nil, err
	}
	end := first.Add(o.rateRun)
	select {
	case <-time.After(time.Until(end)):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var in []emulator.RequestRecord
	for _, r := range a.Requests() {
		if r.Time.Before(end) {
			in = append(in, r)
		}
	}
	return rateFigures(in, replicas, o.rateRun, cfg.BatchMaxBytes), nil
}

// rateFigures sums up the requests in of a run of d.
func rateFigures(in []emulator.RequestRecord, replicas int, d time.Duration, batchMaxBytes int) *rateResult {
	rr := &rateResult{Replicas: replicas, Seconds: d.Seconds(), Requests: len(in)}
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
	rr.PerMinOverRPM = float64(len(in)) / d.Minutes() / 300
	if ok > 0 {
		rr.MeanBodyBytes = float64(bodies) / float64(ok)
		rr.Packing = rr.MeanBodyBytes / float64(batchMaxBytes)
	}
	return rr
}

// firstRequest waits for the emulator's first request and returns when it
// came: the rate runs are measured from it, so that the group's join time
// does not count against the budget.
func firstRequest(ctx context.Context, a *rig.API) (time.Time, error) {
	var first time.Time
	err := rig.Wait(ctx, func() bool {
		if rs := a.Requests(); len(rs) > 0 {
			first = rs[0].Time
		}
		return !first.IsZero()
	})
	return first, err
}
