package app_test

import (
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestAttemptTimeoutMatchesSink: MOENGAGE_MAX_PROCESSING_TIME is validated
// against config.AttemptTimeout, which must be the sink's attempt timeout
// (the worker leaves sink.Config.AttemptTimeout at its default).
func TestAttemptTimeoutMatchesSink(t *testing.T) {
	if config.AttemptTimeout != sink.DefaultAttemptTimeout {
		t.Fatalf("config.AttemptTimeout %v, sink.DefaultAttemptTimeout %v", config.AttemptTimeout, sink.DefaultAttemptTimeout)
	}
}
