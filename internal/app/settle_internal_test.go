package app

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestFenceSettlesUnknownOutcomes: the consumer's fence revokes through
// settlingBatcher, which returns only once a request of this replica whose
// outcome is unknown (its attempt timed out; the API may still process it)
// is past MaxProcessingTime: the next generation, which cannot start before
// this replica rejoins, never sends beside it.
func TestFenceSettlesUnknownOutcomes(t *testing.T) {
	const maxProcessing = 800 * time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // then the server sees the client go away
		<-r.Context().Done()      // never answers: every attempt times out
	}))
	t.Cleanup(srv.Close)
	client, err := sink.New(sink.Config{BaseURL: srv.URL, WorkspaceID: "ws", APIKey: "key",
		AttemptTimeout: 200 * time.Millisecond, MaxProcessingTime: maxProcessing})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.CloseIdleConnections)
	b, err := batcher.New(batcher.Config{Limits: batcher.Limits{MaxBytes: 128000, MaxMembers: 100, Window: time.Second,
		MaxInFlight: 1, MaxPending: 100}, Sink: client, DeadLetter: func(context.Context, []batcher.Rejected) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = b.Run(ctx) }()

	// One attempt, which times out: its outcome is unknown.
	sendCtx, stop := context.WithTimeout(ctx, 300*time.Millisecond)
	start := time.Now()
	_, _ = client.Send(sendCtx, wire.Request{Header: wire.Header{Action: event.Add, Partner: "p", CohortID: "c", CohortName: "n"},
		UIDs: []string{"u"}})
	stop()

	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := (settlingBatcher{b, client}).Revoke(rctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < maxProcessing {
		t.Fatalf("the fence returned %v after the unknown request was sent, want at least MaxProcessingTime %v", d, maxProcessing)
	}
}
