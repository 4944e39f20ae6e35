package main

// Phases (a) and (b), run as alternating pairs over one topic.

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"
)

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

// phasesAB produces o.events events to a fresh topic and reads them
// o.repeat times, alternating (a) and (b): on a shared machine one run can
// be slowed by a neighbour, and a pair run back to back sees about the same
// machine. The figures are the median runs, the ratio the median of the
// runs' ratios.
func (b *bench) phasesAB(ctx context.Context) error {
	o, res := b.o, b.res
	topic := fmt.Sprintf("bench-%d", time.Now().Unix())
	if err := b.admin.CreateTopics(ctx, o.partitions, topic, topic+".dlq"); err != nil {
		return err
	}
	start := time.Now()
	if err := produce(ctx, b.brokers, topic, o.events, cohortIDs(o.cohorts), 1); err != nil {
		return err
	}
	b.say("produced %d events in %s", o.events, time.Since(start).Round(time.Millisecond))
	var bares, workers, states []*throughput
	for i := range max(o.repeat, 1) {
		var a, w, st *throughput
		var err error
		if b.phase("a") {
			if a, err = b.bareReader(ctx, topic, o.events); err != nil {
				return err
			}
			bares = append(bares, a)
			res.BareRuns = append(res.BareRuns, a.PerSec)
			b.say("(a) bare reader, run %d: %.0f events/s", i+1, a.PerSec)
		}
		if b.phase("b") {
			if w, err = b.workerUnlimited(ctx, topic, fmt.Sprintf("bench-unlimited-%s-%d", topic, i), false, i == 0); err != nil {
				return err
			}
			workers = append(workers, w)
			res.WorkerRuns = append(res.WorkerRuns, w.PerSec)
			b.say("(b) worker, no rate limit, run %d: %.0f events/s", i+1, w.PerSec)
			if st, err = b.workerUnlimited(ctx, topic, fmt.Sprintf("bench-unlimited-state-%s-%d", topic, i), true, false); err != nil {
				return err
			}
			states = append(states, st)
			res.WorkerStateRuns = append(res.WorkerStateRuns, st.PerSec)
			b.say("(b) worker, no rate limit, emulator keeping members, run %d: %.0f events/s", i+1, st.PerSec)
		}
		if a != nil && w != nil {
			res.RatioRuns = append(res.RatioRuns, w.PerSec/a.PerSec)
			res.StateRatioRuns = append(res.StateRatioRuns, st.PerSec/a.PerSec)
		}
	}
	res.BareReader, res.Worker, res.WorkerState = medianRun(bares), medianRun(workers), medianRun(states)
	if len(res.RatioRuns) > 0 {
		res.WorkerRatio = median(res.RatioRuns)
		res.WorkerStateRatio = median(res.StateRatioRuns)
		res.Targets["b/a"] = verdict{">= 0.7", fmt.Sprintf("%.2f", res.WorkerRatio), res.WorkerRatio >= 0.7}
	}
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
