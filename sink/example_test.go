package sink_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// A batch with one member the API refuses: Send splits the batch to isolate
// it, returns it as a Rejection (for the dead-letter topic), and the others
// are accepted.
func ExampleClient_Send() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte(`"uid":"bad"`)) {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"status":"fail","error":{"attribute":"uid","message":"uid bad is invalid","type":"InvalidAttributeError","request_id":"abcdefgh"}}`)
			return
		}
		io.WriteString(w, `{"status":"success","message":"Your request has been accepted and will be processed soon."}`)
	}))
	defer srv.Close()

	lim := ratelimit.NewLimiter(6000) // this replica's share of the fleet's budget
	c, err := sink.New(sink.Config{BaseURL: srv.URL, WorkspaceID: "WS", APIKey: "key", Limiter: lim,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	defer c.CloseIdleConnections()

	ctx := context.Background()
	rejected, err := c.Send(ctx, wire.Request{Header: wire.Header{Action: event.Add, Partner: "p", CohortID: "c1",
		CohortName: "Buyers"}, UIDs: []string{"u1", "bad", "u2"}})
	fmt.Println(rejected, err)
	// Output: [{bad 400 InvalidAttributeError: uid bad is invalid}] <nil>
}
