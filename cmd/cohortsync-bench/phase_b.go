package main

// Phase (b): the worker without a rate limit, against the input ceiling.

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

// workerUnlimited runs the worker over topic, in consumer group group, with
// no rate limit until its lag is zero. The emulator keeps no membership
// unless keepMembers: its bookkeeping is the API's work, not the worker's,
// and here it would run on the same cores. profile says whether to write
// the CPU profile asked for.
func (b *bench) workerUnlimited(ctx context.Context, topic, group string, keepMembers, profile bool) (*throughput, error) {
	a, err := startAPI(0, emulator.Faults{}, !keepMembers)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	cfg := workerConfig(b.brokers, topic, group, a.URL)
	cfg.RateLimitRPM = 0
	cfg.BatchWindow = 200 * time.Millisecond
	if profile && b.o.cpuprofile != "" {
		stop, err := startProfile(b.o.cpuprofile)
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	start := time.Now()
	w := startWorker(ctx, cfg, "b", b.log)
	watch := watchMilestones(ctx, w, b.o.events)
	err = rig.WaitNoLag(ctx, b.admin, topic, cfg.KafkaGroupID, w.Done())
	lagZero := time.Since(start).Seconds()
	ms := <-watch
	_ = w.Stop()
	if err != nil {
		return nil, err
	}
	busy := ms.allAccepted.Sub(ms.first).Seconds()
	reqs := a.Requests()
	tp := &throughput{Events: b.o.events, Seconds: busy, PerSec: float64(b.o.events) / busy, Requests: len(reqs),
		FirstFetchSeconds: ms.first.Sub(start).Seconds(), AllReadSeconds: ms.allRead.Sub(start).Seconds(),
		AllAcceptedSecs: ms.allAccepted.Sub(start).Seconds(), LagZeroSeconds: lagZero}
	for _, r := range reqs {
		if r.Time.After(ms.allRead) {
			tp.RequestsAfterRead++
		}
		tp.LastRequestSecs = max(tp.LastRequestSecs, r.Time.Sub(start).Seconds())
	}
	return tp, nil
}

// milestones are when an in-process worker first read a record, had read
// them all, and had every member accepted (nothing pending or in flight).
type milestones struct{ first, allRead, allAccepted time.Time }

// watchMilestones samples w's own metrics every 5 ms until all of events
// are accepted, w stops or ctx ends, and then sends what it saw.
func watchMilestones(ctx context.Context, w *inproc, events int) <-chan milestones {
	out := make(chan milestones, 1)
	go func() {
		var ms milestones
		defer func() { out <- ms }()
		for ms.allAccepted.IsZero() && ctx.Err() == nil {
			select {
			case <-w.Done():
				return
			default:
			}
			now := time.Now()
			m, _ := rig.Gather(w.reg)
			consumed := m.Sum("cohortsync_events_consumed_total")
			if ms.first.IsZero() && consumed > 0 {
				ms.first = now
			}
			if ms.allRead.IsZero() && consumed >= float64(events) {
				ms.allRead = now
			}
			if !ms.allRead.IsZero() && m.Sum("cohortsync_pending_members") == 0 && m.Sum("cohortsync_in_flight_requests") == 0 {
				ms.allAccepted = now
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return out
}

// startProfile starts the CPU profile written to path and the block and
// mutex profiles written next to it by the stop it returns.
func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	runtime.SetBlockProfileRate(10000)
	runtime.SetMutexProfileFraction(5)
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		for _, p := range []string{"block", "mutex"} {
			if pf, err := os.Create(path + "." + p); err == nil {
				_ = pprof.Lookup(p).WriteTo(pf, 0)
				pf.Close()
			}
		}
	}, nil
}
