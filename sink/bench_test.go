package sink_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// okTransport answers 200 to everything, in memory, after reading the body
// as a real transport would.
type okTransport struct{}

func (okTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return &http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{},
		Body: io.NopCloser(strings.NewReader(`{"status":"success","message":"ok"}`)), Request: r}, nil
}

// BenchmarkSend measures the request path (encoding, headers, one attempt,
// reading the answer, metrics) against an in-memory 200.
func BenchmarkSend(b *testing.B) {
	for _, members := range []int{1, 100, 2500} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			c, err := sink.New(sink.Config{BaseURL: "https://api-01.moengage.com", WorkspaceID: testWorkspace,
				APIKey: testKey, HTTPClient: &http.Client{Transport: okTransport{}},
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics.New(nil)})
			if err != nil {
				b.Fatal(err)
			}
			req := request(members)
			for i := range req.UIDs {
				req.UIDs[i] = fmt.Sprintf("%036d", i) // UUID-sized
			}
			b.SetBytes(int64(wire.Size(req)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Send(b.Context(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
