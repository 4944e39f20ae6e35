package app

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/lease"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// TestConsumerFitsIsBatchMaxBytes (issue 20 §3): the consumer's too_large
// check is given the batcher's cap, BATCH_MAX_BYTES, explicitly (the
// consumer no longer probes its Batcher for it; left nil it would take
// wire's default cap): with a cap below the default, a member too large
// for it alone does not fit, as the batcher sees it.
func TestConsumerFitsIsBatchMaxBytes(t *testing.T) {
	cfg := config.Default()
	cfg.KafkaBrokers = []string{"127.0.0.1:1"} // nothing is dialled: build starts nothing
	cfg.KafkaTopics = []string{"in"}
	cfg.KafkaGroupID = "g"
	cfg.MoEngageBaseURL = "http://127.0.0.1:1"
	cfg.MoEngageWorkspaceID = "ws"
	cfg.MoEngageDataAPIKey = config.NewSecret("key")
	cfg.BatchMaxBytes = 1000
	w, err := build(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	fits := w.consumerConfig(nil, lease.New()).Fits
	if fits == nil {
		t.Fatal("the consumer is given no Fits: it would use the default cap, not BATCH_MAX_BYTES")
	}
	h := wire.Header{Action: event.Add, Partner: "p", CohortID: "c", CohortName: "n"}
	for _, n := range []int{1, 800, 900, 950, 1000, 5000} {
		uid := strings.Repeat("x", n)
		if got, want := fits(h, uid), w.batcher.Fits(h, uid); got != want {
			t.Errorf("a %d-byte member: the consumer's Fits says %v, the batcher's %v", n, got, want)
		}
	}
	if fits(h, strings.Repeat("x", 5000)) || !fits(h, "u") {
		t.Error("the consumer's Fits is not BATCH_MAX_BYTES (1000)")
	}
}
