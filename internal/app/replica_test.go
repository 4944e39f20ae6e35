package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/app"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

// gauge reads a gauge or counter without labels from reg (-1: absent).
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		return m.GetCounter().GetValue()
	}
	return -1
}

// produceTo writes n events of n different cohorts, all to partition p of
// "in".
func produceTo(t *testing.T, brokers []string, p, n int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "in", BatchTimeout: time.Millisecond,
		Balancer: kafka.BalancerFunc(func(kafka.Message, ...int) int { return p })}
	defer w.Close()
	msgs := make([]kafka.Message, 0, n)
	for i := range n {
		ev := event.Event{Action: event.Add, Partner: "p", CohortID: fmt.Sprint("p", p, "-", i), CohortName: "n", UIDs: []string{fmt.Sprint("u", i)}}
		msgs = append(msgs, kafka.Message{Key: []byte(ev.CohortID), Value: event.Encode(ev)})
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// TestReplicasSharingHostAndPidShareTheBudget: two replicas in one process
// -- one hostname, one pid, as replicas of one image on the host network
// have (pid 1, the host's name) -- get names of their own, so each sees the
// other's budget record: the one with the backlog (all in one of the two
// partitions) borrows the idle one's spare and runs well above its static
// share, and neither sees a duplicate. With the names made of hostname and
// pid alone, both published under one key and each took the other's
// record for its own: static shares only.
func TestReplicasSharingHostAndPidShareTheBudget(t *testing.T) {
	s := newStack(t, map[string]string{"ws": "key"})
	produceTo(t, s.brokers, 0, 3000) // the backlog
	produceTo(t, s.brokers, 1, 3)    // a little for the other replica
	const budget = 300
	static := ratelimit.Share(budget, 1, 2)
	cfg := s.config("key")
	cfg.RateLimitRPM = budget
	cfg.RateLimitSharing = true
	cfg.KafkaSessionTimeout, cfg.KafkaHeartbeatInterval = 6*time.Second, time.Second
	ctx, cancel := context.WithCancel(context.Background())
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	done := make(chan error, len(regs))
	for _, reg := range regs {
		go func() {
			done <- app.Run(ctx, app.Options{Config: cfg, Registry: reg, Version: "test",
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		}()
	}
	defer func() {
		cancel()
		for range regs {
			<-done
		}
	}()
	const rate, assigned = "cohortsync_rate_limit_requests_per_minute", "cohortsync_assigned_partitions"
	split := func() bool { return gauge(t, regs[0], assigned) == 1 && gauge(t, regs[1], assigned) == 1 }
	rig.WaitFor(t, 30*time.Second, "one partition each", split)
	// The gauge starts at the whole budget; the Fleet sets it at its steps.
	rig.WaitFor(t, 20*time.Second, "both replicas' Fleets to set their rates", func() bool {
		return gauge(t, regs[0], rate) != budget && gauge(t, regs[1], rate) != budget
	})
	var most float64
	// Demand shows once the partitions are read: after the first start's
	// hand-over wait (MOENGAGE_MAX_PROCESSING_TIME, DESIGN.md Non-obvious 11).
	rig.WaitFor(t, time.Minute, fmt.Sprintf("a replica's rate above 1.5× its static share %.0f", static), func() bool {
		if !split() {
			t.Fatal("the group rebalanced")
		}
		most = max(gauge(t, regs[0], rate), gauge(t, regs[1], rate))
		return most > 1.5*static
	})
	t.Logf("static share %.0f/min; the busy replica's rate %.1f/min", static, most)
	names := map[string]bool{}
	rig.WaitFor(t, 20*time.Second, "requests from both replicas", func() bool {
		for _, r := range s.emu.Requests() {
			names[r.Replica] = true
		}
		return len(names) == 2
	})
	t.Logf("replica names: %v", names)
	for i, reg := range regs {
		if d := gauge(t, reg, "cohortsync_budget_board_duplicates_total"); d != 0 {
			t.Errorf("replica %d counted %v duplicate records", i, d)
		}
	}
}
