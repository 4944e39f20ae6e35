package app

import (
	"log/slog"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/lease"
)

// TestConsumerWorkspaceIsMoEngageWorkspaceID (issue 21, routing): the
// consumer is told which workspace the worker sends to, so that an event
// naming another is dead-lettered as unknown_workspace. Left empty, the
// consumer would dead-letter every event naming a workspace, this one's too.
func TestConsumerWorkspaceIsMoEngageWorkspaceID(t *testing.T) {
	cfg := config.Default()
	cfg.KafkaBrokers = []string{"127.0.0.1:1"} // nothing is dialled: build starts nothing
	cfg.KafkaTopics = []string{"in"}
	cfg.KafkaGroupID = "g"
	cfg.MoEngageBaseURL = "http://127.0.0.1:1"
	cfg.MoEngageWorkspaceID = "WS_A"
	cfg.MoEngageDataAPIKey = config.NewSecret("key")
	w, err := build(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	if got := w.consumerConfig(nil, lease.New()).Workspace; got != "WS_A" {
		t.Fatalf("consumer.Config.Workspace = %q, want MOENGAGE_WORKSPACE_ID %q", got, "WS_A")
	}
}
