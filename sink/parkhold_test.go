package sink_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/sink"
)

// The parking's view of the unknown outcomes: after an add whose outcome
// is unknown (its attempt timed out, the API processes it late), the
// cohort is held (either action) until MaxProcessingTime after it was sent,
// another cohort is not, and UnknownHold covers it.
func TestParkingHolds(t *testing.T) {
	t.Parallel()
	const maxProcessing = 1500 * time.Millisecond
	api := &lateAPI{delay: 600 * time.Millisecond, members: map[string]bool{}, late: make(chan struct{})}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	c, err := sink.New(sink.Config{BaseURL: srv.URL, WorkspaceID: testWorkspace, APIKey: testKey, Logger: (&logBuffer{}).logger(),
		AttemptTimeout: 300 * time.Millisecond, MaxProcessingTime: maxProcessing,
		InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	add := request(1)
	other := add
	other.CohortID = "another"
	if c.CohortHold(add.Header) != 0 || c.UnknownHold() != 0 {
		t.Fatal("held before any unknown outcome")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := c.Send(ctx, add); err != nil {
		t.Fatal(err)
	}
	h, all := c.CohortHold(add.Header), c.UnknownHold()
	if left := maxProcessing - time.Since(start); h <= 0 || h > maxProcessing || h < left-100*time.Millisecond {
		t.Errorf("CohortHold = %v, want about %v (MaxProcessingTime after the unknown add was sent)", h, left)
	}
	if all < h-10*time.Millisecond {
		t.Errorf("UnknownHold = %v < CohortHold %v", all, h)
	}
	if o := c.CohortHold(other.Header); o != 0 {
		t.Errorf("another cohort held %v", o)
	}
}
