package batcher_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// TestTriggers checks the trigger label of batches_flushed_total: each
// batch sent is counted under what made it due, and no batch under any
// other trigger.
func TestTriggers(t *testing.T) {
	h1 := hdr("c1", event.Add)
	// The body of two 10-byte uids in c1's add batch.
	twoBody := wire.BodySize(wire.EnvelopeSize(h1), 2, 2*wire.MemberSize("aaaaaaaaaa"))
	renamed := h1
	renamed.CohortName = "another name"
	add := func(h *harness, hd wire.Header, uids ...string) {
		for _, u := range uids {
			ak, _ := h.acks.new()
			if err := h.b.Add(context.Background(), []batcher.Change{{Header: hd, UID: u, Ack: ak}}); err != nil {
				h.t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name string
		cfg  batcher.Config
		run  func(h *harness)
		want map[string]float64 // action/trigger → batches
	}{
		{name: "bytes, the body is full", cfg: batcher.Config{Limits: batcher.Limits{MaxBytes: twoBody}},
			run:  func(h *harness) { add(h, h1, "aaaaaaaaaa", "bbbbbbbbbb") },
			want: map[string]float64{"add_members/bytes": 1}},
		{name: "bytes, the next member does not fit", cfg: batcher.Config{Limits: batcher.Limits{MaxBytes: twoBody - 1}},
			run:  func(h *harness) { add(h, h1, "aaaaaaaaaa", "bbbbbbbbbb") }, // the second stays open
			want: map[string]float64{"add_members/bytes": 1}},
		{name: "members", cfg: batcher.Config{Limits: batcher.Limits{MaxMembers: 2}},
			run:  func(h *harness) { add(h, h1, "u1", "u2", "u3") },
			want: map[string]float64{"add_members/members": 1}},
		{name: "slots", cfg: batcher.Config{Limits: batcher.Limits{MaxSlots: 2}},
			run:  func(h *harness) { add(h, h1, "u1", "u2", "u3") },
			want: map[string]float64{"add_members/slots": 1}},
		{name: "header_change", cfg: batcher.Config{},
			run: func(h *harness) {
				add(h, h1, "u1")
				add(h, renamed, "u2") // the second stays open
			},
			want: map[string]float64{"add_members/header_change": 1}},
		{name: "ahead", cfg: batcher.Config{Limits: batcher.Limits{MaxMembers: 2}},
			run: func(h *harness) {
				add(h, h1, "u1")                            // open, due in an hour
				add(h, hdr("c1", event.Remove), "u2", "u3") // full: the cohort is due now
			},
			want: map[string]float64{"add_members/ahead": 1, "remove_members/members": 1}},
		{name: "window", cfg: batcher.Config{},
			run: func(h *harness) {
				add(h, h1, "u1")
				time.Sleep(time.Hour)
			},
			want: map[string]float64{"add_members/window": 1}},
		{name: "shutdown", cfg: batcher.Config{},
			run: func(h *harness) {
				add(h, h1, "u1")
				if err := h.b.Flush(context.Background()); err != nil {
					h.t.Fatal(err)
				}
			},
			want: map[string]float64{"add_members/shutdown": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				m := metrics.New(nil)
				cfg := tc.cfg
				cfg.Window, cfg.Metrics = time.Hour, m
				h := start(t, cfg)
				defer h.stop()
				tc.run(h)
				synctest.Wait()
				for _, a := range []event.Action{event.Add, event.Remove} {
					for _, tr := range batcher.Triggers {
						key := string(a) + "/" + string(tr)
						if got := testutil.ToFloat64(m.BatchesFlushed.WithLabelValues(string(a), string(tr))); got != tc.want[key] {
							t.Errorf("batches_flushed_total{%s} = %v, want %v", key, got, tc.want[key])
						}
					}
				}
			})
		})
	}
}

// TestMaxSlotsNegative: a negative MaxSlots is refused like every other
// negative limit.
func TestMaxSlotsNegative(t *testing.T) {
	if _, err := batcher.NewCore(batcher.Limits{MaxSlots: -1}); err == nil {
		t.Fatal("NewCore accepted MaxSlots -1")
	}
}
